"""``ablate report``: a study's ablation table, statistics and plots, from its tracked runs.

Reading, then the report's data, then its output:

- :mod:`ablate.report.collect` (the tracked runs and ``study.json``) and
  :mod:`ablate.report.scores` (the best run's test scores): what a report is built from, read
  through the tracking seam (:mod:`ablate.tracking`).
- :mod:`ablate.report.build`: the :class:`~ablate.report.model.Report`, plain frozen data, from
  :mod:`ablate.report.table` (ablation rows), :mod:`ablate.report.search` (configurations and
  importances) and :mod:`ablate.stats` (seed statistics and decisions); no I/O.
- :mod:`ablate.report.render`: the report as Markdown, LaTeX, JSON, HTML, terminal text and PNG.
- :mod:`ablate.report.publish`: writing the files and logging them to the tracking store.

:mod:`ablate.report.claims` measures the method's claims on the synthetic benchmark.
"""
