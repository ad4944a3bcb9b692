"""Turning a :class:`~ablate.report.model.Report` into text and images; nothing here writes.

- :mod:`~ablate.report.render.cells`: the table cells, status line and legend every format shows.
- :mod:`~ablate.report.render.markdown`, :mod:`~ablate.report.render.latex`,
  :mod:`~ablate.report.render.json_data`, :mod:`~ablate.report.render.html_page`: the files.
- :mod:`~ablate.report.render.plots`: the figures as PNG bytes.
- :mod:`~ablate.report.render.terminal`: what ``ablate report`` prints.
"""
