"""What a tracking URI names, checked before MLflow touches it: each problem is one line, fast.

MLflow itself turns a bad store into long tracebacks or long waits: it retries a database it
cannot open for minutes (also a directory given as the SQLite file), retries an HTTP server
that does not answer for minutes, and adds its tables to any SQLite file it is given, another
application's included. So a SQLite file is read first, read-only, with the ``sqlite3`` module
(never modified); a server is first reached with a plain TCP connection under a short timeout.
"""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path
from urllib.parse import urlsplit

from ablate.errors import AblateError
from ablate.locks import FileLock
from ablate.tracking.uri import sqlite_path

SQLITE_MAGIC = b"SQLite format 3\x00"
MLFLOW_TABLES = frozenset({"alembic_version", "experiments", "runs"})
REACH_TIMEOUT = 10.0  # seconds to open a TCP connection to a tracking server or database
PORTS = {"http": 80, "https": 443, "postgresql": 5432, "mysql": 3306, "mssql": 1433}
SCHEMES = frozenset({"sqlite", "databricks", "databricks-uc", *PORTS})

DIRECTORY = ("tracking store {uri}: {db} is a directory, not a database file; name a file in "
             "it (sqlite:///{db}/mlflow.db)")
NOT_SQLITE = ("tracking store {uri}: {db} is not an SQLite database; move it away or name "
              "another file")
TRUNCATED = ("tracking store {uri}: {db} is damaged ({problem}); restore it from a backup or "
             "name another file")
FOREIGN = ("tracking store {uri}: {db} is an SQLite database of another application (tables "
           "{tables}) and is left untouched; name another file for MLflow")
HALF_MIGRATED = ("tracking store {uri}: {db} was left half-migrated by an interrupted MLflow "
                 "schema upgrade (table {table}); restore it from a backup or name another file")
FILE_STORE = ("tracking store {uri}: MLflow's file store is not supported; use a SQLite store "
              "(sqlite:///PATH/mlflow.db; `mlflow migrate-filestore` moves existing runs)")
UNKNOWN_SCHEME = ("tracking store {uri}: unknown scheme '{scheme}'; use sqlite:///PATH, "
                  "http(s)://HOST:PORT or a database URI (postgresql://, mysql://, mssql://)")
SERVER_UI = ("{uri} is a tracking server, which serves its own UI: open it in a browser (`ablate "
             "ui` serves a store: sqlite:///PATH or a database URI)")
UNREACHABLE = ("tracking store {uri} is not reachable: {host}:{port}: {problem}; start the "
               "server or check --tracking-uri")


def redacted(uri: str) -> str:
    """``uri`` as messages show it: a password in it replaced by ``***``."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


def migration_lock(db: Path) -> FileLock:
    """The lock every driver holds while MLflow first opens ``db`` (and creates or migrates its
    schema, which two processes must not do at once): ``DB.lock`` beside it."""
    return FileLock(db.with_name(db.name + ".lock"))


def check_uri(uri: str) -> None:
    """Refuses a URI whose scheme MLflow cannot take, or whose server does not answer.

    Raises:
        AblateError: One line naming the URI, the problem and the remedy.
    """
    scheme = urlsplit(uri).scheme.lower().split("+")[0] or uri.lower()
    uri = redacted(uri)
    if scheme == "file" or ("://" not in uri and scheme not in SCHEMES):
        raise AblateError(FILE_STORE.format(uri=uri))
    if scheme not in SCHEMES:
        raise AblateError(UNKNOWN_SCHEME.format(uri=uri, scheme=scheme))
    if scheme in PORTS:
        _reach(uri, PORTS[scheme])


def check_backend_store(uri: str) -> None:
    """Refuses what ``mlflow ui`` cannot serve: a bad URI (:func:`check_uri`), a tracking
    server, a SQLite file MLflow must not open (:func:`check_sqlite`)."""
    check_uri(uri)
    if urlsplit(uri).scheme.lower() in ("http", "https"):
        raise AblateError(SERVER_UI.format(uri=redacted(uri)))
    db = sqlite_path(uri)
    if db is not None:
        check_sqlite(uri, db)


def _reach(uri: str, default_port: int) -> None:
    """Opens (and closes) a TCP connection to the host of ``uri`` (already redacted)."""
    parts = urlsplit(uri)
    try:
        host, port = parts.hostname or "localhost", parts.port or default_port
    except ValueError:  # a port that is not a number
        raise AblateError(UNREACHABLE.format(uri=uri, host=parts.hostname,
                                             port=parts.netloc.rsplit(":", 1)[-1],
                                             problem="not a port number")) from None
    try:
        with socket.create_connection((host, port), timeout=REACH_TIMEOUT):
            pass
    except OSError as exc:
        problem = "timed out" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
        raise AblateError(UNREACHABLE.format(uri=uri, host=host, port=port,
                                             problem=problem)) from None


def check_sqlite(uri: str, db: Path) -> None:
    """Refuses a SQLite file MLflow must not open: a directory, not SQLite, damaged, another
    application's database, or a schema upgrade left half-done. A missing or empty file is a
    new store.

    Raises:
        AblateError: One line naming the file, the problem and the remedy.
    """
    if db.is_dir():
        raise AblateError(DIRECTORY.format(uri=uri, db=db))
    if not db.exists() or db.stat().st_size == 0:
        return
    with open(db, "rb") as handle:
        magic = handle.read(len(SQLITE_MAGIC))
    if magic != SQLITE_MAGIC:
        raise AblateError(NOT_SQLITE.format(uri=uri, db=db))
    tables = _tables(uri, db)
    if tables is None:
        return
    leftover = sorted(t for t in tables if t.startswith("_alembic_tmp_"))
    if leftover:
        raise AblateError(HALF_MIGRATED.format(uri=uri, db=db, table=leftover[0]))
    if tables and not MLFLOW_TABLES <= tables:
        raise AblateError(FOREIGN.format(uri=uri, db=db, tables=", ".join(sorted(tables)[:5])))


def _tables(uri: str, db: Path) -> set[str] | None:
    """The tables of ``db``, read through a read-only connection (SQLite itself finds a file
    shorter than its header records). None when a writer's crash left a journal that only a
    writable connection replays (MLflow's will)."""
    try:
        con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
        try:
            rows = con.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        finally:
            con.close()
    except sqlite3.Error as exc:
        if "readonly" in str(exc) or "read-only" in str(exc):
            return None
        raise AblateError(TRUNCATED.format(uri=uri, db=db, problem=exc)) from None
    return {name for (name,) in rows}
