"""The report's table as runs of the tracking store: one summary run per variant (or confirmed
configuration) with its seed statistics and decision as metrics and tags, so the MLflow UI's
runs table and charts show the ablation table (its shared view ``ablate-summaries`` lists them).
Trials keep their runs; summaries sit beside them under the study's run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ablate.metrics import TABLE_METRICS
from ablate.tracking.study import SUMMARY_DECISION, Summary, write_summaries
from ablate.tracking.view import SUMMARY_VIEW_TAG, summary_view_state

if TYPE_CHECKING:
    from ablate.report.model import Report
    from ablate.tracking.store import Tracker

SUMMARY_TAGS = ("ablate.variant", SUMMARY_DECISION, "ablate.decided_at")


def _stat_metrics(report: Report) -> list[str]:
    return list(dict.fromkeys((*TABLE_METRICS, report.rule.metric, report.metric)))


def view_columns(report: Report) -> list[str]:
    """The metrics the summaries' view shows (the UI orders metric columns by name): the
    decision metric's mean, difference, interval, adjusted p and effect size, and n."""
    m = report.rule.metric
    if report.is_search:
        return ["n", f"search_{report.metric}", f"confirmed_{report.metric}",
                f"gap_{report.metric}", *(f"confirmed_{t}" for t in TABLE_METRICS)]
    return ["n", f"{m}_mean", f"{m}_std", f"delta_{m}", f"delta_{m}_ci_low",
            f"delta_{m}_ci_high", "p_holm", "d_z"]


def summaries(report: Report) -> list[Summary]:
    """One summary per variant of an ablation, or per confirmed configuration of a search."""
    if report.is_search:
        return [Summary(row.variant, {
            "n": row.confirmed[report.metric].n,
            f"search_{report.metric}": row.search.mean,
            f"confirmed_{report.metric}": row.confirmed[report.metric].mean,
            f"gap_{report.metric}": row.gap,
            **{f"confirmed_{t}": row.confirmed[t].mean for t in TABLE_METRICS}},
            {SUMMARY_DECISION: "winner" if row.winner else "confirmed",
             "ablate.decided_at": "-"}) for row in report.confirmed]
    out = []
    for row in report.rows:
        metrics: dict[str, float | None] = {"n": row.n}
        for m in _stat_metrics(report):
            metrics[f"{m}_mean"] = row.stats[m].mean
            metrics[f"{m}_std"] = row.stats[m].std
        c, m = row.comparison, report.rule.metric
        if c is not None:
            low, high = c.interval or (None, None)
            metrics.update({f"delta_{m}": c.mean, f"delta_{m}_ci_low": low,
                            f"delta_{m}_ci_high": high, "p": c.p, "p_holm": c.p_holm,
                            "d_z": c.d_z, "wins": c.wins,
                            "p_equivalence_holm": c.p_equivalence_holm})
        decision = "base" if row.is_base else c.decision if c is not None else "-"
        at = str(c.decided_at) if c is not None and c.decided_at is not None else "-"
        out.append(Summary(row.variant, {k: v for k, v in metrics.items() if v is not None},
                           {SUMMARY_DECISION: decision, "ablate.decided_at": at}))
    return out


def publish_summaries(tracker: Tracker, report: Report) -> list[str]:
    """Writes the summary runs and the experiment's view of them; returns the runs' ids."""
    ids = write_summaries(tracker, report.study, summaries(report))
    experiment = tracker.experiment(report.study)
    if experiment is not None:
        order = (f"confirmed_{report.metric}" if report.is_search
                 else f"{report.rule.metric}_mean")
        tracker.set_experiment_tag(experiment.experiment_id, SUMMARY_VIEW_TAG,
                                   summary_view_state(view_columns(report), SUMMARY_TAGS,
                                                      order))
    return ids
