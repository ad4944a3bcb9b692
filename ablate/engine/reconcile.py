"""Bringing every trial's tracked run up to date with Tune's results, once Tune has run."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ablate.engine.context import StudyContext, member_result, tracked_metrics
from ablate.engine.finalize import finalize_member
from ablate.study.record import DONE, FAILED, INTERRUPTED, PENDING, TrialRecord


def reconcile(ctx: StudyContext, grid: Any, planned: Sequence[str] | None
              ) -> tuple[list[TrialRecord], int, bool]:
    """Finalises, fails or kills each trial's run as Tune left it.

    A trial Tune finished is finalised from its checkpoint; a failed one is closed as FAILED;
    one cut short by a stop of the driver is closed as KILLED, never FINISHED. Planned trials
    Tune was not given are the adopted ones: their finished runs stand (a finished search Tune
    did not run: every finished run on the search's seeds).

    Args:
        ctx: The study's live state.
        grid: Tune's ResultGrid; None when Tune did not run.
        planned: The stage's planned trial keys (None for a search).

    Returns:
        ``(every trial's record, failed, interrupted)``.
    """
    ctx.flush_epochs()  # before runs are closed: a run cut short keeps every epoch reported
    failed, interrupted = 0, False
    checkpoints: dict[str, Any] = {}
    for result in grid if grid is not None else []:
        metrics, config = result.metrics or {}, result.config or {}
        trial_id = metrics.get("trial_id")
        # Never reported (Tune gives such a trial its id alone, no config: read as a plan's
        # trial it would be a phantom): the callback saw it, if it ever ran.
        if trial_id is None or not config:
            continue
        checkpoints[trial_id] = result.checkpoint
        for member in ctx.members(trial_id, config):
            row = ctx.row(member)
            if row.state == PENDING:  # restored as finished; Tune ran no step that showed it
                row = ctx.update(member, state=FAILED if result.error is not None else DONE)
            mine = member_result(metrics, member.trial.key) or {}
            ctx.update(member, epoch=int(mine.get("epoch", row.epoch)),
                       metrics=tracked_metrics(mine) or row.metrics)
    for trial_id, config in ctx.configs.items():
        for member in ctx.members(trial_id, config):
            state = ctx.row(member).state
            if state == DONE:
                finalize_member(ctx, member, checkpoints.get(trial_id))
            elif state == FAILED:
                failed += 1
                ctx.close_run(ctx.run_id(member), "FAILED")
            else:  # pending or cut short: the driver was stopped
                interrupted = True
                ctx.update(member, state=INTERRUPTED)
                if member.row_id in ctx.run_ids:
                    ctx.close_run(ctx.run_ids[member.row_id], "KILLED")
    seen = {r.key for r in ctx.rows.values()}
    for key, run in ctx.tracker.finished().items():
        # a search Tune did not run is a finished one adopted whole: the runs on its seeds
        ours = (key in planned if planned is not None
                else grid is None and run.seed in ctx.plan.spec.seeds)
        if ours and key not in seen:
            ctx.adopted.append(run.record())
    rows = sorted(ctx.all_rows(), key=lambda r: (r.variant, r.seed, r.key))
    return rows, failed, interrupted
