"""``ablate run``: a study on Ray Tune, tracked in MLflow, resumable by running it again.

Order of work, chosen so that bad input fails before anything is written: the spec is
validated (by the caller), the storage is checked writable, the tracking store is reached, the
dataset is prepared and validated; only then are ``study.json``, MLflow runs and Ray state
created. A second run of the same command restores the Tune experiment
(``Tuner.restore(..., resume_errored=True)``): finished trials are kept, interrupted ones
continue from their last checkpoint, errored ones are retried; then every trial's MLflow run is
reconciled from its checkpoint, so results reported while the driver was down are not lost.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from ray.tune import Callback

from ablate.config import TrialConfig
from ablate.errors import AblateError
from ablate.study.plan import PlannedTrial, expand
from ablate.study.spec import StudySpec
from ablate.study.storage import StudyDir
from ablate.study.tracking import StudyTracker

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

# Tune snapshots its experiment state at most this often; small, so a killed driver loses little.
EXPERIMENT_SNAPSHOT_SECONDS = "2"


def resolve_dataset(dataset: str) -> Path:
    """The store path for a spec's ``dataset``; the synthetic default is generated on first use
    (on each node that needs it: generation is deterministic)."""
    from ablate.data.synth import SCALES, default_store

    if dataset == "synthetic" or dataset.startswith("synthetic:"):
        scale = dataset.partition(":")[2] or "small"
        if scale not in SCALES:
            raise AblateError(f"dataset: unknown synthetic scale {scale!r}; allowed: "
                              f"{', '.join(SCALES)}")
        return default_store(scale)
    path = Path(dataset).expanduser().resolve()
    if not (path / "manifest.json").exists():
        raise AblateError(f"dataset: {path} is not a feature store (no manifest.json); "
                          f"create one with `ablate data import` or `ablate data synth`")
    return path


def _worker_dataset(dataset: str, resolved: Path) -> str:
    """What workers receive: the synthetic name (regenerated per node) or an absolute path."""
    return dataset if dataset.startswith("synthetic") else str(resolved)


@dataclass
class TrialRow:
    """What the driver knows of one trial, for progress and the summary table."""

    key: str
    variant: str
    seed: int
    status: str = "PENDING"
    epoch: int = 0
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class StudyContext:
    """The live state of the running study, used by the Tune callback in the driver."""

    spec: StudySpec
    tracker: StudyTracker
    plan: dict[str, Any]
    gt: Any
    frames_per_snippet: int
    total: int
    rows: dict[str, TrialRow] = field(default_factory=dict)
    run_ids: dict[str, str] = field(default_factory=dict)  # Tune trial id -> MLflow run id
    last_progress: float = 0.0
    quiet: bool = False

    def row(self, trial: Trial) -> TrialRow:
        if trial.trial_id not in self.rows:
            key, variant, seed = trial_identity(trial.config, self.plan, trial.trial_id)
            self.rows[trial.trial_id] = TrialRow(key, variant, seed)
        return self.rows[trial.trial_id]

    def trial_config(self, config: dict[str, Any]) -> TrialConfig:
        """The resolved trial config of a Tune trial ``config``."""
        from ablate.config import resolve_trial_config
        from ablate.study.trainable import trial_raw_config

        raw, _, _ = trial_raw_config(config, self.plan)
        return resolve_trial_config(raw)

    def run_id(self, trial_id: str, config: dict[str, Any]) -> str:
        """The trial's MLflow child run, found or created once per driver."""
        if trial_id not in self.run_ids:
            key, variant, seed = trial_identity(config, self.plan, trial_id)
            self.run_ids[trial_id] = self.tracker.child(
                trial_id, key, variant, seed, self.trial_config(config).to_dict())
        return self.run_ids[trial_id]

    def progress(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.quiet or (not force and now - self.last_progress < 10):
            return
        self.last_progress = now
        counts = {s: sum(r.status == s for r in self.rows.values())
                  for s in ("TERMINATED", "RUNNING", "ERROR")}
        line = (f"[{time.strftime('%H:%M:%S')}] trials {counts['TERMINATED']}/{self.total} "
                f"done, {counts['RUNNING']} running, {counts['ERROR']} failed")
        best = self.best()
        if best is not None:
            line += (f"; best {self.spec.metric} {best.metrics[self.spec.metric]:.4f} "
                     f"({best.key}, epoch {best.epoch})")
        click.echo(line, err=True)

    def best(self) -> TrialRow | None:
        scored = [r for r in self.rows.values() if self.spec.metric in r.metrics]
        if not scored:
            return None
        sign = 1 if self.spec.mode == "max" else -1
        return max(scored, key=lambda r: sign * r.metrics[self.spec.metric])


_ACTIVE: StudyContext | None = None  # the driver's live context; the callback is stateless


def trial_identity(config: dict[str, Any], plan: dict[str, Any],
                   trial_id: str) -> tuple[str, str, int]:
    """(trial key, variant, seed) of a Tune trial config."""
    from ablate.study.trainable import trial_raw_config

    _, variant, seed = trial_raw_config(config, plan)
    return config.get("trial_key", f"search/{trial_id}"), variant, seed


class StudyCallback(Callback):
    """A Tune callback that forwards trial events to the driver's :class:`StudyContext`.

    Tune pickles its callbacks into the experiment state and restores *those* on resume. This
    class is pickled by reference (it lives at module level) and holds no state, so a restored
    callback finds the live context of the current driver, never a stale copy.
    """

    def on_trial_start(self, iteration, trials, trial, **info):
        ctx = _ACTIVE
        if ctx is None:
            return
        row = ctx.row(trial)
        row.status = "RUNNING"
        run_id = ctx.run_id(trial.trial_id, trial.config)
        if ctx.tracker.status(run_id) != "RUNNING":
            ctx.tracker.client.update_run(run_id, status="RUNNING")
        ctx.progress()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        ctx = _ACTIVE
        if ctx is None or "epoch" not in result:
            return
        row = ctx.row(trial)
        row.status, row.epoch = "RUNNING", int(result["epoch"])
        row.metrics = {k: float(result[k]) for k in ("auc", "ap", "ap_sklearn", "loss")
                       if k in result}
        run_id = ctx.run_id(trial.trial_id, trial.config)
        ctx.tracker.log_epochs(run_id, [{"epoch": row.epoch, **row.metrics}])
        ctx.progress()

    def on_trial_complete(self, iteration, trials, trial, **info):
        ctx = _ACTIVE
        if ctx is None:
            return
        ctx.row(trial).status = "TERMINATED"
        finalize_trial(ctx, trial.trial_id, trial.config, trial.checkpoint)
        ctx.progress(force=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        ctx = _ACTIVE
        if ctx is None:
            return
        ctx.row(trial).status = "ERROR"
        run_id = ctx.run_id(trial.trial_id, trial.config)
        ctx.tracker.client.set_terminated(run_id, status="FAILED")
        ctx.progress(force=True)


def finalize_trial(ctx: StudyContext, trial_id: str, config: dict[str, Any],
                   checkpoint: Any) -> None:
    """Completes a finished trial's MLflow run from its last checkpoint (idempotent)."""
    import json
    import tempfile

    from ablate.train import outputs

    run_id = ctx.run_id(trial_id, config)
    if ctx.tracker.status(run_id) == "FINISHED":
        return
    if checkpoint is None:
        ctx.tracker.client.set_terminated(run_id, status="FAILED")
        return
    with checkpoint.as_directory() as directory, tempfile.TemporaryDirectory() as scratch:
        ckpt = Path(directory)
        history = json.loads((ckpt / outputs.HISTORY).read_text())
        ctx.tracker.log_epochs(run_id, history)
        plot = Path(scratch) / "roc_pr.png"
        key, _, _ = trial_identity(config, ctx.plan, trial_id)
        write_roc_pr_plot(ckpt / outputs.SCORES, ctx.gt, ctx.frames_per_snippet, plot, title=key)
        final_dir = Path(scratch) / "checkpoint"
        final_dir.mkdir()
        (final_dir / "checkpoint.pt").symlink_to(ckpt / "checkpoint.pt")
        epochs_planned = ctx.trial_config(config).train.epochs
        last = history[-1]["epoch"] if history else 0
        ctx.tracker.finish(
            run_id,
            {"": ckpt / outputs.CONFIG, "scores": ckpt / outputs.SCORES, "plots": plot,
             "checkpoint": final_dir},
            tags={"ablate.final_epoch": str(last),
                  "ablate.stopped_early": str(last < epochs_planned).lower()})


def write_roc_pr_plot(scores_file: Path, gt: Any, frames_per_snippet: int, out: Path,
                      title: str = "") -> None:
    """ROC and precision–recall curves of one trial's final test scores."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from ablate.metrics import curves, evaluate

    with np.load(scores_file) as data:
        scores = [data[k] for k in data.files]
    c = curves(scores, gt, frames_per_snippet)
    m = evaluate(scores, gt, frames_per_snippet)
    fig, (roc, pr) = plt.subplots(1, 2, figsize=(9, 4))
    roc.plot(c.fpr, c.tpr)
    roc.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
    roc.set(xlabel="false positive rate", ylabel="true positive rate",
            title=f"ROC (AUC {m['auc']:.4f})")
    pr.plot(c.recall, c.precision)
    pr.set(xlabel="recall", ylabel="precision", title=f"PR (AP {m['ap']:.4f})")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def build_plan(spec: StudySpec, trials: list[PlannedTrial]) -> dict[str, Any]:
    """What every trial worker needs to rebuild its config (small, JSON-like)."""
    return {
        "trials": {t.key: {"raw": t.config.to_dict(), "variant": t.variant, "seed": t.seed}
                   for t in trials},
        "base": spec.base,
        "seeds": list(spec.seeds),
    }


def _tune_setup(spec: StudySpec, trials: list[PlannedTrial]):
    """(param_space, TuneConfig) for an ablation grid or a search."""
    from ray import tune

    epochs = _base_epochs(spec)
    scheduler = None
    if spec.scheduler.type == "asha":
        from ray.tune.schedulers import ASHAScheduler

        scheduler = ASHAScheduler(time_attr="epoch", max_t=epochs,
                                  grace_period=min(spec.scheduler.grace_period, epochs),
                                  reduction_factor=spec.scheduler.reduction_factor)
    if spec.search is None:
        space = {"trial_key": tune.grid_search([t.key for t in trials])}
        config = tune.TuneConfig(metric=spec.metric, mode=spec.mode, num_samples=1,
                                 scheduler=scheduler,
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
    sampler = (optuna.samplers.TPESampler(seed=0) if spec.search.algorithm == "optuna"
               else optuna.samplers.RandomSampler(seed=0))
    searcher: Any = OptunaSearch(sampler=sampler, metric=spec.metric, mode=spec.mode)
    if len(spec.seeds) > 1:
        searcher = Repeater(searcher, repeat=len(spec.seeds))
    config = tune.TuneConfig(metric=spec.metric, mode=spec.mode, search_alg=searcher,
                             scheduler=scheduler,
                             num_samples=spec.search.num_samples * len(spec.seeds),
                             max_concurrent_trials=spec.max_concurrent)
    return space, config


def _base_epochs(spec: StudySpec) -> int:
    from ablate.config import resolve_trial_config

    return resolve_trial_config({**spec.base, "seed": 0}).train.epochs


def total_trials(spec: StudySpec, trials: list[PlannedTrial]) -> int:
    return len(trials) if spec.search is None else spec.search.num_samples * len(spec.seeds)


@dataclass(frozen=True)
class StudyOutcome:
    rows: list[TrialRow]
    failed: int
    resumed: bool
    study_dir: StudyDir
    tracking_uri: str
    parent_run_id: str
    seconds: float


def run_study(spec: StudySpec, storage: str, tracking_uri: str, address: str | None,
              quiet: bool = False) -> StudyOutcome:
    """Runs (or resumes) ``spec`` to completion. The spec must already be validated."""
    import ray
    from ray import tune

    from ablate.data import load
    from ablate.study.tracking import connect

    global _ACTIVE
    start = time.monotonic()
    study_dir = StudyDir.at(storage, spec.name)
    study_dir.check_writable()
    client = connect(tracking_uri)
    record = study_dir.read_record()
    if record is not None and record["spec_hash"] != spec.spec_hash():
        raise AblateError(
            f"study '{spec.name}' at {study_dir.root} was created from a different spec "
            f"(hash {record['spec_hash']}, now {spec.spec_hash()}); to run the changed spec as "
            f"a new study pass --name NEW_NAME (or move {study_dir.root} away)")
    trials = expand(spec)
    dataset_path = resolve_dataset(spec.dataset)
    dataset = load(dataset_path)
    data_id = dataset.manifest["files"]["features.parquet"]["sha256"]
    if record is not None and record.get("dataset_sha256") not in (None, data_id):
        raise AblateError(f"study '{spec.name}': the dataset {dataset_path} changed since the "
                          f"study started; start a new study with --name NEW_NAME")

    with study_dir.lock():
        if record is None:
            study_dir.write_record({
                "name": spec.name, "spec_hash": spec.spec_hash(), "spec": spec.identity(),
                "source": str(spec.source) if spec.source else None,
                "dataset": str(dataset_path), "dataset_sha256": data_id,
                "trials": [t.key for t in trials], "created": time.time()})
        tracker = StudyTracker(client, spec.name, spec.spec_hash())
        design = spec.design if spec.search is None else f"search ({spec.search.algorithm})"
        tracker.start_study({"spec_hash": spec.spec_hash(), "design": design,
                             "dataset": str(dataset_path), "seeds": list(spec.seeds),
                             "trials": total_trials(spec, trials),
                             "source": str(spec.source or "")})
        plan = build_plan(spec, trials)
        ctx = StudyContext(spec=spec, tracker=tracker, plan=plan,
                           gt=dataset.test_frame_labels(),
                           frames_per_snippet=dataset.frames_per_snippet,
                           total=total_trials(spec, trials), quiet=quiet)
        os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", EXPERIMENT_SNAPSHOT_SECONDS)
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        if not ray.is_initialized():
            ray.init(address=address or os.environ.get("RAY_ADDRESS") or "local",
                     include_dashboard=False, log_to_driver=False,
                     logging_level="ERROR", configure_logging=True)
        from ablate.study.trainable import train_trial

        trainable = tune.with_resources(
            tune.with_parameters(train_trial, plan=plan,
                                 dataset=_worker_dataset(spec.dataset, dataset_path),
                                 tune_path=study_dir.tune_path),
            {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu})
        space, tune_config = _tune_setup(spec, trials)
        resumed = tune.Tuner.can_restore(study_dir.tune_path)
        _ACTIVE = ctx
        try:
            if resumed:
                if not quiet:
                    click.echo(f"resuming study '{spec.name}' from {study_dir.root}", err=True)
                tuner = tune.Tuner.restore(study_dir.tune_path, trainable,
                                           resume_errored=True, param_space=space)
            else:
                run_config = tune.RunConfig(
                    name="tune", storage_path=study_dir.root, verbose=0,
                    callbacks=[StudyCallback()],
                    failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=2))
                tuner = tune.Tuner(trainable, param_space=space, tune_config=tune_config,
                                   run_config=run_config)
            grid = tuner.fit()
            rows, failed = reconcile(ctx, grid)
        finally:
            _ACTIVE = None
        tracker.end_study("FINISHED" if not failed and len(rows) == ctx.total else "FAILED")
    return StudyOutcome(rows=rows, failed=failed, resumed=resumed, study_dir=study_dir,
                        tracking_uri=tracking_uri, parent_run_id=tracker.parent_id,
                        seconds=time.monotonic() - start)


def reconcile(ctx: StudyContext, grid: Any) -> tuple[list[TrialRow], int]:
    """Brings every trial's MLflow run up to date with Tune's results; returns the rows."""
    rows, failed = [], 0
    for result in grid:
        metrics = result.metrics or {}
        trial_id = metrics.get("trial_id") or Path(result.path).name
        config = result.config or {}
        key, variant, seed = trial_identity(config, ctx.plan, trial_id)
        row = TrialRow(key, variant, seed, epoch=int(metrics.get("epoch", 0)),
                       metrics={k: float(metrics[k]) for k in ("auc", "ap") if k in metrics})
        if result.error is not None:
            row.status = "ERROR"
            failed += 1
            ctx.tracker.client.set_terminated(ctx.run_id(trial_id, config), status="FAILED")
        else:
            row.status = "TERMINATED"
            finalize_trial(ctx, trial_id, config, result.checkpoint)
        rows.append(row)
    rows.sort(key=lambda r: (r.variant, r.seed, r.key))
    return rows, failed
