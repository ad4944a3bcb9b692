"""``ablate run``: a study on Ray Tune, tracked in MLflow, resumable by running it again.

Order of work, chosen so that bad input fails before anything is written: the spec is
validated (by the caller), the storage is checked writable, the tracking store is reached and
checked to accept the study, the dataset is prepared and validated, and what Tune is given is
decided (:mod:`ablate.study.adopt`); only then are ``study.json``, MLflow runs and Ray state
created. A second run of the same command restores the Tune experiment
(``Tuner.restore(..., resume_errored=True)``): finished trials are kept, interrupted ones
continue from their last checkpoint, errored ones are retried; then every trial's MLflow run is
reconciled from its checkpoint, so results reported while the driver was down are not lost.
Without a restorable Tune experiment, trials finished in MLflow are adopted and the rest run.

A stop of the driver (Ctrl-C; the caller maps SIGTERM to the same) ends Tune's run after a last
snapshot of its state: trials cut short are recorded as KILLED, never as finished, and the
outcome says the study was interrupted.
"""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ablate.errors import AblateError, ConfigError
from ablate.metrics import METRICS
from ablate.study.callback import StudyCallback, active
from ablate.study.context import (
    ERROR,
    INTERRUPTED,
    PENDING,
    TERMINATED,
    StudyContext,
    TrialRow,
    member_result,
    tracked_metrics,
)
from ablate.study.finalize import finalize_member
from ablate.study.plan import Plan, changed_keys
from ablate.study.storage import StudyDir

if TYPE_CHECKING:
    from ablate.study.adopt import Attempt


def _tune_setup(plan: Plan, keys: tuple[str, ...]):
    """(param_space, TuneConfig) for an ablation grid over ``keys``, or a search."""
    from ray import tune

    spec = plan.spec
    scheduler = None
    schedule = plan.asha_schedule()
    if schedule is not None and not plan.member_rungs:
        from ray.tune.schedulers import ASHAScheduler

        grace_period, max_t, reduction_factor = schedule
        scheduler = ASHAScheduler(time_attr="epoch", max_t=max_t, grace_period=grace_period,
                                  reduction_factor=reduction_factor)
    if spec.search is None:
        unit, values = plan.units(keys)
        space = {unit: tune.grid_search(values)}
        # Tune checks every result for its metric; a grid selects nothing, so it names one
        # only for a scheduler (whose rungs then need the metric at every epoch).
        ranked = {"metric": spec.metric, "mode": spec.mode} if scheduler is not None else {}
        config = tune.TuneConfig(**ranked, num_samples=1,
                                 scheduler=scheduler, reuse_actors=True,
                                 max_concurrent_trials=spec.max_concurrent)
        return space, config
    import optuna
    from ray.tune.search import Repeater
    from ray.tune.search.optuna import OptunaSearch

    space = {}
    for key, dist in spec.search.space.items():
        low_high = dist.args
        space[key] = {"values": lambda a: tune.choice(list(a)),
                      "uniform": lambda a: tune.uniform(*a),
                      "loguniform": lambda a: tune.loguniform(*a),
                      "int": lambda a: tune.randint(a[0], a[1] + 1)}[dist.kind](low_high)
    seed = int(plan.hash, 16) % 2**31  # reproducible per study, different across studies
    sampler = (optuna.samplers.TPESampler(seed=seed) if spec.search.algorithm == "optuna"
               else optuna.samplers.RandomSampler(seed=seed))
    searcher: Any = OptunaSearch(sampler=sampler, metric=spec.metric, mode=spec.mode)
    if len(spec.seeds) > 1:
        searcher = Repeater(searcher, repeat=len(spec.seeds))
    config = tune.TuneConfig(metric=spec.metric, mode=spec.mode, search_alg=searcher,
                             scheduler=scheduler,
                             num_samples=spec.search.num_samples * len(spec.seeds),
                             reuse_actors=True, max_concurrent_trials=spec.max_concurrent)
    return space, config


@dataclass(frozen=True)
class StudyOutcome:
    rows: list[TrialRow]
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
        return sum(r.status == TERMINATED for r in self.rows)


