"""The study directory: ``STORAGE/NAME/`` holding the study's own records and Ray's ``tune/``.

``STORAGE`` is a local path (default ``./runs``) or a URI Ray and pyarrow understand
(``s3://bucket/prefix``), which a cluster needs so every node sees the same checkpoints.
``study.json`` pins the plan's hash (over the resolved trial configs) and records each trial's
variant and seed: the same command resumes, a changed plan is refused.
``trials.json`` is the driver's progress record (every known trial's state, epoch and final
metrics), what ``ablate status`` reads. ``stages.json`` pins the stages after a study's first
(a round of adaptive seeds, a search's confirmation), each before it runs, with its own Tune
experiment beside ``tune/``. ``rungs.json`` (a study with ASHA) snapshots the
rungs (:mod:`ablate.study.rungs`). All are plain JSON, written atomically.

Trust: Ray Tune's own files under ``tune/`` are pickles (``tuner.pkl``, the experiment state),
and resuming a study unpickles them, so whoever can write to the storage can run code as the
user who resumes. Keep the storage writable by its owners only; ``ablate status`` reads the two
JSON records and nothing of Ray's.
"""

from __future__ import annotations

import json
import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablate.bounded import TooLarge, load_json
from ablate.errors import AblateError
from ablate.locks import FileLock, check_writable
from ablate.study.record import ProgressRecord, StageRecord, StudyRecord, stages_from_json

STUDY_FILE = "study.json"
PROGRESS_FILE = "trials.json"
RUNGS_FILE = "rungs.json"
STAGES_FILE = "stages.json"
TUNE_DIR = "tune"
UNWRITABLE = ("cannot write {path} ({problem}); free space there (or fix the storage) and run "
              "the same command to resume")
MAX_RECORD_BYTES = 256 << 20  # a record of the largest study is tens of MiB
DAMAGED_FILE = "{path} is corrupt ({problem}); {remedy}"
REMEDIES = {
    STUDY_FILE: "move it away to start the study again",
    PROGRESS_FILE: "move it away (the next `ablate run` of the study writes it anew)",
    RUNGS_FILE: "restore it from a backup, or run the study anew under another --name",
    STAGES_FILE: "restore it from a backup, or run the study anew under another --name",
}


def _is_uri(path: str) -> bool:
    return "://" in path


