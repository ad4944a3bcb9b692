"""What Ray Tune is given: the grid of an ablation or the searcher of a search, the study's own
rungs when it has a scheduler (Tune itself runs trials first in, first out), and the Tuner that
runs or restores it."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ablate.errors import AblateError, short
from ablate.study.plan import Plan
from ablate.study.storage import TUNE_DIR, StudyDir

if TYPE_CHECKING:
    from ablate.engine.adopt import Attempt
    from ablate.engine.context import StudyContext
    from ablate.engine.stages import Stage
    from ablate.study.rungs import Rungs

DAMAGED_RUNGS = ("{root}/rungs.json is not a snapshot of the study's ASHA rungs ({problem}); "
                 "restore it from a backup, or run the study anew under another --name")


def tune_setup(plan: Plan, keys: tuple[str, ...] | None) -> tuple[dict[str, Any], Any]:
    """(param_space, TuneConfig) for a grid over the planned trials ``keys``, or (None) a
    search."""
    from ray import tune

    spec = plan.spec
    if keys is not None:
        unit, values = plan.units(keys)
        space = {unit: tune.grid_search(values)}
        # No metric: Tune would check every result for it, and a grid selects nothing.
        config = tune.TuneConfig(num_samples=1, reuse_actors=True,
                                 max_concurrent_trials=spec.max_concurrent)
        return space, config
    assert spec.search is not None
    import optuna
    from ray.tune.search import Repeater
    from ray.tune.search.optuna import OptunaSearch

    space = {}
    for key, dist in spec.search.space.items():
        space[key] = {"values": lambda a: tune.choice(list(a)),
                      "uniform": lambda a: tune.uniform(*a),
                      "loguniform": lambda a: tune.loguniform(*a),
                      "int": lambda a: tune.randint(a[0], a[1] + 1)}[dist.kind](dist.args)
    seed = int(plan.hash, 16) % 2**31  # reproducible per study, different across studies
    sampler = (optuna.samplers.TPESampler(seed=seed) if spec.search.algorithm == "optuna"
               else optuna.samplers.RandomSampler(seed=seed))
    searcher: Any = OptunaSearch(sampler=sampler, metric=spec.metric, mode=spec.mode)
    if len(spec.seeds) > 1:
        searcher = Repeater(searcher, repeat=len(spec.seeds))
    config = tune.TuneConfig(metric=spec.metric, mode=spec.mode, search_alg=searcher,
                             num_samples=spec.search.num_samples * len(spec.seeds),
                             reuse_actors=True, max_concurrent_trials=spec.max_concurrent)
    return space, config


def start_rungs(plan: Plan, study_dir: StudyDir) -> Any:
    """A study with a scheduler: the Ray actor keeping its rungs (:mod:`ablate.engine.asha`),
    seeded from the snapshot of an earlier run of the study, on this node; otherwise None.

    Raises:
        AblateError: ``rungs.json`` is damaged, or holds another schedule than the spec's.
    """
    rungs = study_rungs(plan, study_dir)
    if rungs is None:
        return None
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from ablate.engine.asha import RungsKeeper

    # No CPU: it must never wait for a slot the trials hold. It lives as long as the driver,
    # on the driver's node, and writes the snapshot where the driver reads it.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return ray.remote(num_cpus=0, scheduling_strategy=here)(RungsKeeper).remote(rungs, study_dir)


def study_rungs(plan: Plan, study_dir: StudyDir) -> Rungs | None:
    """A study with a scheduler: its rungs, from the snapshot of an earlier run of the study
    (checked against the plan) or fresh; otherwise None.

    Raises:
        AblateError: ``rungs.json`` is damaged, names trials the plan does not have, or holds
            another schedule than the spec's.
    """
    from ablate.study.rungs import Rungs

    fresh = plan.member_rungs()
    snapshot = None if fresh is None else study_dir.read_rungs()
    if fresh is None or snapshot is None:
        return fresh
    try:
        rungs = Rungs.from_json(snapshot)
        if not rungs.same_schedule(fresh):
            raise ValueError(f"milestones {list(rungs.milestones)}, reduction factor "
                             f"{rungs.reduction_factor:g}, sign {rungs.sign:g}; the spec "
                             f"gives {list(fresh.milestones)}, "
                             f"{fresh.reduction_factor:g}, {fresh.sign:g}")
        # A search samples its trials as it goes: only a planned study knows them all.
        strangers = [] if plan.spec.search is not None else sorted(rungs.keys() - set(plan.keys))
        if strangers:
            raise ValueError(f"trial {short(strangers[0])} is not one of the study's")
    except ValueError as exc:
        raise AblateError(DAMAGED_RUNGS.format(root=study_dir.root, problem=exc)) from None
    return rungs


class _FullDiskTrials(logging.Filter):
    """A trial that fails because the storage is full is logged in one line, not with the
    traceback of Ray's checkpoint copy: the study then ends with one line that says so."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, OSError) and os.strerror(errno.ENOSPC) in str(error):
            record.exc_info = None
            record.msg = f"{record.msg}: {os.strerror(errno.ENOSPC)}"
        return True


def fit(ctx: StudyContext, stage: Stage, attempt: Attempt, dataset_path: Path,
        data_sha256: str) -> Any:
    """Starts or restores a stage's Tune experiment and runs it; returns Tune's ResultGrid.
    ``data_sha256`` is the fingerprint of ``dataset_path`` the driver checked."""
    controller = logging.getLogger("ray.tune.execution.tune_controller")
    if not any(isinstance(f, _FullDiskTrials) for f in controller.filters):
        controller.addFilter(_FullDiskTrials())
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    from ablate.data.source import worker_dataset
    from ablate.engine.callback import StudyCallback
    from ablate.engine.trainable import train_trial

    spec, study_dir = ctx.plan.spec, ctx.study_dir
    path = study_dir.path_of(stage.directory)
    if ctx.scheduled and ctx.rungs is None:  # one actor for every stage of the driver's run
        ctx.rungs = start_rungs(stage.plan, study_dir)
    trainable = tune.with_resources(
        tune.with_parameters(train_trial, plan=stage.plan,
                             dataset=worker_dataset(spec.dataset, dataset_path),
                             tune_path=path, rungs=ctx.rungs if ctx.scheduled else None,
                             data_sha256=data_sha256),
        {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})
    if attempt.restore:  # Tune's own grid or searcher state carries on
        if not ctx.quiet:
            click.echo(f"resuming study '{spec.name}' from {study_dir.root}"
                       + (f" ({stage.name})" if stage.directory != TUNE_DIR else ""), err=True)
        tuner = tune.Tuner.restore(path, trainable, resume_errored=True)
    else:
        keys = None if stage.keys is None else (attempt.keys or ())
        space, tune_config = tune_setup(stage.plan, keys)
        run_config = tune.RunConfig(
            name=stage.directory, storage_path=study_dir.root, verbose=0,
            callbacks=[StudyCallback(), JsonLoggerCallback()],  # result.json: each trial's log
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2))
        tuner = tune.Tuner(trainable, param_space=space, tune_config=tune_config,
                           run_config=run_config)
    try:
        return tuner.fit()
    except Exception as exc:
        own = _own_error(exc)
        if own is exc:
            raise
        raise own from None


def _own_error(error: BaseException) -> BaseException:
    """The study's own error (a record it cannot write) that Tune wrapped in a ``TuneError``
    when the callback raised it while Tune handled a trial's failure; else ``error``."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, AblateError):
            return cause
        cause = cause.__cause__ or cause.__context__
    return error
