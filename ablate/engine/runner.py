"""``ablate run``: a study on Ray Tune, tracked in a tracking store, resumable by running it again.

Order of work, chosen so that bad input fails before anything is written: the spec is
validated (by the caller), then :func:`~ablate.engine.preflight.preflight` checks the storage,
the study record, the tracking store and the dataset, and decides what Tune is given; only then
are ``study.json``, tracked runs and Ray state created. A second run of the same command
restores the Tune experiment (``Tuner.restore(..., resume_errored=True)``): finished trials are
kept, interrupted ones continue from their last checkpoint, errored ones are retried; then every
trial's run is reconciled from its checkpoint (:mod:`ablate.engine.reconcile`), so results
reported while the driver was down are not lost. Without a restorable Tune experiment, trials
finished in the tracking store are adopted and the rest run.

A stop of the driver (Ctrl-C; the caller maps SIGTERM to the same) ends Tune's run after a last
snapshot of its state: trials cut short are recorded as KILLED, never as finished, and the
outcome says the study was interrupted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ablate.engine.context import StudyContext
from ablate.study.plan import Plan
from ablate.study.record import DONE, StudyRecord, TrialRecord
from ablate.study.storage import StudyDir


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
    from ablate.engine.callback import active
    from ablate.engine.preflight import preflight
    from ablate.engine.reconcile import reconcile
    from ablate.engine.tune_setup import fit
    from ablate.tracking.study import StudyTracker
    from ablate.tracking.view import view_state

    start = time.monotonic()
    ready = preflight(plan, storage, tracking_uri, address, quiet)
    plan, study_dir, spec = ready.plan, ready.study_dir, plan.spec
    with study_dir.lock():
        if ready.record is None:
            study_dir.write_record(StudyRecord.of_plan(plan, str(ready.dataset_path),
                                                       ready.data_id))
        tracker = StudyTracker(ready.tracker, spec.name, plan.hash, ready.runs)
        design = spec.design if spec.search is None else f"search ({spec.search.algorithm})"
        tracker.start_study(
            {"spec_hash": plan.hash, "design": design, "dataset": str(ready.dataset_path),
             "seeds": list(spec.seeds), "trials": plan.total,
             "source": str(spec.source or "")},
            view=view_state(spec.metric, spec.mode,
                            spec.search.space if spec.search is not None else ()))
        ctx = StudyContext(plan=plan, tracker=tracker, study_dir=study_dir, quiet=quiet,
                           finished_before={r.run_id for r in tracker.finished().values()})
        grid = None
        if ready.needs_tune:
            with active(ctx):
                grid = fit(ctx, ready.attempt, ready.dataset_path)
        planned = None if spec.search is not None else plan.keys
        rows, failed, interrupted = reconcile(ctx, grid, planned)
        ctx.save_record("interrupted" if interrupted else "failed" if failed else "finished")
        complete = not failed and not interrupted and len(rows) == ctx.total
        tracker.end_study("FINISHED" if complete else "KILLED" if interrupted else "FAILED")
    return StudyOutcome(rows=rows, total=ctx.total, failed=failed, interrupted=interrupted,
                        resumed=ready.attempt.restore, study_dir=study_dir,
                        tracking_uri=tracking_uri, parent_run_id=tracker.parent_id,
                        seconds=time.monotonic() - start)
