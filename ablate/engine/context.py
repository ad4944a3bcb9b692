"""The driver's view of a running study: one record per planned trial, and its tracked run.

A Tune trial trains one planned trial, or with fusion a group of them (``Plan.groups``); each
planned trial it trains is a :class:`Member` with its own :class:`~ablate.study.record.TrialRecord`
(progress, ``trials.json``, the summary) and its own child run, so fused or not, every trial is
recorded exactly once. A trial's record changes in one place, :meth:`StudyContext.update`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import click

from ablate.metrics import best_by, is_tracked
from ablate.study.plan import Plan, PlannedTrial
from ablate.study.record import (
    DONE,
    FAILED,
    INTERRUPTED,
    PENDING,
    RUNNING,
    ProgressRecord,
    TrialRecord,
)
from ablate.study.storage import StudyDir
from ablate.tracking.store import RunStatus
from ablate.tracking.study import StudyTracker

PROGRESS_SECONDS = 10

RowId = tuple[str, str]  # (Tune trial id, planned trial key)


@dataclass(frozen=True)
class Member:
    """A planned trial as one Tune trial trains it: alone (``count`` 1) or fused."""

    row_id: RowId
    trial: PlannedTrial
    index: int
    count: int


def member_result(result: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    """A member's part of a Tune result: a fused trial reports each under ``members``."""
    members = result.get("members")
    return members.get(key) if isinstance(members, dict) else result


def tracked_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in result.items()
            if is_tracked(k) and isinstance(v, (int, float))}


