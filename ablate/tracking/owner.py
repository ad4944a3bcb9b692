"""Which study directory owns a study in the tracking store, so two drivers never both run it.

A study directory is locked while its driver runs (:meth:`~ablate.study.storage.StudyDir.lock`),
but two drivers of one study on two ``--storage`` paths each hold their own lock and would each
run every trial into the one tracking store. So the study's experiment records its owner, the
study directory of the driver that runs it (tag ``ablate.storage``), set together with the
experiment's creation (one atomic step: of two drivers creating it at once, one wins). A driver
of another directory may take the study over, adopting its finished trials, only when the owner
is not running: its directory's lock is free, or, for a directory this machine cannot lock
(``s3://``, gone), the study's run is not RUNNING. A SQLite store's claims are serialized by the
store's lock (:func:`~ablate.tracking.check.migration_lock`); on a tracking server two takeovers
of an idle study at the same moment are not excluded.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from ablate.errors import AblateError
from ablate.tracking.check import migration_lock
from ablate.tracking.runs import parent_runs
from ablate.tracking.store import Experiment, Tracker
from ablate.tracking.uri import sqlite_path

OWNER = "ablate.storage"  # experiment tag: the study directory that owns the study
OTHER_OWNER = ("study '{study}' is being run from {owner} (tracking store {uri}), not {root}; "
               "wait for it to finish, resume it with --storage {owner_storage}, or run it as "
               "a new study with --name NEW_NAME")


def claim_lock(tracker: Tracker) -> AbstractContextManager[object]:
    """The lock that serializes claims of a study: the SQLite store's lock, else none."""
    db = sqlite_path(tracker.uri)
    return nullcontext() if db is None else migration_lock(db)


def owner_running(tracker: Tracker, experiment: Experiment, owner: str) -> bool:
    """Whether a driver runs the study from its owner's directory ``owner``."""
    from ablate.study.storage import StudyDir

    directory = StudyDir(root=owner)
    if directory.is_local and Path(owner).is_dir():
        try:
            with directory.lock():
                return False
        except AblateError:  # busy: its driver holds it
            return True
    return any(r.status == "RUNNING" for r in parent_runs(tracker, experiment))


def check_owner(tracker: Tracker, experiment: Experiment, root: str) -> None:
    """Refuses a driver of ``root`` while the study's owner, another directory, runs it.

    Raises:
        AblateError: Naming both directories and the remedies.
    """
    owner = experiment.tags.get(OWNER)
    if owner is None or owner == root or not owner_running(tracker, experiment, owner):
        return
    raise AblateError(OTHER_OWNER.format(
        study=experiment.name, uri=tracker.uri, owner=owner, root=root,
        owner_storage=owner.rsplit("/", 1)[0] or "/"))


def claim(tracker: Tracker, study: str, root: str | None,
          tags: Mapping[str, str]) -> Experiment:
    """The study's experiment, created with ``tags`` and ``root`` as its owner, or taken over
    by ``root`` (:func:`check_owner`); None claims nothing. The caller holds ``root``'s lock.

    Raises:
        AblateError: Another directory's driver runs the study.
    """
    owner = {} if root is None else {OWNER: root}
    with claim_lock(tracker):
        existing = tracker.experiment(study)
        if existing is None:
            tracker.create_experiment(study, {**tags, **owner})
            existing = tracker.experiment(study)  # ours, or another driver's created first
            assert existing is not None
        if root is None or existing.tags.get(OWNER) == root:
            return existing
        check_owner(tracker, existing, root)
        tracker.set_experiment_tag(existing.experiment_id, OWNER, root)
        taken = tracker.experiment(study)
        assert taken is not None
        return taken
