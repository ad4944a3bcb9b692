"""One study, one dataset: a study is refused, before anything is written, when anything it
keeps was trained on other data than its store holds now.

The data's fingerprint (:func:`~ablate.data.layout.fingerprint`, the SHA-256 of the store's
features) is recorded in three places, so the check holds whichever of them survives:
``study.json`` (``dataset_sha256``), each trial's tracked run (tag ``ablate.data_sha256``) and
each trial checkpoint (``data_sha256`` in the state, and ``data.json`` beside it, read here
without torch, on local storage or a URI). It is not part of the plan's hash: a study started
before runs and checkpoints recorded their data resumes as before; what has no fingerprint is
accepted, what has another is refused. A trial offered a checkpoint of other data refuses too
(:func:`~ablate.train.driver.check_same_data`), and so does a trial on a node whose store
differs from the driver's (:func:`~ablate.engine.trainable.train_trial`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from ablate.data.layout import short_fingerprint
from ablate.errors import AblateError
from ablate.study.record import StudyRecord
from ablate.study.storage import TUNE_DIR, StudyDir
from ablate.tracking.runs import TrialRun
from ablate.train.outputs import DATA

CHANGED_DATA = ("study '{name}': {what} on other data than the store {store} holds now "
                "(features sha256 {old}, now {new}); restore the data it started on, or run "
                "the spec as a new study with --name NEW_NAME")
SHOWN = 3  # trials named in the message


def check_same_data(name: str, store: Path, data_sha256: str, record: StudyRecord | None,
                    runs: Mapping[str, TrialRun], study_dir: StudyDir) -> None:
    """Refuses the study if its record, a tracked trial run or a trial checkpoint names other
    data than ``data_sha256``.

    Args:
        name: The study.
        store: The feature store it runs on.
        data_sha256: Its fingerprint now.
        record: ``study.json``; None when there is none.
        runs: The study's tracked trial runs, by trial key.
        study_dir: Where its checkpoints are (listed on local storage or at a URI).

    Raises:
        AblateError: One line naming the store, both fingerprints and what to do.
    """
    def refuse(what: str, old: str | None) -> AblateError:
        return AblateError(CHANGED_DATA.format(
            name=name, what=what, store=store, old=short_fingerprint(old),
            new=short_fingerprint(data_sha256)))

    if record is not None and record.dataset_sha256 not in (None, data_sha256):
        raise refuse("study.json records that it started", record.dataset_sha256)
    other = sorted((k, r) for k, r in runs.items() if r.data_sha256 not in (None, data_sha256))
    if other:
        keys = [k for k, _ in other]
        raise refuse(f"{len(keys)} of its MLflow trial runs ({_some(keys)}) were trained",
                     other[0][1].data_sha256)
    found = _other_checkpoints(study_dir, data_sha256)
    if found:
        trials = sorted({tuple(p.split("/")[:2]) for p, _ in found})
        where = sorted({f"{study_dir.root}/{stage}" for stage, _ in trials})
        raise refuse(f"the checkpoints of {len(trials)} Tune trial(s) under {', '.join(where)} "
                     f"were trained", found[0][1])


def _some(items: Iterable[str]) -> str:
    items = list(items)
    return ", ".join(items[:SHOWN]) + (f", ... {len(items) - SHOWN} more"
                                       if len(items) > SHOWN else "")


def _other_checkpoints(study_dir: StudyDir, data_sha256: str) -> list[tuple[str, str]]:
    """``(checkpoint directory relative to the study, its fingerprint)`` of every checkpoint
    under the study's Tune experiments (``tune/``, ``tune-round-2/``, ...) recorded as trained
    on other data; local or a URI alike. Checkpoints without ``data.json`` (older ones) are
    passed over."""
    import pyarrow.fs

    fs, root = pyarrow.fs.FileSystem.from_uri(study_dir.root)
    found = []
    for stage in fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True)):
        if stage.type != pyarrow.fs.FileType.Directory or not stage.base_name.startswith(TUNE_DIR):
            continue
        for info in fs.get_file_info(pyarrow.fs.FileSelector(stage.path, recursive=True)):
            relative = info.path[len(root):].strip("/")
            parts = relative.split("/")
            if info.base_name != DATA or not any(p.startswith("checkpoint_") for p in parts):
                continue
            try:
                with fs.open_input_stream(info.path) as f:
                    recorded = json.loads(f.read().decode()).get("sha256")
            except (OSError, ValueError, AttributeError):
                continue  # being written when its writer died: Tune never restores it
            if isinstance(recorded, str) and recorded != data_sha256:
                found.append(("/".join(parts[:-1]), recorded))
    return sorted(found)
