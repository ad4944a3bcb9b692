"""The Tune → tracking bridge: Tune calls :class:`StudyCallback` in the driver process, and it
forwards every event, for each planned trial the Tune trial trains, to the live
:class:`~ablate.engine.context.StudyContext`, which logs to the tracking store (the only
writer), prints progress and keeps ``trials.json``.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ray.tune import Callback

from ablate.engine.context import StudyContext, member_result, tracked_metrics
from ablate.engine.finalize import finalize_member
from ablate.errors import AblateError
from ablate.study.record import DONE, FAILED, INTERRUPTED, PENDING, RUNNING, TrialState
from ablate.study.storage import UNWRITABLE

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

# Tune's trial states as a study's records name them.
TUNE_STATES: dict[str, TrialState] = {"PENDING": PENDING, "RUNNING": RUNNING,
                                      "TERMINATED": DONE, "ERROR": FAILED,
                                      "PAUSED": INTERRUPTED}

# The driver's live context, set only while Tune runs (see StudyCallback).
_ACTIVE: StudyContext | None = None


@contextmanager
def active(ctx: StudyContext) -> Iterator[StudyContext]:
    """Makes ``ctx`` the one the Tune callback forwards to, for the ``with`` block."""
    global _ACTIVE
    if _ACTIVE is not None:
        raise RuntimeError("a study is already running in this driver process")
    _ACTIVE = ctx
    try:
        yield ctx
    finally:
        _ACTIVE = None


class StudyCallback(Callback):
    """A Tune callback that forwards trial events to the driver's :class:`StudyContext`.

    Tune pickles its callbacks into the experiment state and restores *those* on resume. This
    class is pickled by reference (it lives at module level) and holds no state, so a restored
    callback finds the live context of the current driver, never a stale copy.
    """

    def on_step_end(self, iteration, trials, **info):
        ctx = _ACTIVE
        if ctx is None:
            return
        seen = []
        for trial in trials:  # Tune's own view: trials restored as finished fire no event
            for member in ctx.members(trial.trial_id, trial.config):
                row = ctx.update(member, state=TUNE_STATES.get(trial.status, PENDING))
                last = member_result(trial.last_result or {}, member.trial.key)
                if row.state == DONE and not row.metrics and last:
                    ctx.update(member, epoch=int(last.get("epoch", 0)),
                               metrics=tracked_metrics(last))
                seen.append(member)
        ctx.observe(seen)  # in the order Tune created its trials: the rungs' order

    def on_trial_start(self, iteration, trials, trial: Trial, **info):
        forget_deleted_checkpoints(trial)
        ctx = _ACTIVE
        if ctx is None:
            return
        for member in ctx.members(trial.trial_id, trial.config):
            ctx.update(member, state=RUNNING)
            run_id = ctx.run_id(member)
            if not ctx.is_adopted(run_id):
                ctx.tracker.mark_running(run_id)
        ctx.progress()

    def on_trial_result(self, iteration, trials, trial: Trial, result, **info):
        ctx = _ACTIVE
        if ctx is None:
            return
        for member in ctx.members(trial.trial_id, trial.config):
            mine = member_result(result, member.trial.key)
            if not mine or "epoch" not in mine:
                continue
            row = ctx.update(member, state=RUNNING, epoch=int(mine["epoch"]),
                             metrics=tracked_metrics(mine))
            run_id = ctx.run_id(member)
            if not ctx.is_adopted(run_id):
                ctx.queue_epoch(run_id, row)
        ctx.progress()

    def on_trial_complete(self, iteration, trials, trial: Trial, **info):
        ctx = _ACTIVE
        if ctx is None:
            return
        for member in ctx.members(trial.trial_id, trial.config):
            ctx.update(member, state=DONE)
            finalize_member(ctx, member, trial.checkpoint)
        ctx.progress(force=True)

    def on_trial_error(self, iteration, trials, trial: Trial, **info):
        ctx = _ACTIVE
        if ctx is None:
            return
        full = _full_disk(trial)
        if full is not None:  # the storage's fault, not the trial's: the study stops here,
            raise AblateError(UNWRITABLE.format(  # and its runs are closed KILLED, to resume
                path=full.filename or trial.storage.trial_fs_path, problem=os.strerror(full.errno)))
        for member in ctx.members(trial.trial_id, trial.config):
            if ctx.row(member).epoch >= member.trial.config.train.epochs:  # a fused member
                ctx.update(member, state=DONE)                            # that finished
                finalize_member(ctx, member, trial.checkpoint)
            else:
                ctx.update(member, state=FAILED)
                ctx.close_run(ctx.run_id(member), "FAILED")
        ctx.progress(force=True)


def _full_disk(trial: Trial) -> OSError | None:
    """The error of a trial that failed because a disk was full (most often the study's
    storage, where its checkpoint is copied), else None. Tune pickles the trial's error
    beside its driver-side files, off the storage."""
    import cloudpickle

    path = trial.pickled_error_file
    if path is None:
        return None
    try:
        with open(path, "rb") as file:
            error = cloudpickle.load(file)
    except Exception:  # an error Tune could not pickle whole: the trial's own, as before
        return None
    seen: set[int] = set()
    while error is not None and id(error) not in seen:  # Ray's wrapper holds it as ``cause``
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return error
        seen.add(id(error))
        error = getattr(error, "cause", None) or error.__cause__ or error.__context__
    return None


def forget_deleted_checkpoints(trial: Trial) -> None:
    """Drops the checkpoints a restored trial lists that are gone from the storage; one it
    would restore from that is gone is replaced by its newest checkpoint there.

    Tune deletes a trial's oldest checkpoint (beyond ``num_to_keep``) when it registers a new
    one, and snapshots its state only every few seconds: a driver killed in between leaves a
    snapshot that lists a deleted checkpoint, possibly as the one to restore from. Resumed from
    it, Tune would fail the trial ("does not exist on storage anymore"), or delete that
    checkpoint again at the trial's next one and fail on the missing path (a
    ``FileNotFoundError`` traceback, and the new checkpoint left out of the next snapshot).
    Tune calls :meth:`StudyCallback.on_trial_start` before it restores the trial.
    """
    manager = trial.run_metadata.checkpoint_manager
    latest = manager.latest_checkpoint_result
    if latest is not None and latest.checkpoint is not None and _gone(latest.checkpoint):
        newest = _newest_checkpoint(trial, latest.metrics)
        manager._latest_checkpoint_result = latest = newest
    manager._checkpoint_results = [
        result for result in manager._checkpoint_results
        if result.checkpoint is None or result is latest or not _gone(result.checkpoint)]
    if latest is not None and latest not in manager._checkpoint_results:
        manager._checkpoint_results.append(latest)


def _gone(checkpoint: Any) -> bool:
    import pyarrow.fs

    info = checkpoint.filesystem.get_file_info(checkpoint.path)
    return info.type == pyarrow.fs.FileType.NotFound


def _newest_checkpoint(trial: Trial, metrics: dict[str, Any]) -> Any:
    """The trial's newest checkpoint on the storage, with the result it was reported with
    (``result.json``; else ``metrics``); None if it has none."""
    import pyarrow.fs
    from ray.train._internal.session import _TrainingResult
    from ray.tune import Checkpoint

    fs, root = trial.storage.storage_filesystem, trial.storage.trial_fs_path
    names = sorted(info.base_name for info in fs.get_file_info(pyarrow.fs.FileSelector(root))
                   if info.type == pyarrow.fs.FileType.Directory
                   and info.base_name.startswith("checkpoint_"))
    if not names:
        return None
    try:
        with fs.open_input_stream(f"{root}/result.json") as file:
            rows = [json.loads(line) for line in file.read().decode().splitlines() if line]
    except (OSError, ValueError):
        rows = []
    reported = next((row for row in reversed(rows) if isinstance(row, dict)
                     and row.get("checkpoint_dir_name") == names[-1]), metrics)
    return _TrainingResult(Checkpoint(f"{root}/{names[-1]}", fs), reported)
