"""Completing a finished trial's tracked run from its last checkpoint (idempotent)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ablate.study.plan import member_dir
from ablate.tracking.runs import FINAL_EPOCH, STOPPED_EARLY

if TYPE_CHECKING:
    from ablate.engine.context import Member, StudyContext


def finalize_member(ctx: StudyContext, member: Member, checkpoint: Any) -> None:
    """Logs the trial's history (filling any gap), its config, test scores and model
    checkpoint, and closes its run FINISHED; without a checkpoint the run is FAILED."""
    from ablate.train import outputs

    run_id = ctx.run_id(member)
    ctx.flush_epochs()
    if ctx.tracker.status(run_id) == "FINISHED":
        return
    if checkpoint is None:
        ctx.tracker.stop(run_id, "FAILED")
        return
    with checkpoint.as_directory() as directory, tempfile.TemporaryDirectory() as scratch:
        ckpt = member_dir(Path(directory), member.index, member.count)
        history = json.loads((ckpt / outputs.HISTORY).read_text())
        ctx.tracker.log_epochs(run_id, history)
        # The per-video scores (absent when stopped before test was first scored); plots are
        # drawn on demand (`ablate report` draws the best run's ROC and PR curves), not here,
        # where the controller waits on them between trials.
        final_dir = Path(scratch) / "checkpoint"
        final_dir.mkdir()
        (final_dir / "checkpoint.pt").symlink_to(ckpt / "checkpoint.pt")
        last = history[-1]["epoch"] if history else 0
        planned = member.trial.config.train.epochs
        ctx.tracker.finish(
            run_id,
            [("", ckpt / outputs.CONFIG), ("scores", ckpt / outputs.SCORES),
             ("checkpoint", final_dir)],
            tags={FINAL_EPOCH: str(last), STOPPED_EARLY: str(last < planned).lower()})
