"""``ablate run``: a study on Ray Tune, tracked in a tracking store, resumable by running it again.

Order of work, chosen so that bad input fails before anything is written: the spec is
validated (by the caller), then :func:`~ablate.engine.preflight.preflight` checks the storage,
the study record, the tracking store and the dataset; only then are ``study.json``, tracked runs
and Ray state created. The study then runs its stages (:mod:`ablate.engine.stages`: one, or
rounds of adaptive seeds, or a search and its confirmation), each a Tune experiment. A second
run of the same command restores each stage's Tune experiment (``Tuner.restore(...,
resume_errored=True)``): finished trials are kept, interrupted ones continue from their last
checkpoint, errored ones are retried; then every trial's run is reconciled from its checkpoint
(:mod:`ablate.engine.reconcile`), so results reported while the driver was down are not lost.
Without a restorable Tune experiment, trials finished in the tracking store are adopted and the
rest run (:mod:`ablate.engine.adopt`).

A stop of the driver (Ctrl-C; the caller maps SIGTERM to the same) ends Tune's run after a last
snapshot of its state: trials cut short are recorded as KILLED, never as finished, and the
outcome says the study was interrupted. The study's lock is taken before the checks (and Ray)
start, so a second driver is refused at once; a study that ends on an error of the driver's own
(a full storage) or a stop outside Tune closes its unfinished runs KILLED before the error is
reported.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import click

from ablate.engine.context import StudyContext
from ablate.engine.stages import Stage
from ablate.study.plan import Plan
from ablate.study.record import DONE, StudyRecord, TrialRecord
from ablate.study.storage import StudyDir

if TYPE_CHECKING:
    from ablate.engine.adopt import Attempt
    from ablate.engine.preflight import Ready


@dataclass(frozen=True)
class StudyOutcome:
    rows: list[TrialRecord]
    total: int  # planned trials
    failed: int
    interrupted: bool
    resumed: bool
    study_dir: StudyDir
    tracking_uri: str
    parent_run_id: str
    seconds: float

    @property
    def done(self) -> int:
        return sum(r.state == DONE for r in self.rows)


def run_study(plan: Plan, storage: str, tracking_uri: str, address: str | None,
              quiet: bool = False) -> StudyOutcome:
    """Runs (or resumes) the study ``plan`` until it completes or the driver is stopped.

    ``address`` is an existing Ray cluster (else ``RAY_ADDRESS``, else a local Ray); connecting
    to one that uses token authentication needs ``RAY_AUTH_MODE=token`` in the environment,
    which is the caller's to set.
    """
    from ablate.engine.preflight import preflight
    from ablate.tracking.study import StudyTracker
    from ablate.tracking.view import view_state

    start = time.monotonic()
    study_dir = StudyDir.at(storage, plan.spec.name)
    study_dir.check_writable()
    with study_dir.lock():  # before Ray starts: a second driver is refused at once
        ready = preflight(plan, storage, tracking_uri, address, quiet)
        plan, spec, stages = ready.plan, plan.spec, ready.stages
        # The study is claimed in the tracking store before anything is written here.
        tracker = StudyTracker(ready.tracker, spec.name, plan.hash, ready.runs, study_dir.root,
                               ready.data_id)
        if ready.record is None:
            study_dir.write_record(StudyRecord.of_plan(plan, str(ready.dataset_path),
                                                       ready.data_id))
        stages.pin_first()
        design = spec.design if spec.search is None else f"search ({spec.search.algorithm})"
        tracker.start_study(
            {"spec_hash": plan.hash, "design": design, "dataset": str(ready.dataset_path),
             "dataset_sha256": ready.data_id,
             "seeds": list(spec.seeds), "trials": plan.total,
             "source": str(spec.source or "")},
            view=view_state(spec.metric, spec.mode,
                            spec.search.space if spec.search is not None else ()))
        ctx = StudyContext(plan=plan, tracker=tracker, study_dir=study_dir, total=stages.total,
                           quiet=quiet,
                           finished_before={r.run_id for r in tracker.finished().values()})
        try:
            rows, failed, interrupted, resumed = _run_stages(ctx, ready, address)
        except BaseException as exc:
            _abandon(ctx, stopped=isinstance(exc, KeyboardInterrupt))
            raise
        ctx.save_record("interrupted" if interrupted else "failed" if failed else "finished")
        complete = not failed and not interrupted and len(rows) == ctx.total
        tracker.end_study("FINISHED" if complete else "KILLED" if interrupted else "FAILED")
    return StudyOutcome(rows=rows, total=ctx.total, failed=failed, interrupted=interrupted,
                        resumed=resumed, study_dir=study_dir, tracking_uri=tracking_uri,
                        parent_run_id=tracker.parent_id, seconds=time.monotonic() - start)


def _run_stages(ctx: StudyContext, ready: Ready, address: str | None
                ) -> tuple[list[TrialRecord], int, bool, bool]:
    """Runs the study's stages, each after the last, until one fails or is interrupted;
    ``(every trial's record, failed, interrupted, resumed)``."""
    rows, failed, interrupted, resumed = [], 0, False, False
    stage: Stage | None = ready.stage
    attempt: Attempt | None = ready.attempt
    while stage is not None:
        ctx.begin(stage.plan, ready.stages.total)
        rows, failed, interrupted, restored = _run_stage(ctx, stage, ready, address, attempt)
        attempt = None
        resumed = resumed or restored
        if failed or interrupted:
            break
        stage = ready.stages.after(stage, ctx.tracker.runs(), list(ctx.configs.values()))
    return rows, failed, interrupted, resumed


def _abandon(ctx: StudyContext, stopped: bool) -> None:
    """The study ends on an error of the driver's own, or a stop outside Tune: no trial it
    leaves unfinished reads as running (:meth:`StudyContext.abandon`), in the tracking store or,
    where it can still be written, ``trials.json``. The error itself is the caller's."""
    from ablate.errors import AblateError

    for step in (ctx.abandon, lambda: ctx.save_record("interrupted" if stopped else "failed"),
                 lambda: ctx.tracker.end_study("KILLED" if stopped else "FAILED")):
        try:
            step()
        except (AblateError, OSError):  # the same fault again: the first error is reported
            pass


def _run_stage(ctx: StudyContext, stage: Stage, ready: Ready, address: str | None,
               attempt: Attempt | None) -> tuple[list[TrialRecord], int, bool, bool]:
    """Runs one stage's Tune experiment (or adopts its finished trials) and reconciles its
    trials' runs; ``(every trial's record, failed, interrupted, resumed)`` (resumed: Tune's
    experiment restored, or a finished study's trials adopted). ``attempt`` is
    what preflight decided for the first stage; a later one is decided here."""
    from ablate.engine.callback import active
    from ablate.engine.preflight import stage_attempt
    from ablate.engine.raycluster import connect_ray
    from ablate.engine.reconcile import reconcile
    from ablate.engine.tune_setup import fit

    if attempt is None:
        attempt = stage_attempt(stage, ctx.tracker.runs(), ctx.tracker.tracker, ctx.study_dir,
                                ready.finished)
        if attempt.note and not ctx.quiet:
            click.echo(attempt.note, err=True)
    grid = None
    if attempt.restore or attempt.keys != ():
        connect_ray(address)
        with active(ctx):
            grid = fit(ctx, stage, attempt, ready.dataset_path, ready.data_id)
    rows, failed, interrupted = reconcile(ctx, grid, stage.keys)
    if grid is not None and not failed and _unfinished(stage, rows):
        interrupted = True  # Tune was stopped before it started every trial
    return rows, failed, interrupted, attempt.restore or ready.finished


def _unfinished(stage: Stage, rows: list[TrialRecord]) -> bool:
    """Whether trials of ``stage`` are neither finished nor failed."""
    keys = stage.keys
    expected = stage.plan.total if keys is None else len(keys)
    return sum(r.state == DONE and (keys is None or r.key in keys) for r in rows) < expected