@dataclass(frozen=True)
class StudyDir:
    """Where one study keeps its state."""

    root: str  # absolute local path or URI

    @classmethod
    def at(cls, storage: str, name: str) -> StudyDir:
        base = storage if _is_uri(storage) else str(Path(storage).expanduser().resolve())
        return cls(root=f"{base.rstrip('/')}/{name}")

    @property
    def is_local(self) -> bool:
        return not _is_uri(self.root)

    @property
    def tune_path(self) -> str:
        return f"{self.root}/{TUNE_DIR}"

    def _fs(self):
        import pyarrow.fs

        return pyarrow.fs.FileSystem.from_uri(self.root)

    def check_writable(self) -> None:
        """Fails early, before any trial, if the storage cannot be written."""
        if self.is_local:
            path = Path(self.root)
            probe = path if path.exists() else next(p for p in path.parents if p.exists())
            if not probe.is_dir():
                raise AblateError(f"storage {self.root}: {probe} is not a directory; "
                                  f"pass --storage DIR")
            try:
                check_writable(probe)
            except OSError as exc:
                raise AblateError(f"storage {probe} is not writable ({exc.strerror}); "
                                  f"pass --storage DIR") from None
            return
        fs, path = self._fs()
        try:
            fs.create_dir(path, recursive=True)
        except OSError as exc:
            raise AblateError(f"storage {self.root} is not writable: {exc}") from None

    @property
    def record_path(self) -> str:
        return f"{self.root}/{STUDY_FILE}"

    def read_record(self) -> StudyRecord | None:
        """``study.json``; None when the study has none yet.

        Raises:
            AblateError: The file is not valid JSON, or not a study record.
        """
        body = self._read_json(STUDY_FILE)
        return None if body is None else StudyRecord.from_json(body, self.record_path)

    def write_record(self, record: StudyRecord) -> None:
        self._write_json(STUDY_FILE, record.to_json())

    def read_progress(self) -> ProgressRecord | None:
        """``trials.json``; None when the study has none yet.

        Raises:
            AblateError: The file is damaged (naming it; it records progress only, and the
                next run of the study writes it anew once it is moved away).
        """
        body = self._read_json(PROGRESS_FILE)
        return None if body is None else ProgressRecord.from_json(
            body, f"{self.root}/{PROGRESS_FILE}")

    def write_progress(self, progress: ProgressRecord) -> None:
        self._write_json(PROGRESS_FILE, progress.to_json())

    def read_stages(self) -> tuple[StageRecord, ...]:
        """The stages after the first that ``stages.json`` pins (none before any).

        Raises:
            AblateError: The file is damaged.
        """
        body = self._read_json(STAGES_FILE)
        return () if body is None else stages_from_json(body, f"{self.root}/{STAGES_FILE}")

    def write_stages(self, stages: tuple[StageRecord, ...]) -> None:
        self._write_json(STAGES_FILE, {"stages": [s.to_json() for s in stages]})

    def path_of(self, directory: str) -> str:
        """A stage's Tune experiment under the study directory."""
        return f"{self.root}/{directory}"

    def read_rungs(self) -> dict[str, Any] | None:
        return self._read_json(RUNGS_FILE)

    def write_rungs(self, rungs: dict[str, Any]) -> None:
        self._write_json(RUNGS_FILE, rungs)

    def _read_json(self, name: str) -> Any:
        """One of the study's JSON files, parsed within bounds; None when it is absent.

        Raises:
            AblateError: It is larger than :data:`MAX_RECORD_BYTES`, not UTF-8 JSON, or nests
                too deep; naming the file and what to do.
        """
        import pyarrow.fs

        fs, path = self._fs()
        info = fs.get_file_info(f"{path}/{name}")
        if info.type == pyarrow.fs.FileType.NotFound:
            return None
        where = f"{self.root}/{name}"
        if info.size is not None and info.size > MAX_RECORD_BYTES:
            raise AblateError(DAMAGED_FILE.format(
                path=where, problem=f"larger than {MAX_RECORD_BYTES >> 20} MiB",
                remedy=REMEDIES[name]))
        with fs.open_input_stream(f"{path}/{name}") as f:
            try:
                return load_json(f.read().decode())
            except ValueError as exc:  # not UTF-8, not JSON, or too deep (bounded.TooLarge)
                problem = str(exc) if isinstance(exc, TooLarge) else "not JSON"
                raise AblateError(DAMAGED_FILE.format(path=where, problem=problem,
                                                      remedy=REMEDIES[name])) from None

    def _write_json(self, name: str, body: dict[str, Any]) -> None:
        fs, path = self._fs()
        fs.create_dir(path, recursive=True)
        text = json.dumps(body, indent=2, sort_keys=True).encode()
        tmp = f"{path}/.{name}.tmp-{os.getpid()}"
        try:
            with fs.open_output_stream(tmp) as f:
                f.write(text)
            fs.move(tmp, f"{path}/{name}")  # atomic rename on local filesystems
        except OSError as exc:  # a full disk, a lost mount: the old record stands
            try:
                fs.delete_file(tmp)
            except OSError:
                pass
            problem = os.strerror(exc.errno) if exc.errno else str(exc).splitlines()[0]
            raise AblateError(UNWRITABLE.format(path=f"{self.root}/{name}",
                                                problem=problem)) from None

    def lock(self) -> AbstractContextManager[object]:
        """An exclusive lock so two drivers never run one study at once (local storage)."""
        if not self.is_local:
            return nullcontext()
        return FileLock(Path(self.root) / ".lock", record_holder=True,
                        busy=f"study at {self.root} is being run by another process; wait for "
                             f"it or watch it with `ablate status`")
