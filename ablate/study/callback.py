"""The driver's view of a running study: trial rows, the Tune callback, MLflow finalisation.

Tune calls :class:`StudyCallback` in the driver process; it forwards every event to the live
:class:`StudyContext`, which logs to MLflow (the only writer), prints progress, and keeps the
study's plain progress record (``trials.json``, read by ``ablate status``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from ray.tune import Callback

from ablate.config import TrialConfig
from ablate.study.identity import TrialIdentity, identify
from ablate.study.spec import StudySpec
from ablate.study.storage import StudyDir
from ablate.study.tracking import StudyTracker

if TYPE_CHECKING:
    from ray.tune.experiment import Trial

# Tune's trial states, and what a row shows for them.
PENDING, RUNNING, TERMINATED, ERROR = "PENDING", "RUNNING", "TERMINATED", "ERROR"
INTERRUPTED = "INTERRUPTED"  # cut short by a stop of the driver; resumes on the next run
SHOWN = {PENDING: "pending", RUNNING: "running", TERMINATED: "done", ERROR: "failed",
         INTERRUPTED: "interrupted", "PAUSED": "interrupted"}
PROGRESS_SECONDS = 10


@dataclass
class TrialRow:
    """What the driver knows of one trial, for progress, the summary and ``trials.json``."""

    key: str
    variant: str
    seed: int
    status: str = PENDING
    epoch: int = 0
    metrics: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "variant": self.variant, "seed": self.seed,
                "state": SHOWN.get(self.status, self.status.lower()), "epoch": self.epoch,
                **{k: v for k, v in self.metrics.items() if k in ("auc", "ap")}}


@dataclass
class StudyContext:
    """The live state of the running study, used by the Tune callback in the driver."""

    spec: StudySpec
    tracker: StudyTracker
    plan: dict[str, Any]
    study_dir: StudyDir
    gt: Any
    frames_per_snippet: int
    total: int
    rows: dict[str, TrialRow] = field(default_factory=dict)  # by Tune trial id
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)  # Tune trial id -> config
    adopted: list[TrialRow] = field(default_factory=list)  # finished runs Ray does not run
    finished_before: set[str] = field(default_factory=set)  # run ids FINISHED at the start
    run_ids: dict[str, str] = field(default_factory=dict)  # Tune trial id -> MLflow run id
    last_progress: float = 0.0
    last_record: float = 0.0
    quiet: bool = False

    def identity(self, config: dict[str, Any]) -> TrialIdentity:
        return identify(config, self.plan)

    def row(self, trial: Trial) -> TrialRow:
        return self.row_of(trial.trial_id, trial.config)

    def row_of(self, trial_id: str, config: dict[str, Any]) -> TrialRow:
        if trial_id not in self.rows:
            ident = self.identity(config)
            self.rows[trial_id] = TrialRow(ident.key, ident.variant, ident.seed)
            self.configs[trial_id] = config
        return self.rows[trial_id]

    def trial_config(self, config: dict[str, Any]) -> TrialConfig:
        """The resolved trial config of a Tune trial ``config``."""
        from ablate.config import resolve_trial_config
        from ablate.study.identity import trial_raw_config

        raw, _ = trial_raw_config(config, self.plan)
        return resolve_trial_config(raw)

    def run_id(self, trial_id: str, config: dict[str, Any]) -> str:
        """The trial's MLflow child run, found by its identity or created, once per driver."""
        if trial_id not in self.run_ids:
            self.run_ids[trial_id] = self.tracker.child(
                self.identity(config), trial_id, self.trial_config(config).to_dict())
        return self.run_ids[trial_id]

    def all_rows(self) -> list[TrialRow]:
        return [*self.adopted, *self.rows.values()]

    def counts(self) -> dict[str, int]:
        rows = self.all_rows()
        return {s: sum(r.status == s for r in rows) for s in (TERMINATED, RUNNING, ERROR)}

    def progress(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last_record >= PROGRESS_SECONDS:
            self.save_record("running")
        if self.quiet or (not force and now - self.last_progress < PROGRESS_SECONDS):
            return
        self.last_progress = now
        counts = self.counts()
        line = (f"[{time.strftime('%H:%M:%S')}] trials {counts[TERMINATED]}/{self.total} "
                f"done, {counts[RUNNING]} running, {counts[ERROR]} failed")
        best = self.best()
        if best is not None:
            line += (f"; best {self.spec.metric} {best.metrics[self.spec.metric]:.4f} "
                     f"({best.key}, epoch {best.epoch})")
        click.echo(line, err=True)

    def save_record(self, driver: str) -> None:
        """Writes ``trials.json``: the driver's state and one entry per known trial."""
        self.last_record = time.monotonic()
        rows = sorted(self.all_rows(), key=lambda r: (r.variant, r.seed, r.key))
        self.study_dir.write_progress({"driver": driver, "updated": time.time(),
                                       "total": self.total,
                                       "trials": [r.to_json() for r in rows]})

    def best(self) -> TrialRow | None:
        scored = [r for r in self.all_rows() if self.spec.metric in r.metrics]
        if not scored:
            return None
        sign = 1 if self.spec.mode == "max" else -1
        return max(scored, key=lambda r: sign * r.metrics[self.spec.metric])

    def close_run(self, run_id: str, status: str) -> None:
        """Closes an unfinished trial's run as ``FAILED`` or ``KILLED`` (never an adopted one)."""
        if not self.is_adopted(run_id):
            self.tracker.stop(run_id, status)

    def is_adopted(self, run_id: str) -> bool:
        """A run that was FINISHED before this driver started is never reopened, even if Ray
        runs its trial again (a Ray state that lags behind MLflow)."""
        return run_id in self.finished_before


_ACTIVE: StudyContext | None = None  # the driver's live context; the callback is stateless


def activate(ctx: StudyContext | None) -> None:
    global _ACTIVE
    _ACTIVE = ctx


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
        for trial in trials:  # Tune's own view: trials restored as finished fire no event
            row = ctx.row(trial)
            row.status = trial.status
            if row.status == TERMINATED and not row.metrics and trial.last_result:
                row.epoch = int(trial.last_result.get("epoch", 0))
                row.metrics = tracked_metrics(trial.last_result)

    def on_trial_start(self, iteration, trials, trial, **info):
        ctx = _ACTIVE
        if ctx is None:
            return
        ctx.row(trial).status = RUNNING
        run_id = ctx.run_id(trial.trial_id, trial.config)
        if not ctx.is_adopted(run_id) and ctx.tracker.status(run_id) != RUNNING:
            ctx.tracker.client.update_run(run_id, status=RUNNING)
        ctx.progress()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        ctx = _ACTIVE
        if ctx is None or "epoch" not in result:
            return
        row = ctx.row(trial)
        row.status, row.epoch = RUNNING, int(result["epoch"])
        row.metrics = tracked_metrics(result)
        run_id = ctx.run_id(trial.trial_id, trial.config)
        if not ctx.is_adopted(run_id):
            ctx.tracker.log_epochs(run_id, [{"epoch": row.epoch, **row.metrics}])
        ctx.progress()

    def on_trial_complete(self, iteration, trials, trial, **info):
        ctx = _ACTIVE
        if ctx is None:
            return
        ctx.row(trial).status = TERMINATED
        finalize_trial(ctx, trial.trial_id, trial.config, trial.checkpoint)
        ctx.progress(force=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        ctx = _ACTIVE
        if ctx is None:
            return
        ctx.row(trial).status = ERROR
        ctx.close_run(ctx.run_id(trial.trial_id, trial.config), "FAILED")
        ctx.progress(force=True)


def tracked_metrics(result: dict[str, Any]) -> dict[str, float]:
    from ablate.metrics import is_tracked

    return {k: float(v) for k, v in result.items()
            if is_tracked(k) and isinstance(v, (int, float))}


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
        ctx.tracker.stop(run_id, "FAILED")
        return
    with checkpoint.as_directory() as directory, tempfile.TemporaryDirectory() as scratch:
        ckpt = Path(directory)
        history = json.loads((ckpt / outputs.HISTORY).read_text())
        ctx.tracker.log_epochs(run_id, history)
        artifacts: dict[str, Path] = {"": ckpt / outputs.CONFIG}
        if (ckpt / outputs.SCORES).exists():  # absent when stopped before test was first scored
            plot = Path(scratch) / "roc_pr.png"
            key = ctx.identity(config).key
            write_roc_pr_plot(ckpt / outputs.SCORES, ctx.gt, ctx.frames_per_snippet, plot,
                              title=key)
            artifacts |= {"scores": ckpt / outputs.SCORES, "plots": plot}
        final_dir = Path(scratch) / "checkpoint"
        final_dir.mkdir()
        (final_dir / "checkpoint.pt").symlink_to(ckpt / "checkpoint.pt")
        epochs_planned = ctx.trial_config(config).train.epochs
        last = history[-1]["epoch"] if history else 0
        ctx.tracker.finish(
            run_id,
            {**artifacts, "checkpoint": final_dir},
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
