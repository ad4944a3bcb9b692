"""Which tracking store a command uses: ``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else
SQLite in the working directory."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
SQLITE_PREFIX = "sqlite:///"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI, None for other stores."""
    return Path(uri[len(SQLITE_PREFIX):]) if uri.startswith(SQLITE_PREFIX) else None


def resolve_tracking_uri(uri: str | None) -> str:
    """``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else SQLite in the working directory.

    Relative SQLite paths are made absolute so Ray workers and later commands agree.
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    db = sqlite_path(uri)
    return uri if db is None else SQLITE_PREFIX + str(db.resolve())
