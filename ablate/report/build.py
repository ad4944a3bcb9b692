"""Building a study's report from MLflow, writing it under ``--out`` and logging it to MLflow."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ablate.report.collect import MissingTrial, StudyRuns, TrialRun, collect, metric_history
from ablate.report.search import (
    ConfigRow,
    best_configs,
    common_budget,
    importances,
    search_keys,
)
from ablate.report.table import VariantRow, ablation_rows, planned_variants

if TYPE_CHECKING:
    from mlflow import MlflowClient

ARTIFACT_PATH = "report"
PLOTS_DIR = "plots"
NO_BASE = ("no base variant '{base}' among the finished runs; deltas are left out (the spec's "
           "base_name names it)")
NO_DATASET = "ROC/PR curves left out: the dataset {path} cannot be read here ({problem})"
NO_SCORES = "ROC/PR curves left out: run {run_id} has no scores/scores.npz artifact"
NO_BUDGET = ("parameter importances left out: no epoch at which every finished trial logged "
             "{metric}")
TEST_TUNED = ("TEST-TUNED: this study selected on the test metric {metric} (select_on_test: "
              "true); its test numbers are optimistic and not comparable to held-out results")
SCORES_MISMATCH = ("ROC/PR curves left out: the scores of run {run_id} do not match the "
                   "dataset's test videos ({problem})")


@dataclass(frozen=True)
class Figure:
    """One plot: a file stem, a heading, a caption and the PNG bytes."""

    name: str
    title: str
    caption: str
    png: bytes


@dataclass(frozen=True)
class DiagnosticRow:
    """Mean final diagnostics of one variant over its seeds: CLAV's gate on abnormal and normal
    test snippets, CoMo's attention entropy and temperature per relation (NaN when absent)."""

    variant: str
    n: int
    values: dict[str, float]


DIAGNOSTICS = ("gate_abnormal", "gate_normal", "como.context_motion.entropy",
               "como.context_motion.temperature", "como.context.entropy",
               "como.motion.entropy")


def diagnostic_rows(finished: list[TrialRun], variants: list[str]) -> list[DiagnosticRow]:
    """One row per variant that reported any diagnostic, means over its finished runs."""
    import math
    import statistics

    rows = []
    for variant in variants:
        runs = [r for r in finished if r.variant == variant]
        values = {}
        for name in DIAGNOSTICS:
            seen = [r.metrics[name] for r in runs if name in r.metrics]
            values[name] = statistics.mean(seen) if seen else math.nan
        if runs and any(not math.isnan(v) for v in values.values()):
            rows.append(DiagnosticRow(variant, len(runs), values))
    return rows


@dataclass
class Report:
    """Everything the renderers need; built by :func:`build_report`."""

    study: str
    tracking_uri: str
    parent_run_id: str
    spec_hash: str | None
    design: str | None
    dataset: str | None
    metric: str
    mode: str
    base: str | None
    is_search: bool
    rows: list[VariantRow]
    planned: int | None
    finished: int
    missing: list[MissingTrial]
    best: TrialRun | None
    n_boot: int
    seed: int
    configs: list[ConfigRow] = field(default_factory=list)
    search_params: list[str] = field(default_factory=list)
    importances: dict[str, float] = field(default_factory=dict)
    search_trials: list[TrialRun] = field(default_factory=list)  # a search's finished trials
    importance_epoch: int | None = None  # the common budget the importances compare at
    stopped_early: int = 0  # search trials the scheduler stopped before the longest ones
    test_tuned: bool = False  # selection used a test metric (the spec said select_on_test)
    diagnostics: list[DiagnosticRow] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    generated: str = ""

    @property
    def complete(self) -> bool:
        return not self.missing and (self.planned is None or self.finished >= self.planned)


def _best_run(finished: list[TrialRun], metric: str, mode: str) -> TrialRun | None:
    scored = [r for r in finished if metric in r.metrics]
    if not scored:
        return None
    sign = 1.0 if mode == "max" else -1.0
    return max(scored, key=lambda r: sign * r.metrics[metric])


def _mean_curve(client: MlflowClient, run_ids: list[str], metric: str) -> dict[int, float]:
    """Per-epoch mean over runs; an epoch averages the runs that reached it."""
    sums: dict[int, list[float]] = {}
    for run_id in run_ids:
        for epoch, value in metric_history(client, run_id, metric).items():
            sums.setdefault(epoch, []).append(value)
    return {e: sum(v) / len(v) for e, v in sorted(sums.items())}


