"""File locks and the writability probe, shared by the feature cache and the study directory.

A lock is an exclusive ``fcntl.flock`` on a lock file, held while its ``with`` block runs and
released when the file is closed (also when the process dies, so a crash never leaves a stale
lock). A released lock removes its file, and the directories it created for it if they are left
empty. Local filesystems only: ``flock`` is not reliable on every network filesystem.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from pathlib import Path
from typing import IO

from ablate.errors import AblateError


class FileLock:
    """An exclusive lock on ``path``, for use as a context manager.

    Args:
        path: The lock file; it and its directory are created when missing.
        busy: None to wait until the lock is free; otherwise the message of the
            :class:`~ablate.errors.AblateError` raised at once when another process holds it.
        record_holder: Write ``"<pid> <unix time>"`` into the lock file once it is held, for
            whoever looks into a lock that is not released.

    Example:
        >>> with FileLock(cache / ".features.arrow.lock"):
        ...     build_once()
    """

    def __init__(
        self, path: Path, *, busy: str | None = None, record_holder: bool = False
    ) -> None:
        self.path = Path(path)
        self._busy = busy
        self._record_holder = record_holder
        self._file: IO[str] | None = None
        self._created: list[Path] = []

    def __enter__(self) -> FileLock:
        self._created = [d for d in (self.path.parent, *self.path.parent.parents)
                         if not d.exists()]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            handle = self._lock()
            try:
                if os.path.samestat(os.fstat(handle.fileno()), os.stat(self.path)):
                    break
            except FileNotFoundError:
                pass
            handle.close()  # its holder removed the file on release: lock the new one
        if self._record_holder:
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()} {time.time():.0f}\n")
            handle.flush()
        self._file = handle
        return self

    def _lock(self) -> IO[str]:
        handle = open(self.path, "a+")
        try:
            flags = fcntl.LOCK_EX if self._busy is None else fcntl.LOCK_EX | fcntl.LOCK_NB
            fcntl.flock(handle, flags)
        except BlockingIOError:
            handle.close()
            self._remove_created()
            raise AblateError(self._busy) from None
        except BaseException:
            handle.close()
            raise
        return handle

    def __exit__(self, *exc: object) -> None:
        """Removes the lock file, and the directories it was put in that are left empty, before
        releasing the lock: a lock leaves nothing behind (a waiter that locked the removed file
        sees it is gone and locks anew)."""
        if self._file is not None:
            self.path.unlink(missing_ok=True)
            self._file.close()  # closing the file releases the lock
            self._file = None
            self._remove_created()

    def _remove_created(self) -> None:
        for directory in self._created:  # innermost first; stops at one still in use
            try:
                directory.rmdir()
            except OSError:
                break
        self._created = []


def check_writable(directory: Path, *, create: bool = False) -> None:
    """Create (and at once delete) a nameless file in ``directory``.

    Writing a file, rather than trusting ``os.access``: root passes every access check, yet a
    read-only mount or an immutable directory still refuses it.

    Args:
        directory: The directory to probe.
        create: Create the directory and its parents first.

    Raises:
        OSError: The directory cannot be created or written.
    """
    if create:
        directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=directory):
        pass


def is_writable(directory: Path, *, create: bool = False) -> bool:
    """Whether :func:`check_writable` succeeds."""
    try:
        check_writable(directory, create=create)
    except OSError:
        return False
    return True