def run_study(plan: Plan, storage: str, tracking_uri: str, address: str | None,
              quiet: bool = False) -> StudyOutcome:
    """Runs (or resumes) the study ``plan`` until it completes or the driver is stopped.

    ``address`` is an existing Ray cluster (else ``RAY_ADDRESS``, else a local Ray); connecting
    to one that uses token authentication needs ``RAY_AUTH_MODE=token`` in the environment,
    which is the caller's to set.
    """
    from ablate.data import load
    from ablate.data.source import ensure_store
    from ablate.study.adopt import plan_attempt
    from ablate.study.mlflow_view import view_state
    from ablate.study.raycluster import connect_ray
    from ablate.study.tracking import StudyTracker, check_study, connect, trial_runs
    from ablate.study.tunestate import tune_state

    start = time.monotonic()
    spec = plan.spec
    study_dir = StudyDir.at(storage, spec.name)
    study_dir.check_writable()
    record = study_dir.read_record()
    if record is not None and record["spec_hash"] != plan.hash:
        changed = changed_keys(record, plan)
        raise AblateError(
            f"study '{spec.name}' at {study_dir.root} was created from a different plan "
            f"(hash {record['spec_hash']}, now {plan.hash})"
            + (f"; changed: {'; '.join(changed)}; to resume it, set those back" if changed
               else "")
            + f"; to run the changed study as a new one, pass --name NEW_NAME (or move "
              f"{study_dir.root} away)")
    if record is not None and plan.fused:
        try:  # a study keeps its fused groups, whatever resources it resumes with
            plan = plan.regrouped(record)
        except ConfigError as exc:
            raise AblateError(f"study '{spec.name}': {exc} ({study_dir.root}/study.json); "
                              f"restore that file from a backup, or run the study anew "
                              f"under another --name") from None
    # Ray and the tracking store take seconds each to start: a study that will probably train
    # (it did not finish last time) starts Ray while the store opens in a thread.
    progress = study_dir.read_progress() or {}
    with ThreadPoolExecutor(1, thread_name_prefix="tracking-connect") as pool:
        opened = pool.submit(connect, tracking_uri)
        if progress.get("driver") != "finished":
            connect_ray(address)
        client = opened.result()
    check_study(client, spec.name, plan.hash)
    dataset_path = ensure_store(spec.dataset)
    dataset = load(dataset_path)
    data_id = dataset.manifest["files"]["features.parquet"]["sha256"]
    if record is not None and record.get("dataset_sha256") not in (None, data_id):
        raise AblateError(f"study '{spec.name}': the dataset {dataset_path} changed since the "
                          f"study started; start a new study with --name NEW_NAME")
    attempt = plan_attempt(plan, trial_runs(client, spec.name),
                           tune_state(study_dir.tune_path), study_dir.tune_path, client)
    if attempt.note and not quiet:
        click.echo(attempt.note, err=True)
    needs_tune = attempt.restore or attempt.keys != ()
    if needs_tune:
        connect_ray(address)

    with study_dir.lock():
        if record is None:
            study_dir.write_record({
                "name": spec.name, "spec_hash": plan.hash, "spec": spec.identity(),
                "source": str(spec.source) if spec.source else None,
                "dataset": str(dataset_path), "dataset_sha256": data_id,
                "created": time.time(), **plan.record()})
        tracker = StudyTracker(client, spec.name, plan.hash)
        design = spec.design if spec.search is None else f"search ({spec.search.algorithm})"
        tracker.start_study(
            {"spec_hash": plan.hash, "design": design, "dataset": str(dataset_path),
             "seeds": list(spec.seeds), "trials": plan.total,
             "source": str(spec.source or "")},
            view=view_state(spec.metric, spec.mode,
                            spec.search.space if spec.search is not None else ()))
        ctx = StudyContext(plan=plan, tracker=tracker, study_dir=study_dir, quiet=quiet,
                           finished_before={r.info.run_id for r in tracker.finished().values()})
        grid = None
        if needs_tune:
            with active(ctx):
                grid = _fit(ctx, study_dir, attempt, dataset_path)
        planned = None if spec.search is not None else plan.keys
        rows, failed, interrupted = reconcile(ctx, grid, planned)
        ctx.save_record("interrupted" if interrupted else "failed" if failed else "finished")
        complete = not failed and not interrupted and len(rows) == ctx.total
        tracker.end_study("FINISHED" if complete else "KILLED" if interrupted else "FAILED")
    return StudyOutcome(rows=rows, total=ctx.total, failed=failed, interrupted=interrupted,
                        resumed=attempt.restore, study_dir=study_dir,
                        tracking_uri=tracking_uri, parent_run_id=tracker.parent_id,
                        seconds=time.monotonic() - start)


def _start_rungs(plan: Plan, study_dir: StudyDir) -> Any:
    """A fused study with ASHA: the Ray actor holding its rungs, seeded from the snapshot of an
    earlier run of the study; otherwise None."""
    if not plan.member_rungs:
        return None
    import ray

    from ablate.study.rungs import Rungs

    snapshot = study_dir.read_rungs()
    fresh = rungs = plan.fresh_rungs()
    assert fresh is not None  # member_rungs: ASHA
    if snapshot is not None:
        try:
            rungs = Rungs.from_json(snapshot)
            if not rungs.same_schedule(fresh):
                raise ValueError(f"milestones {list(rungs.milestones)}, reduction factor "
                                 f"{rungs.reduction_factor:g}, sign {rungs.sign:g}; the spec "
                                 f"gives {list(fresh.milestones)}, "
                                 f"{fresh.reduction_factor:g}, {fresh.sign:g}")
        except ValueError as exc:
            raise AblateError(f"{study_dir.root}/rungs.json is not a snapshot of the study's "
                              f"ASHA rungs ({exc}); restore it from a backup, or run the study "
                              f"anew under another --name") from None
    # No CPU: it must never wait for a slot the trials hold. It lives as long as the driver.
    return ray.remote(num_cpus=0)(Rungs).remote(**dataclasses.asdict(rungs))


