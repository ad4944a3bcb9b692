"""One study, one dataset: a study is refused, before anything is written, when anything it
keeps was trained on other data than its store holds now.

The data's fingerprint (:func:`~ablate.data.layout.fingerprint`, the SHA-256 of the store's
features) is recorded in three places, so the check holds whichever of them survives:
``study.json`` (``dataset_sha256``), each trial's tracked run (tag ``ablate.data_sha256``) and
each trial checkpoint (``data_sha256`` in the state, and ``data.json`` beside it, read here
without torch). It is not part of the plan's hash: a study started before runs and
checkpoints recorded their data resumes as before; what has no fingerprint is accepted, what
has another is refused. A trial offered a checkpoint of other data refuses too
(:func:`~ablate.train.driver.check_same_data`), for storage this check cannot list (a URI).
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
        study_dir: Where its checkpoints are (listed when local).

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
        trials = sorted({p.relative_to(study_dir.root).parts[:2] for p, _ in found})
        where = sorted({f"{study_dir.root}/{stage}" for stage, _ in trials})
        raise refuse(f"the checkpoints of {len(trials)} Tune trial(s) under {', '.join(where)} "
                     f"were trained", found[0][1])


def _some(items: Iterable[str]) -> str:
    items = list(items)
    return ", ".join(items[:SHOWN]) + (f", ... {len(items) - SHOWN} more"
                                       if len(items) > SHOWN else "")


def _other_checkpoints(study_dir: StudyDir, data_sha256: str) -> list[tuple[Path, str]]:
    """``(checkpoint directory, its fingerprint)`` of every checkpoint under the study's Tune
    experiments (``tune/``, ``tune-round-2/``, ...) recorded as trained on other data; local
    storage only, checkpoints without ``data.json`` (older ones) passed over."""
    if not study_dir.is_local:
        return []
    found = []
    root = Path(study_dir.root)
    for pattern in (f"{TUNE_DIR}*/*/checkpoint_*/{DATA}",
                    f"{TUNE_DIR}*/*/checkpoint_*/member-*/{DATA}"):
        for path in sorted(root.glob(pattern)):
            try:
                recorded = json.loads(path.read_text()).get("sha256")
            except (OSError, ValueError, AttributeError):
                continue  # being written when its writer died: Tune never restores it
            if isinstance(recorded, str) and recorded != data_sha256:
                found.append((path.parent, recorded))
    return found
