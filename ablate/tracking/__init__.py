"""Tracking stores: where a study's runs, metrics and artifacts are recorded.

:mod:`~ablate.tracking.store` is the seam (the :class:`~ablate.tracking.store.Tracker`
protocol), :mod:`~ablate.tracking.mlflow_store` its MLflow implementation (the only module of
``ablate`` that imports MLflow), :mod:`~ablate.tracking.study` writes a study exactly once and
:mod:`~ablate.tracking.runs` reads it back; :mod:`~ablate.tracking.check` refuses a bad store
before MLflow touches it and :mod:`~ablate.tracking.owner` keeps a study to one study
directory. Importing this package imports no backend.
"""
