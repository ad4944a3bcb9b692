"""The driver's view of a running study: one row per planned trial, and its MLflow run.

A Tune trial trains one planned trial, or with fusion a group of them (``Plan.groups``); each
planned trial it trains is a :class:`Member` with its own row (progress, ``trials.json``, the
summary) and its own MLflow child run, so fused or not, every trial is recorded exactly once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import click

from ablate.metrics import METRICS
from ablate.study.plan import Plan, PlannedTrial
from ablate.study.storage import StudyDir
from ablate.study.tracking import StudyTracker

# Tune's trial states, and the driver's own for a trial cut short by a stop of the driver.
TrialStatus = Literal["PENDING", "RUNNING", "TERMINATED", "ERROR", "PAUSED", "INTERRUPTED"]
PENDING: TrialStatus = "PENDING"
RUNNING: TrialStatus = "RUNNING"
TERMINATED: TrialStatus = "TERMINATED"
ERROR: TrialStatus = "ERROR"
INTERRUPTED: TrialStatus = "INTERRUPTED"  # resumes on the next run
SHOWN = {PENDING: "pending", RUNNING: "running", TERMINATED: "done", ERROR: "failed",
         INTERRUPTED: "interrupted", "PAUSED": "interrupted"}
PROGRESS_SECONDS = 10

RowId = tuple[str, str]  # (Tune trial id, planned trial key)


@dataclass
class TrialRow:
    """What the driver knows of one planned trial, for progress, the summary, ``trials.json``."""

    key: str
    variant: str
    seed: int
    status: TrialStatus = PENDING
    epoch: int = 0
    metrics: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "variant": self.variant, "seed": self.seed,
                "state": SHOWN.get(self.status, self.status.lower()), "epoch": self.epoch,
                **{k: v for k, v in self.metrics.items() if k in METRICS}}


@dataclass(frozen=True)
class Member:
    """A planned trial as one Tune trial trains it: alone (``count`` 1) or fused."""

    row_id: RowId
    trial: PlannedTrial
    index: int
    count: int


def member_result(result: dict[str, Any], key: str) -> dict[str, Any] | None:
    """A member's part of a Tune result: a fused trial reports each under ``members``."""
    members = result.get("members")
    return members.get(key) if isinstance(members, dict) else result


def tracked_metrics(result: dict[str, Any]) -> dict[str, float]:
    from ablate.metrics import is_tracked

    return {k: float(v) for k, v in result.items()
            if is_tracked(k) and isinstance(v, (int, float))}


@dataclass
class StudyContext:
    """The live state of the running study, used by the Tune callback in the driver."""

    plan: Plan
    tracker: StudyTracker
    study_dir: StudyDir
    rows: dict[RowId, TrialRow] = field(default_factory=dict)
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)  # Tune trial id -> config
    adopted: list[TrialRow] = field(default_factory=list)  # finished runs Ray does not run
    finished_before: set[str] = field(default_factory=set)  # run ids FINISHED at the start
    run_ids: dict[RowId, str] = field(default_factory=dict)
    pending: dict[str, list[dict[str, float]]] = field(default_factory=dict)  # run id -> epochs
    last_progress: float = 0.0
    last_record: float = 0.0
    quiet: bool = False
    rungs: Any = None  # a fused study's ASHA: the Ray actor of its Rungs (ablate.study.rungs)

    @property
    def total(self) -> int:
        return self.plan.total

    def members(self, trial_id: str, config: dict[str, Any]) -> list[Member]:
        """The planned trials the Tune trial ``trial_id`` trains, each with its row."""
        trials = self.plan.members(config)
        self.configs.setdefault(trial_id, config)
        out = []
        for index, trial in enumerate(trials):
            row_id = (trial_id, trial.key)
            if row_id not in self.rows:
                self.rows[row_id] = TrialRow(trial.key, trial.variant, trial.seed)
            out.append(Member(row_id, trial, index, len(trials)))
        return out

    def run_id(self, member: Member) -> str:
        """The trial's MLflow child run, found by its identity or created, once per driver."""
        if member.row_id not in self.run_ids:
            self.run_ids[member.row_id] = self.tracker.child(
                member.trial.identity, member.row_id[0], member.trial.config.to_dict())
        return self.run_ids[member.row_id]

    def queue_epoch(self, run_id: str, row: TrialRow) -> None:
        """Queues a reported epoch for MLflow; :meth:`flush_epochs` logs the queue in one batch
        per run (an epoch lost with a killed driver is logged from the trial's checkpoint)."""
        self.pending.setdefault(run_id, []).append({"epoch": row.epoch, **row.metrics})

    def flush_epochs(self) -> None:
        for run_id, epochs in self.pending.items():
            self.tracker.log_epochs(run_id, epochs)
        self.pending.clear()

    def all_rows(self) -> list[TrialRow]:
        return [*self.adopted, *self.rows.values()]

    def counts(self) -> dict[str, int]:
        rows = self.all_rows()
        return {s: sum(r.status == s for r in rows) for s in (TERMINATED, RUNNING, ERROR)}

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
                         if row.status == RUNNING})
            if units < counts[RUNNING]:
                running += f" in {units} fused Tune trial{'s' if units > 1 else ''}"
        line = (f"[{time.strftime('%H:%M:%S')}] trials {counts[TERMINATED]}/{self.total} "
                f"done, {running}, {counts[ERROR]} failed")
        best = self.best()
        if best is not None:
            metric = self.plan.spec.metric
            line += (f"; best {metric} {best.metrics[metric]:.4f} "
                     f"({best.key}, epoch {best.epoch})")
        click.echo(line, err=True)

    def save_record(self, driver: str) -> None:
        """Writes ``trials.json``, the driver's state and one entry per known trial, and a fused
        study's ``rungs.json``."""
        self.last_record = time.monotonic()
        if self.rungs is not None:
            import ray

            self.study_dir.write_rungs(ray.get(self.rungs.to_json.remote()))
        rows = sorted(self.all_rows(), key=lambda r: (r.variant, r.seed, r.key))
        self.study_dir.write_progress({"driver": driver, "updated": time.time(),
                                       "total": self.total,
                                       "trials": [r.to_json() for r in rows]})

    def best(self) -> TrialRow | None:
        from ablate.metrics import best_by

        spec = self.plan.spec
        return best_by(self.all_rows(), lambda r: r.metrics.get(spec.metric), spec.mode)

    def close_run(self, run_id: str, status: str) -> None:
        """Closes an unfinished trial's run as ``FAILED`` or ``KILLED`` (never an adopted one)."""
        if not self.is_adopted(run_id):
            self.flush_epochs()
            self.tracker.stop(run_id, status)

    def is_adopted(self, run_id: str) -> bool:
        """A run that was FINISHED before this driver started is never reopened, even if Ray
        runs its trial again (a Ray state that lags behind MLflow)."""
        return run_id in self.finished_before
