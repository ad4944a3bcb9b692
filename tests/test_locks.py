"""The one file lock and writability probe (ablate.locks)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ablate.errors import AblateError
from ablate.locks import FileLock, check_writable, is_writable


def test_a_held_lock_refuses_a_second_holder_that_does_not_wait(tmp_path: Path) -> None:
    path = tmp_path / "sub" / ".lock"
    with FileLock(path, record_holder=True):
        assert path.read_text().split()[0] == str(os.getpid())
        # flock conflicts between two open files even in one process.
        with pytest.raises(AblateError, match="^busy elsewhere$"):
            with FileLock(path, busy="busy elsewhere"):
                pass
    with FileLock(path, busy="busy elsewhere"):  # released on exit
        pass


def test_a_lock_without_record_holder_leaves_the_file_empty(tmp_path: Path) -> None:
    with FileLock(tmp_path / ".lock"):
        assert (tmp_path / ".lock").read_bytes() == b""


def test_a_released_lock_leaves_nothing_behind(tmp_path: Path) -> None:
    """The lock file goes, and so do the directories made for it, unless something else is in
    them; a holder waiting on the removed file locks the new one."""
    with FileLock(tmp_path / "a" / "b" / ".lock"):
        pass
    assert list(tmp_path.iterdir()) == []
    with FileLock(tmp_path / "a" / "b" / ".lock"):
        (tmp_path / "a" / "kept").write_text("")
    assert [p.name for p in tmp_path.rglob("*")] == ["a", "kept"]


def test_writability_is_probed_by_writing(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert is_writable(tmp_path)
    assert not is_writable(tmp_path / "missing")
    assert is_writable(tmp_path / "missing", create=True)
    assert not is_writable(blocker / "sub", create=True)
    with pytest.raises(OSError):
        check_writable(blocker)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "missing"]  # nothing left
