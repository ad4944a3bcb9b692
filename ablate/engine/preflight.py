"""Everything ``ablate run`` checks before it writes anything, in the order that lets bad input
fail first: the storage is writable, the study's records (``study.json``, ``trials.json``,
``rungs.json``) are sound and the study record accepts the plan, a dataset path is a feature
store (checked before the tracking store is opened, so a refused study creates no store), the
tracking store answers and accepts the study, the dataset is the one everything the study kept
was trained on (:mod:`ablate.engine.samedata`), and what Tune will be given for the study's
first stage to run can be decided (:mod:`ablate.engine.adopt`)."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import click

from ablate.engine.adopt import Attempt, plan_attempt
from ablate.engine.stages import Stage, Stages
from ablate.errors import AblateError, ConfigError, short
from ablate.study.plan import Plan
from ablate.study.record import StudyRecord
from ablate.study.storage import StudyDir
from ablate.tracking.runs import TrialRun
from ablate.tracking.store import Tracker

CHANGED_PLAN = ("study '{name}' at {root} was created from a different plan (hash {old}, now "
                "{new}){changed}; to run the changed study as a new one, pass --name NEW_NAME "
                "(or move {root} away)")
DAMAGED_GROUPS = ("study '{name}': {problem} ({path}); restore that file from a backup, or run "
                  "the study anew under another --name")


@dataclass(frozen=True)
class Ready:
    """A study that passed its checks, and what was read on the way.

    Attributes:
        plan: The plan, with a resumed study's recorded fused groups.
        study_dir: Where the study keeps its records.
        record: ``study.json``; None for a study's first run.
        tracker: The tracking store, checked to take the study.
        runs: The study's tracked trial runs, by trial key.
        dataset_path: The feature store.
        data_id: The fingerprint of its features.
        stages: The study's stages (the first not yet pinned for a new study).
        stage: The study's first stage, and ``attempt``, what Tune is given for it (decided
            here, so a stage that cannot continue is refused before anything is written).
        finished: The study finished last time (``trials.json``): its Tune state is not read.
    """

    plan: Plan
    study_dir: StudyDir
    record: StudyRecord | None
    tracker: Tracker
    runs: Mapping[str, TrialRun]
    dataset_path: Path
    data_id: str
    stages: Stages
    stage: Stage
    attempt: Attempt
    finished: bool = False


def preflight(plan: Plan, storage: str, tracking_uri: str, address: str | None,
              quiet: bool) -> Ready:
    """Checks the study can run (see the module docstring); starts Ray meanwhile unless the
    study finished last time.

    Raises:
        AblateError: The first problem found, naming it and what to do.
    """
    from ablate.data.source import is_synthetic
    from ablate.engine.raycluster import connect_ray
    from ablate.engine.samedata import check_same_data
    from ablate.engine.tune_setup import study_rungs
    from ablate.tracking.connect import connect
    from ablate.tracking.runs import chosen_trial_runs
    from ablate.tracking.study import check_study

    spec = plan.spec
    study_dir = StudyDir.at(storage, spec.name)  # checked writable, and locked, by the caller
    record = study_dir.read_record()
    if record is not None:
        plan = _resumable(plan, record, study_dir)
    # Ray and the tracking store take seconds each to start: a study that will probably train
    # (it did not finish last time) starts Ray while the store opens in a thread.
    progress = study_dir.read_progress()
    study_rungs(plan, study_dir)  # a damaged rungs.json fails before anything starts
    finished = progress is not None and progress.driver == "finished"
    # A dataset path that is no feature store is refused before the tracking store opens (a
    # refused study creates no store); the embedded benchmark, generated on first use, only
    # once the store accepted the study.
    dataset = None if is_synthetic(spec.dataset) else _dataset(spec.dataset)
    with ThreadPoolExecutor(1, thread_name_prefix="tracking-connect") as pool:
        opened = pool.submit(connect, tracking_uri)
        if not finished:
            connect_ray(address)
        tracker = opened.result()
    check_study(tracker, spec.name, plan.hash, study_dir.root)
    dataset_path, data_id = dataset or _dataset(spec.dataset)
    runs = chosen_trial_runs(tracker, spec.name)
    check_same_data(spec.name, dataset_path, data_id, record, runs, study_dir)
    stages = Stages(plan, study_dir)
    stage = stages.pinned()[0]
    attempt = stage_attempt(stage, runs, tracker, study_dir, finished)
    if attempt.note and not quiet:
        click.echo(attempt.note, err=True)
    return Ready(plan, study_dir, record, tracker, runs, dataset_path, data_id, stages, stage,
                 attempt, finished)


def _dataset(dataset: str) -> tuple[Path, str]:
    """The feature store ``dataset`` names, and its fingerprint."""
    from ablate.data import load
    from ablate.data.source import ensure_store

    path = ensure_store(dataset)
    return path, load(path).fingerprint


def stage_attempt(stage: Stage, runs: Mapping[str, TrialRun], tracker: Tracker,
                  study_dir: StudyDir, finished: bool = False) -> Attempt:
    """What Tune is given for ``stage``: a restore of its experiment, or the trials to start
    (:func:`~ablate.engine.adopt.plan_attempt`). A study that ``finished`` last time has its
    finished runs adopted, and Tune's state (pickles) is not read.

    Raises:
        AblateError: Tune's trials train fused groups the study record does not have.
    """
    from ablate.engine.tunestate import TuneState, tune_state, unknown_groups

    path = study_dir.path_of(stage.directory)
    unknown = unknown_groups(path, stage.plan)
    if unknown:
        raise AblateError(DAMAGED_GROUPS.format(
            name=stage.plan.spec.name, path=study_dir.record_path,
            problem=f"its fused groups do not include {short(unknown[0])}, which Tune's "
                    f"trials under {path} train (renamed?)"))
    state = TuneState.FINISHED if finished else tune_state(path)
    return plan_attempt(stage.plan, runs, state, path, tracker, stage.keys)


def _resumable(plan: Plan, record: StudyRecord, study_dir: StudyDir) -> Plan:
    """The plan a study with ``record`` resumes: refused when the plan changed; with the fused
    groups it started with, whatever resources it resumes with."""
    name = plan.spec.name
    if record.spec_hash != plan.hash:
        changed = record.changes_to(plan)
        raise AblateError(CHANGED_PLAN.format(
            name=name, root=study_dir.root, old=record.spec_hash, new=plan.hash,
            changed=f"; changed: {'; '.join(changed)}; to resume it, set those back"
            if changed else ""))
    if not plan.fused:
        return plan
    try:
        return plan.regrouped(record.groups)
    except ConfigError as exc:
        raise AblateError(DAMAGED_GROUPS.format(name=name, problem=exc,
                                                path=study_dir.record_path)) from None