def _fit(ctx: StudyContext, study_dir: StudyDir, attempt: Attempt, dataset_path: Path) -> Any:
    """Starts or restores the Tune experiment and runs it; returns Tune's ResultGrid."""
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    from ablate.data.source import worker_dataset
    from ablate.study.trainable import train_trial

    spec = ctx.plan.spec
    ctx.rungs = _start_rungs(ctx.plan, study_dir)
    trainable = tune.with_resources(
        tune.with_parameters(train_trial, plan=ctx.plan,
                             dataset=worker_dataset(spec.dataset, dataset_path),
                             tune_path=study_dir.tune_path, rungs=ctx.rungs),
        {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})
    if attempt.restore:  # Tune's own grid or searcher state carries on
        if not ctx.quiet:
            click.echo(f"resuming study '{spec.name}' from {study_dir.root}", err=True)
        tuner = tune.Tuner.restore(study_dir.tune_path, trainable, resume_errored=True)
    else:
        space, tune_config = _tune_setup(ctx.plan, attempt.keys or ())
        run_config = tune.RunConfig(
            name="tune", storage_path=study_dir.root, verbose=0,
            callbacks=[StudyCallback(), JsonLoggerCallback()],  # result.json: each trial's log
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2))
        tuner = tune.Tuner(trainable, param_space=space, tune_config=tune_config,
                           run_config=run_config)
    return tuner.fit()


def reconcile(ctx: StudyContext, grid: Any, planned: list[str] | None
              ) -> tuple[list[TrialRow], int, bool]:
    """Brings every trial's MLflow run up to date with Tune's results.

    A trial Tune finished is finalised from its checkpoint; a failed one is closed as FAILED;
    one cut short by a stop of the driver is closed as KILLED, never FINISHED. Planned trials
    Tune was not given are the adopted ones: their finished runs stand.

    Returns:
        ``(rows, failed, interrupted)``.
    """
    ctx.flush_epochs()  # before runs are closed: a run cut short keeps every epoch reported
    failed, interrupted = 0, False
    checkpoints: dict[str, Any] = {}
    for result in grid if grid is not None else []:
        metrics, config = result.metrics or {}, result.config or {}
        trial_id = metrics.get("trial_id")
        if trial_id is None:  # never reported: the callback saw it, if it ever ran
            continue
        checkpoints[trial_id] = result.checkpoint
        for member in ctx.members(trial_id, config):
            row = ctx.rows[member.row_id]
            if row.status == PENDING:  # restored as finished; Tune ran no step that showed it
                row.status = ERROR if result.error is not None else TERMINATED
            mine = member_result(metrics, member.trial.key) or {}
            row.epoch = int(mine.get("epoch", row.epoch))
            row.metrics = tracked_metrics(mine) or row.metrics
    for trial_id, config in ctx.configs.items():
        for member in ctx.members(trial_id, config):
            row = ctx.rows[member.row_id]
            if row.status == TERMINATED:
                finalize_member(ctx, member, checkpoints.get(trial_id))
            elif row.status == ERROR:
                failed += 1
                ctx.close_run(ctx.run_id(member), "FAILED")
            else:  # pending or cut short: the driver was stopped
                interrupted = True
                row.status = INTERRUPTED
                if member.row_id in ctx.run_ids:
                    ctx.close_run(ctx.run_ids[member.row_id], "KILLED")
    seen = {r.key for r in ctx.rows.values()}
    for key, run in ctx.tracker.finished().items():
        if planned is not None and key in planned and key not in seen:
            ctx.adopted.append(_adopted_row(run))
    rows = sorted(ctx.all_rows(), key=lambda r: (r.variant, r.seed, r.key))
    return rows, failed, interrupted


def _adopted_row(run: Any) -> TrialRow:
    tags = run.data.tags
    try:
        epoch = int(tags.get("ablate.final_epoch", "0"))
    except ValueError:
        epoch = 0
    return TrialRow(tags["ablate.trial_key"], tags.get("ablate.variant", ""),
                    int(tags.get("ablate.seed", "0")), TERMINATED, epoch,
                    {k: float(v) for k, v in run.data.metrics.items() if k in METRICS})
