"""Building a study's :class:`~ablate.report.model.Report` from what was read of it: its runs,
the per-epoch history of its metric and the best run's test scores.

Pure computation: the reading is :mod:`ablate.report.collect` and :mod:`ablate.report.scores`,
the output :mod:`ablate.report.render` and :mod:`ablate.report.publish`.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ablate.metrics import METRIC_LABELS, TABLE_METRICS, VALIDATION_METRICS, curves, evaluate
from ablate.report.collect import StudyRuns
from ablate.report.convergence import NOT_CONVERGED, rank_agreement, variant_convergence
from ablate.report.model import (
    DiagnosticRow,
    Figure,
    ImportanceBars,
    LearningCurves,
    Report,
    RocPr,
    SeedPoints,
)
from ablate.report.scores import SCORES_MISMATCH, BestScores
from ablate.report.search import (
    TOP_K,
    Budget,
    ConfigRow,
    ConfirmedRow,
    best_configs,
    common_budget,
    confirmed_configs,
    importances,
    search_keys,
)
from ablate.report.table import VariantRow, ablation_rows
from ablate.stats.decide import Looks, Rule
from ablate.study.design import AdaptiveSeeds
from ablate.tracking.runs import TrialRun

NO_BASE = ("no base variant '{base}' among the finished runs; deltas are left out (the spec's "
           "base_name names it)")
NO_BUDGET = ("parameter importances left out: no epoch at which every finished trial logged "
             "{metric}")
TEST_TUNED = ("TEST-TUNED: this study selected on the test metric {metric} (select_on_test: "
              "true); its test numbers are optimistic and not comparable to held-out results")
DIAGNOSTICS = ("gate_abnormal", "gate_normal", "como.context_motion.entropy",
               "como.context_motion.temperature", "como.context.entropy",
               "como.motion.entropy")


def build_report(runs: StudyRuns, histories: Mapping[str, dict[int, float]],
                 best_scores: BestScores | None = None, score_notes: Sequence[str] = (),
                 seed: int = 0, top_k: int = TOP_K,
                 validation: Mapping[str, Mapping[int, float]] | None = None) -> Report:
    """The report of a study: its tables, statistics, diagnostics, figures and notes.

    Args:
        runs: The study's runs (:func:`ablate.report.collect.collect`).
        histories: ``{run_id: {epoch: value}}`` of the study's metric for the finished runs
            (:func:`ablate.report.collect.metric_histories`); a run left out logged none.
        best_scores: The best run's test scores, for the ROC/PR figure
            (:func:`ablate.report.scores.read_best_scores`).
        score_notes: Why ``best_scores`` are missing, if they are.
        seed: RNG seed of the fANOVA forest.
        top_k: Configurations listed for a search study.
        validation: ``{run_id: {epoch: val_auc}}`` of the finished runs, for the convergence
            diagnostic; None leaves it out.
    """
    notes = list(runs.notes)
    finished = runs.finished
    metric, mode = runs.metric, runs.mode
    base = runs.base_name
    variants = runs.planned_variants or sorted({r.variant for r in runs.runs})
    if base is not None and base not in {r.variant for r in finished}:
        notes.append(NO_BASE.format(base=base))
        base = None
    rule, looks, adaptive = decision_design(runs, len(variants) - 1)
    rows = ablation_rows(finished, variants, base, metric, mode, rule, looks)
    if base is not None and not runs.is_search:
        notes.extend(design_notes(rows, looks, adaptive))
    if runs.select_on_test:
        notes.insert(0, TEST_TUNED.format(metric=metric))

    search = _search_part(runs, histories, seed, top_k) if runs.is_search else SearchPart()
    notes.extend(search.notes)
    configs, found, budget = search.configs, search.importances, search.budget
    figures = _seed_figures(runs, rows, configs, histories)
    if found:
        figures.append(Figure(
            "importances", "Parameter importances",
            importance_caption(metric, budget.epoch, len(search.trials), budget.stopped_early),
            ImportanceBars(found)))
    if best_scores is not None:
        roc = _roc_figure(best_scores, metric)
        if isinstance(roc, Figure):
            figures.append(roc)
        else:
            notes.append(roc)
    notes.extend(score_notes)
    diagnostics = diagnostic_rows(finished, variants, validation)
    late = [d for d in diagnostics if d.convergence and d.convergence.converged is False]
    if late:
        notes.append(NOT_CONVERGED.format(
            variants=", ".join(d.variant for d in late),
            worst=100 * min(d.convergence.gain for d in late)))  # type: ignore[union-attr,misc]

    return Report(
        study=runs.name, tracking_uri=runs.tracking_uri, parent_run_id=runs.parent_run_id,
        spec_hash=runs.parent_params.get("spec_hash"), design=_design(runs),
        dataset=runs.dataset, metric=metric, mode=mode, base=base, is_search=runs.is_search,
        rows=tuple(rows), planned=runs.planned_count, finished=len(finished),
        missing=tuple(runs.missing()), best=runs.best, seed=seed, rule=rule, looks=looks,
        adaptive=adaptive,
        configs=tuple(configs), search_params=tuple(search.params), importances=found,
        search_trials=tuple(search.trials), confirmed=tuple(search.confirmed),
        importance_epoch=budget.epoch, stopped_early=budget.stopped_early,
        test_tuned=runs.select_on_test, diagnostics=tuple(diagnostics),
        agreement=rank_agreement(finished, rule.metric),
        figures=tuple(figures), notes=tuple(notes),
        generated=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()))


@dataclass(frozen=True)
class SearchPart:
    """What a report says of a search: its trials (without a confirmation's), parameters,
    best configurations, importances at a common budget and confirmed configurations."""

    trials: list[TrialRun] = field(default_factory=list)
    params: list[str] = field(default_factory=list)
    configs: list[ConfigRow] = field(default_factory=list)
    importances: dict[str, float] = field(default_factory=dict)
    budget: Budget = field(default_factory=lambda: Budget(None, {}, 0))
    confirmed: list[ConfirmedRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _search_part(runs: StudyRuns, histories: Mapping[str, dict[int, float]], seed: int,
                 top_k: int) -> SearchPart:
    metric, mode, notes = runs.metric, runs.mode, []
    searched = set(runs.spec.get("seeds") or [])
    confirm = runs.spec.get("confirm") or {}
    confirming = set(confirm.get("seeds") or [])
    trials = [r for r in runs.finished if not confirming or r.seed in searched]
    params = search_keys(trials, runs.search_space)
    budget = common_budget({r.run_id: histories.get(r.run_id, {}) for r in trials})
    found: dict[str, float] = {}
    if budget.epoch is None and trials:
        notes.append(NO_BUDGET.format(metric=metric))
    else:
        found, more = importances(trials, runs.search_space, metric, mode, seed,
                                  values=budget.values)
        notes.extend(more)
    confirmed = (confirmed_configs(runs.finished, params, metric, mode, searched, confirming)
                 if confirming else [])
    gaps = [row.gap for row in confirmed if row.gap is not None]
    if gaps:
        notes.append(WINNERS_CURSE.format(k=len(gaps), metric=metric,
                                          gap=100 * sum(gaps) / len(gaps)))
    return SearchPart(trials, params, best_configs(trials, params, metric, mode, top_k), found,
                      budget, confirmed, notes)


WINNERS_CURSE = ("winner's curse, measured: the {k} confirmed configuration(s) scored "
                 "{gap:+.2f} points of {metric} more in the search than on fresh seeds, on "
                 "average")


def decision_design(runs: StudyRuns, comparisons: int) -> tuple[Rule, Looks, bool]:
    """The study's decision rule and looks, from its spec (defaults without ``study.json``:
    one look at the most seeds a variant finished)."""
    spec = runs.spec
    rule = Rule(**spec["decision"]) if isinstance(spec.get("decision"), dict) else Rule()
    if isinstance(spec.get("adaptive"), dict):
        return rule, AdaptiveSeeds(**spec["adaptive"]).looks(comparisons, rule.alpha), True
    seeds = len(spec.get("seeds") or []) or max(
        (len({r.seed for r in runs.finished if r.variant == v}) for v in
         {r.variant for r in runs.finished}), default=1)
    return rule, Looks.fixed(seeds, comparisons, rule.alpha), False


ADAPTIVE_SPENT = ("adaptive seeds: {run} trials run of the {fixed} that {most} seeds for every "
                  "variant would take ({saved} saved); decided at {at}")


def design_notes(rows: Sequence[VariantRow], looks: Looks, adaptive: bool) -> list[str]:
    """What the design could decide and what adaptive seeds spent."""
    comparisons = [r.comparison for r in rows if r.comparison is not None]
    notes = sorted({c.why for c in comparisons if c.why})
    if adaptive:
        run = sum(r.n for r in rows)
        fixed = len(rows) * looks.seeds[-1]
        at = ", ".join(f"{c.variant} {c.decision} at {c.decided_at}" for c in comparisons
                       if c.decided_at is not None) or "none"
        notes.append(ADAPTIVE_SPENT.format(run=run, fixed=fixed, most=looks.seeds[-1],
                                           saved=fixed - run, at=at))
    deciding = [f"{n} (alpha {a:.3g})" for n, a in zip(looks.seeds, looks.difference,
                                                       strict=True) if a]
    if len(looks.seeds) > 1:
        notes.append("better/worse decidable at " + (", ".join(deciding) or "no look")
                     + f"; equivalence at every look (alpha {looks.equivalence[0]:.3g} each)")
    return notes


def diagnostic_rows(finished: list[TrialRun], variants: list[str],
                    validation: Mapping[str, Mapping[int, float]] | None = None,
                    ) -> list[DiagnosticRow]:
    """One row per variant that reported any diagnostic or has validation histories, means
    over its finished runs."""
    rows = []
    for variant in variants:
        runs = [r for r in finished if r.variant == variant]
        values = {}
        for name in DIAGNOSTICS:
            seen = [r.metrics[name] for r in runs if name in r.metrics]
            values[name] = statistics.mean(seen) if seen else math.nan
        convergence = (variant_convergence(validation, [r.run_id for r in runs])
                       if validation is not None else None)
        known = convergence is not None and convergence.gain is not None
        if runs and (known or any(not math.isnan(v) for v in values.values())):
            rows.append(DiagnosticRow(variant, len(runs), values, convergence))
    return rows


def mean_curve(histories: Mapping[str, Mapping[int, float]],
               run_ids: Iterable[str]) -> dict[int, float]:
    """Per-epoch mean over runs; an epoch averages the runs that reached it."""
    sums: dict[int, list[float]] = {}
    for run_id in run_ids:
        for epoch, value in histories.get(run_id, {}).items():
            sums.setdefault(epoch, []).append(value)
    return {e: sum(v) / len(v) for e, v in sorted(sums.items())}


def _seed_figures(runs: StudyRuns, rows: list[VariantRow], configs: list[ConfigRow],
                  histories: Mapping[str, Mapping[int, float]]) -> list[Figure]:
    """Per-seed results and learning curves of each variant, or of a search's best
    configurations; none before any trial finished."""
    if runs.is_search:
        groups = [(f"#{c.rank}", {m: {s: _value(runs, rid, m) for s, rid in c.run_ids.items()}
                                  for m in TABLE_METRICS}) for c in configs]
        curve_runs = {f"#{c.rank}": list(c.run_ids.values()) for c in configs}
        what = f"the {len(configs)} best configurations"
    else:
        groups = [(r.variant, r.by_seed) for r in rows if r.n]
        curve_runs = {r.variant: list(r.run_ids.values()) for r in rows if r.n}
        what = "each variant"
    if not groups:
        return []
    return [
        Figure("seeds", "Per-seed results",
               f"Final test {' and '.join(METRIC_LABELS[m] for m in TABLE_METRICS)} of every "
               f"seed of {what} (points), their mean (mark) and ±1 sample std (bar).",
               SeedPoints(tuple(groups), TABLE_METRICS)),
        Figure("learning_curves", "Learning curves",
               f"{metric_label(runs.metric)} per epoch, mean over the seeds of {what}.",
               LearningCurves({label: mean_curve(histories, ids)
                               for label, ids in curve_runs.items()}, runs.metric)),
    ]


def _roc_figure(scores: BestScores, metric: str) -> Figure | str:
    """The ROC/PR figure of the best run, or the note saying why its scores do not fit."""
    best = scores.run
    try:
        c = curves(list(scores.snippets), scores.frame_labels, scores.frames_per_snippet)
        m = evaluate(list(scores.snippets), scores.frame_labels, scores.frames_per_snippet)
    except ValueError as exc:
        return SCORES_MISMATCH.format(run_id=best.run_id, problem=exc)
    return Figure("roc_pr", f"ROC and precision–recall of the best run ({best.key})",
                  f"Frame-level test curves of run {best.run_id} ({best.key}), the best final "
                  f"{metric} of the study.",
                  RocPr(c, m["auc"], m["ap"], best.key))


def metric_label(metric: str) -> str:
    """How a caption names a metric: test metrics are frame-level, validation ones video-level."""
    if metric in VALIDATION_METRICS:
        return f"Validation {metric.removeprefix('val_').upper()} (video-level)"
    return f"Test {metric.upper()} (frame-level)"


def importance_caption(metric: str, epoch: int | None, finished: int, stopped_early: int) -> str:
    """What the importances measure: the metric at the common budget, and why that one."""
    text = (f"fANOVA importance of each search parameter for {metric} at epoch {epoch}, the last "
            f"epoch every one of the {finished} finished trials reached")
    if stopped_early:
        text += (f" ({stopped_early} were stopped early by the scheduler; comparing final "
                 f"values would partly measure when a trial was stopped)")
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