def _roc_figure(client: MlflowClient, runs: StudyRuns, best: TrialRun,
                notes: list[str]) -> Figure | None:
    import numpy as np

    from ablate.data import load
    from ablate.errors import AblateError
    from ablate.metrics import curves, evaluate
    from ablate.report import plots
    from ablate.report.collect import trial_scores

    if runs.dataset is None:
        return None
    try:
        dataset = load(runs.dataset)
    except (AblateError, OSError) as exc:
        notes.append(NO_DATASET.format(path=runs.dataset, problem=exc))
        return None
    with tempfile.TemporaryDirectory() as scratch:
        scores = trial_scores(client, best.run_id, Path(scratch))
    if scores is None:
        notes.append(NO_SCORES.format(run_id=best.run_id))
        return None
    test_ids = dataset.video_ids("test")
    absent = [v for v in test_ids if v not in scores]
    if absent:
        notes.append(SCORES_MISMATCH.format(run_id=best.run_id,
                                            problem=f"{len(absent)} test videos have no scores"))
        return None
    ordered = [np.asarray(scores[v]) for v in test_ids]
    gt = dataset.test_frame_labels()
    try:
        c = curves(ordered, gt, dataset.frames_per_snippet)
        m = evaluate(ordered, gt, dataset.frames_per_snippet)
    except ValueError as exc:
        notes.append(SCORES_MISMATCH.format(run_id=best.run_id, problem=exc))
        return None
    return Figure("roc_pr", f"ROC and precision–recall of the best run ({best.key})",
                  f"Frame-level test curves of run {best.run_id} ({best.key}), the best final "
                  f"{runs.metric} of the study.",
                  plots.roc_pr(c, m["auc"], m["ap"], best.key))


def build_report(client: MlflowClient, study: str, storage: str, n_boot: int = 10_000,
                 seed: int = 0, top_k: int = 5) -> Report:
    """Reads the study and computes its tables and figures.

    Args:
        client: A connected MLflow client.
        study: The study name.
        storage: Where ``ablate run`` kept ``STUDY/study.json``.
        n_boot: Bootstrap resamples per confidence interval.
        seed: RNG seed of the bootstrap and permutation tests (and the fANOVA forest).
        top_k: Configurations listed for a search study.

    Raises:
        AblateError: The study is not in the tracking store.
    """
    from ablate.report import plots

    runs = collect(client, study, storage)
    notes = list(runs.notes)
    finished = runs.finished
    metric, mode = runs.metric, runs.mode
    base = runs.base_name
    variants = planned_variants(runs.planned_keys) or sorted({r.variant for r in runs.runs})
    if base is not None and base not in {r.variant for r in finished}:
        notes.append(NO_BASE.format(base=base))
        base_for_deltas = None
    else:
        base_for_deltas = base
    rows = ablation_rows(finished, variants, base_for_deltas, metric, mode, n_boot, seed)
    report = Report(
        study=study, tracking_uri=runs.tracking_uri, parent_run_id=runs.parent_run_id,
        spec_hash=runs.parent_params.get("spec_hash"), design=_design(runs),
        dataset=runs.dataset, metric=metric, mode=mode, base=base_for_deltas,
        is_search=runs.is_search, rows=rows, planned=runs.planned_count,
        finished=len(finished), missing=runs.missing(), best=_best_run(finished, metric, mode),
        n_boot=n_boot, seed=seed, notes=notes, test_tuned=runs.select_on_test,
        diagnostics=diagnostic_rows(finished, variants),
        generated=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))

    if runs.select_on_test:
        notes.insert(0, TEST_TUNED.format(metric=metric))
    if runs.is_search:
        space = runs.search_space
        report.search_params = search_keys(finished, space)
        report.search_trials = finished
        report.configs = best_configs(finished, report.search_params, metric, mode, top_k)
        budget = common_budget({r.run_id: metric_history(client, r.run_id, metric)
                                for r in finished})
        report.importance_epoch, report.stopped_early = budget.epoch, budget.stopped_early
        if budget.epoch is None and finished:
            notes.append(NO_BUDGET.format(metric=metric))
        else:
            report.importances, more = importances(finished, space, metric, mode, seed,
                                                   values=budget.values)
            notes.extend(more)
        groups = [(f"#{c.rank}", {m: {s: _value(runs, rid, m) for s, rid in c.run_ids.items()}
                                  for m in ("auc", "ap")}) for c in report.configs]
        curve_runs = {f"#{c.rank}": list(c.run_ids.values()) for c in report.configs}
        what = f"the {len(report.configs)} best configurations"
    else:
        groups = [(r.variant, r.by_seed) for r in rows if r.n]
        curve_runs = {r.variant: list(r.run_ids.values()) for r in rows if r.n}
        what = "each variant"
    if groups:
        report.figures.append(Figure(
            "seeds", "Per-seed results",
            f"Final test AUC and AP of every seed of {what} (points), their mean (mark) and "
            f"±1 sample std (bar).", plots.seed_points(groups)))
        report.figures.append(Figure(
            "learning_curves", "Learning curves",
            f"{metric_label(metric)} per epoch, mean over the seeds of {what}.",
            plots.learning_curves({label: _mean_curve(client, ids, metric)
                                   for label, ids in curve_runs.items()}, metric)))
    if report.importances:
        report.figures.append(Figure(
            "importances", "Parameter importances",
            importance_caption(report), plots.importance_bars(report.importances)))
    if report.best is not None:
        figure = _roc_figure(client, runs, report.best, notes)
        if figure is not None:
            report.figures.append(figure)
    return report