@dataclass
class StudyContext:
    """The live state of the running study, used by the Tune callback in the driver.

    Attributes:
        plan: The plan of the stage running now (:mod:`ablate.engine.stages`).
        tracker: Its tracked runs.
        study_dir: Where its records are kept.
        total: The trials of the stages pinned so far.
        rows: Each planned trial a Tune trial trains, by (Tune trial id, trial key).
        configs: Each Tune trial's config, by Tune trial id.
        adopted: Finished trials Ray does not run (adopted from the tracking store).
        finished_before: Run ids already FINISHED when the driver started.
        run_ids: Each row's tracked run.
        pending: Epochs reported but not yet sent to the tracking store, by run id.
        quiet: No progress lines.
        rungs: A study's scheduler: the Ray actor keeping its rungs (ablate.engine.asha).
        scheduled: Whether the stage running now has a scheduler (a search's confirmation
            trains every trial to the end).
        observed: What the rungs were last told of the Tune trials (:meth:`observe`).
    """

    plan: Plan
    tracker: StudyTracker
    study_dir: StudyDir
    total: int
    rows: dict[RowId, TrialRecord] = field(default_factory=dict)
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    adopted: list[TrialRecord] = field(default_factory=list)
    finished_before: set[str] = field(default_factory=set)
    run_ids: dict[RowId, str] = field(default_factory=dict)
    pending: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    last_progress: float = 0.0
    last_record: float = 0.0
    quiet: bool = False
    rungs: Any = None
    scheduled: bool = False
    observed: list[tuple[str, str]] = field(default_factory=list)

    def begin(self, plan: Plan, total: int) -> None:
        """Starts a stage: its plan looks up what its Tune trials train."""
        self.plan, self.total = plan, total
        self.scheduled = plan.member_rungs() is not None
        self.configs.clear()

    def members(self, trial_id: str, config: dict[str, Any]) -> list[Member]:
        """The planned trials the Tune trial ``trial_id`` trains, each with its row."""
        trials = self.plan.members(config)
        self.configs.setdefault(trial_id, config)
        out = []
        for index, trial in enumerate(trials):
            row_id = (trial_id, trial.key)
            if row_id not in self.rows:
                self.rows[row_id] = TrialRecord(trial.key, trial.variant, trial.seed, "pending")
            out.append(Member(row_id, trial, index, len(trials)))
        return out

    def update(self, member: Member, **changes: Any) -> TrialRecord:
        """The one place a trial's record changes (``state``, ``epoch``, ``metrics``)."""
        row = self.rows[member.row_id] = self.rows[member.row_id].updated(**changes)
        return row

    def row(self, member: Member) -> TrialRecord:
        return self.rows[member.row_id]

    def run_id(self, member: Member) -> str:
        """The trial's tracked child run, found by its identity or created, once per driver."""
        if member.row_id not in self.run_ids:
            self.run_ids[member.row_id] = self.tracker.child(
                member.trial.identity, member.row_id[0], member.trial.config.to_dict())
        return self.run_ids[member.row_id]

    def queue_epoch(self, run_id: str, row: TrialRecord) -> None:
        """Queues a reported epoch for the tracking store; :meth:`flush_epochs` logs the queue in
        one batch per run (an epoch lost with a killed driver is logged from the trial's
        checkpoint)."""
        self.pending.setdefault(run_id, []).append({"epoch": row.epoch, **row.metrics})

    def flush_epochs(self) -> None:
        for run_id, epochs in self.pending.items():
            self.tracker.log_epochs(run_id, epochs)
        self.pending.clear()

    def all_rows(self) -> list[TrialRecord]:
        return [*self.adopted, *self.rows.values()]

    def counts(self) -> dict[str, int]:
        rows = self.all_rows()
        return {s: sum(r.state == s for r in rows) for s in (DONE, RUNNING, FAILED)}

    def progress(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last_record >= PROGRESS_SECONDS:
            self.flush_epochs()
            self.save_record("running")
        if self.quiet or (not force and now - self.last_progress < PROGRESS_SECONDS):
            return
        self.last_progress = now
        counts = self.counts()
        running = f"{counts[RUNNING]} running"
        if self.plan.fused and counts[RUNNING]:  # members: more than the slots Tune fills
            units = len({trial_id for (trial_id, _), row in self.rows.items()
                         if row.state == RUNNING})
            if units < counts[RUNNING]:
                running += f" in {units} fused Tune trial{'s' if units > 1 else ''}"
        line = (f"[{time.strftime('%H:%M:%S')}] trials {counts[DONE]}/{self.total} "
                f"done, {running}, {counts[FAILED]} failed")
        best = self.best()
        if best is not None:
            metric = self.plan.spec.metric
            line += (f"; best {metric} {best.metrics[metric]:.4f} "
                     f"({best.key}, epoch {best.epoch})")
        click.echo(line, err=True)

    def observe(self, members: list[Member]) -> None:
        """Tells the rungs (a study with a scheduler) the planned trials of Tune's trials, in
        the order Tune created them, with their states, when these changed."""
        if self.rungs is None or not self.scheduled:
            return
        states = [(m.trial.key, self.row(m).state) for m in members]
        if states == self.observed:
            return
        import ray

        ray.get(self.rungs.observe.remote(states))
        self.observed = states

    def save_record(self, driver: str) -> None:
        """Writes ``trials.json``: the driver's state and one entry per known trial (the rungs
        write their own snapshot, :mod:`ablate.engine.asha`)."""
        self.last_record = time.monotonic()
        rows = sorted(self.all_rows(), key=lambda r: (r.variant, r.seed, r.key))
        self.study_dir.write_progress(ProgressRecord(driver, time.time(), self.total, tuple(rows)))

    def abandon(self) -> None:
        """The driver stops on an error of its own (a full disk, a lost tracking store) or a
        stop outside Tune: each trial not finished is recorded interrupted and its open run
        closed ``KILLED``, so nothing reads as running, and the same command resumes them."""
        for row_id, row in self.rows.items():
            if row.state in (PENDING, RUNNING):
                self.rows[row_id] = row.updated(state=INTERRUPTED)
        self.pending.clear()  # may outrun the checkpoints: the next run logs them from those
        for run_id in self.run_ids.values():
            if not self.is_adopted(run_id) and self.tracker.status(run_id) == "RUNNING":
                self.tracker.stop(run_id, "KILLED")

    def best(self) -> TrialRecord | None:
        spec = self.plan.spec
        return best_by(self.all_rows(), lambda r: r.metrics.get(spec.metric), spec.mode)

    def close_run(self, run_id: str, status: RunStatus) -> None:
        """Closes an unfinished trial's run as ``FAILED`` or ``KILLED`` (never an adopted one)."""
        if not self.is_adopted(run_id):
            self.flush_epochs()
            self.tracker.stop(run_id, status)

    def is_adopted(self, run_id: str) -> bool:
        """A run that was FINISHED before this driver started is never reopened, even if Ray
        runs its trial again (a Ray state that lags behind the tracking store)."""
        return run_id in self.finished_before
