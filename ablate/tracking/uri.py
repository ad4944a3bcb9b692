"""Which tracking store a command uses: ``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else
SQLite in the working directory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def removed_if_refused(uri: str) -> Iterator[None]:
    """A SQLite store that does not exist yet, and that the ``with`` block creates, is removed
    again when the block fails: a study refused before it tracked anything leaves no empty
    store behind."""
    db = sqlite_path(uri)
    fresh = db is not None and not db.exists()
    try:
        yield
    except BaseException:
        if fresh:
            assert db is not None
            for path in (db, db.with_name(db.name + "-journal")):
                path.unlink(missing_ok=True)
        raise
