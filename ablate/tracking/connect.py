"""Opening the tracking store a URI names: the one place a backend is chosen."""

from __future__ import annotations

from ablate.tracking.store import Tracker


def connect(uri: str) -> Tracker:
    """The tracker of ``uri`` (MLflow: ``sqlite:///``, ``http(s)://``, ``databricks``, ...),
    checked to answer.

    Raises:
        AblateError: The store cannot be reached or opened.
    """
    from ablate.tracking.mlflow_store import connect as connect_mlflow

    return connect_mlflow(uri)