def metric_label(metric: str) -> str:
    """How a caption names a metric: test metrics are frame-level, validation ones video-level."""
    from ablate.metrics import VALIDATION_METRICS

    if metric in VALIDATION_METRICS:
        return f"Validation {metric.removeprefix('val_').upper()} (video-level)"
    return f"Test {metric.upper()} (frame-level)"


def importance_caption(report: Report) -> str:
    """What the importances measure: the metric at the common budget, and why that one."""
    text = (f"fANOVA importance of each search parameter for {report.metric} at epoch "
            f"{report.importance_epoch}, the last epoch every one of the {report.finished} "
            f"finished trials reached")
    if report.stopped_early:
        text += (f" ({report.stopped_early} were stopped early by the scheduler; comparing "
                 f"final values would partly measure when a trial was stopped)")
    return text + "."


def _design(runs: StudyRuns) -> str | None:
    """``leave_one_out``, ``grid``, ...; for a search ``search (optuna)`` (its parent run's
    ``design`` param holds the unused ablation default)."""
    if runs.is_search:
        algorithm = (runs.spec.get("search") or {}).get("algorithm")
        return f"search ({algorithm})" if algorithm else "search"
    return runs.spec.get("design") or runs.parent_params.get("design")


def _value(runs: StudyRuns, run_id: str, metric: str) -> float:
    run = next(r for r in runs.runs if r.run_id == run_id)
    return run.metrics.get(metric, float("nan"))


def write_report(report: Report, out: Path) -> list[Path]:
    """Writes the report's files under ``out``; returns them."""
    from ablate.report import render

    out.mkdir(parents=True, exist_ok=True)
    plots_dir = out / PLOTS_DIR
    plots_dir.mkdir(exist_ok=True)
    for stale in plots_dir.glob("*.png"):  # a figure left out this time must not linger
        stale.unlink()
    files = {
        "index.html": render.html(report),
        "ablation.md": render.markdown(report),
        "ablation.tex": render.latex(report),
        "ablation.json": render.json_rows(report),
    }
    if report.is_search:
        files["search.json"] = render.json_search(report)
    written = []
    for name, text in files.items():
        path = out / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    for figure in report.figures:
        path = plots_dir / f"{figure.name}.png"
        path.write_bytes(figure.png)
        written.append(path)
    return written


def log_report(client: MlflowClient, report: Report, out: Path, files: list[Path]) -> None:
    """Logs the written files as artifacts of the study's parent run, under ``report/``.

    Only the report's own files: anything else a user keeps in ``out`` stays local.
    """
    for path in files:
        folder = path.parent.relative_to(out).as_posix()
        where = ARTIFACT_PATH if folder == "." else f"{ARTIFACT_PATH}/{folder}"
        client.log_artifact(report.parent_run_id, str(path), artifact_path=where)
