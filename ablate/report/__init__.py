"""``ablate report``: a study's ablation table, statistics and plots, from its MLflow runs.

- :mod:`ablate.report.stats`: seed summaries, paired bootstrap intervals, sign-flip tests.
- :mod:`ablate.report.collect`: reading the study's runs from MLflow and its ``study.json``.
- :mod:`ablate.report.table` / :mod:`ablate.report.search`: the tables of an ablation and a
  search.
- :mod:`ablate.report.plots` and :mod:`ablate.report.render`: figures and the written files.
- :mod:`ablate.report.build`: putting it together, writing it and logging it to MLflow.
"""
