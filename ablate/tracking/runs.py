"""A study's runs read back from a tracking store: parsed once, chosen by one rule.

The layout is what :mod:`ablate.tracking.study` writes: an experiment named after the study,
a parent run tagged ``ablate.role=study`` and one child run per trial tagged
``ablate.role=trial`` with the trial's identity (``ablate.trial_key``, ``ablate.variant``,
``ablate.seed``). Runs written before trials had plan identities may repeat a key; whoever reads
a trial's run (the driver resuming a study, the report) takes the one :func:`prefer` picks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ablate.metrics import METRICS, is_tracked
from ablate.study.record import DONE, TrialRecord
from ablate.tracking.store import FINISHED, Experiment, RunStatus, TrackedRun, Tracker

ROLE = "ablate.role"
STUDY = "ablate.study"
TRIAL_KEY = "ablate.trial_key"
VARIANT = "ablate.variant"
SEED = "ablate.seed"
SPEC_HASH = "ablate.spec_hash"
FINAL_EPOCH = "ablate.final_epoch"
STOPPED_EARLY = "ablate.stopped_early"
TRIAL_ID = "ablate.trial_id"
DATA_SHA256 = "ablate.data_sha256"  # the fingerprint of the data the trial trained on
IDENTITY_TAGS = (TRIAL_KEY, VARIANT, SEED)
STUDY_ROLE = "study"
TRIAL_ROLE = "trial"
STEP_METRIC = "loss"  # logged at every epoch (test metrics may be scored less often)
NO_IDENTITY = ("run {run_id} is tagged as a trial of '{study}' but has no valid {tags}; left out "
               "(it was not written by `ablate run`)")


@dataclass(frozen=True)
class TrialRun:
    """A trial's child run: the trial's identity, the run's state, parameters and final metrics
    (the latest value of each per-epoch metric and diagnostic)."""

    run_id: str
    key: str
    variant: str
    seed: int
    status: RunStatus
    params: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    final_epoch: int | None = None
    stopped_early: bool = False
    trial_id: str | None = None  # Ray's id of the attempt that last ran it: informative only
    data_sha256: str | None = None  # None: a run written before runs recorded their data
    start_time: int = 0
    end_time: int = 0

    @property
    def finished(self) -> bool:
        return self.status == FINISHED

    def record(self) -> TrialRecord:
        """The trial as the study's records list a finished run adopted from the store."""
        return TrialRecord(self.key, self.variant, self.seed, DONE, self.final_epoch or 0,
                           {k: v for k, v in self.metrics.items() if k in METRICS})


def bad_identity(tags: Mapping[str, str]) -> list[str]:
    """The identity tags a child run lacks or holds malformed (a seed that is not an integer)."""
    bad = [t for t in IDENTITY_TAGS if t not in tags]
    try:
        int(tags.get(SEED, "0"))
    except ValueError:
        bad.append(SEED)
    return bad


def trial_run(run: TrackedRun) -> TrialRun:
    """The trial of a child run whose identity tags are sound (:func:`bad_identity`)."""
    tags = run.tags
    try:
        final_epoch: int | None = int(tags[FINAL_EPOCH])
    except (KeyError, ValueError):
        final_epoch = None
    return TrialRun(
        run_id=run.run_id, key=tags[TRIAL_KEY], variant=tags[VARIANT], seed=int(tags[SEED]),
        status=run.status, params=dict(run.params),
        metrics={k: v for k, v in run.metrics.items() if is_tracked(k)},
        final_epoch=final_epoch, stopped_early=tags.get(STOPPED_EARLY) == "true",
        trial_id=tags.get(TRIAL_ID), data_sha256=tags.get(DATA_SHA256),
        start_time=run.start_time,
        end_time=run.end_time or run.start_time)


def prefer(run: TrialRun, other: TrialRun | None) -> bool:
    """Whether ``run`` stands for its trial rather than ``other``: a finished run over an
    unfinished one, else the newer one."""
    if other is None:
        return True
    if run.finished != other.finished:
        return run.finished
    return (run.start_time, run.end_time) > (other.start_time, other.end_time)


def choose(runs: Iterable[TrialRun]) -> dict[str, TrialRun]:
    """The run that stands for each trial key (:func:`prefer`)."""
    chosen: dict[str, TrialRun] = {}
    for run in runs:
        if prefer(run, chosen.get(run.key)):
            chosen[run.key] = run
    return chosen


def parent_runs(tracker: Tracker, experiment: Experiment) -> list[TrackedRun]:
    """The study runs of an experiment (one, unless something else wrote there)."""
    return tracker.runs(experiment.experiment_id, {ROLE: STUDY_ROLE})


def oldest(runs: list[TrackedRun]) -> TrackedRun:
    """The study run every driver of the study writes to: the first one made."""
    return min(runs, key=lambda r: r.start_time)


def study_trial_runs(tracker: Tracker, experiment: Experiment,
                     study: str) -> tuple[list[TrialRun], list[str]]:
    """Every trial run of the study (any state), and a note for each run that claims to be one
    but lacks a sound identity."""
    found, notes = [], []
    for run in tracker.runs(experiment.experiment_id, {ROLE: TRIAL_ROLE, STUDY: study}):
        bad = bad_identity(run.tags)
        if bad:
            notes.append(NO_IDENTITY.format(run_id=run.run_id, study=study, tags=", ".join(bad)))
        else:
            found.append(trial_run(run))
    return found, notes


def chosen_trial_runs(tracker: Tracker, study: str) -> dict[str, TrialRun]:
    """The run standing for each of the study's trials, by key (empty before its first run)."""
    experiment = tracker.experiment(study)
    if experiment is None:
        return {}
    return choose(study_trial_runs(tracker, experiment, study)[0])


def logged_epochs(tracker: Tracker, run_id: str) -> set[int]:
    """The epochs whose metrics a trial's run holds."""
    return set(tracker.metric_history(run_id, STEP_METRIC))
