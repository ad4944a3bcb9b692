"""The ablation table: one row per variant, seed statistics, paired differences to the base and
the decision of each comparison (:mod:`ablate.stats.decide`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ablate.metrics import TABLE_METRICS
from ablate.stats.decide import Comparison, Looks, Rule, decide
from ablate.stats.paired import paired, summarize
from ablate.tracking.runs import TrialRun


@dataclass(frozen=True)
class Stat:
    """``n``, mean and sample std of one metric over seeds."""

    n: int
    mean: float | None
    std: float | None


@dataclass(frozen=True)
class Delta:
    """A metric's mean paired difference to the base over the seeds both have, with its t
    interval (the decision metric's full comparison is the row's ``comparison``)."""

    n: int
    mean: float | None
    interval: tuple[float, float] | None


@dataclass(frozen=True)
class VariantRow:
    """One variant of the table.

    Attributes:
        variant: Its name (``full``, ``clav=none``, ...).
        seeds: Seeds with a finished run, sorted.
        by_seed: ``{metric: {seed: final value}}``.
        stats: ``{metric: Stat}`` for the table's metrics, the study's and the decision's.
        deltas: ``{metric: Delta}`` against the base for the table's metrics; empty for the base
            or without one.
        comparison: The decision metric's comparison with the base (None for the base, or
            without one).
        is_base: Whether this is the base variant.
        rank: 1 for the best mean of the study's metric; None for variants without results.
        run_ids: The finished runs, by seed.
    """

    variant: str
    seeds: tuple[int, ...]
    by_seed: dict[str, dict[int, float]]
    stats: dict[str, Stat]
    deltas: dict[str, Delta]
    comparison: Comparison | None
    is_base: bool
    rank: int | None
    run_ids: dict[int, str]

    @property
    def n(self) -> int:
        return len(self.seeds)

    def to_json(self) -> dict[str, Any]:
        """The row as ``ablation.json`` writes it (metrics in [0, 1], not percent)."""
        out: dict[str, Any] = {"variant": self.variant, "n": self.n}
        for m in TABLE_METRICS:
            out[f"{m}_mean"] = self.stats[m].mean
            out[f"{m}_std"] = self.stats[m].std
        for m in TABLE_METRICS:
            delta = self.deltas.get(m)
            out[f"delta_{m}"] = delta.mean if delta else None
            out[f"delta_{m}_ci"] = list(delta.interval) if delta and delta.interval else None
            out[f"n_pairs_{m}"] = delta.n if delta else 0
        out["comparison"] = comparison_json(self.comparison)
        out["seeds"] = list(self.seeds)
        out["rank"] = self.rank
        out["is_base"] = self.is_base
        for m in TABLE_METRICS:
            out[f"{m}_by_seed"] = {str(s): v for s, v in sorted(self.by_seed[m].items())}
        out["run_ids"] = {str(s): r for s, r in sorted(self.run_ids.items())}
        return out


def comparison_json(c: Comparison | None) -> dict[str, Any] | None:
    """A comparison as ``ablation.json`` writes it."""
    if c is None:
        return None
    return {"n": c.n, "mean": c.mean, "ci": list(c.interval) if c.interval else None,
            "p": c.p, "p_holm": c.p_holm, "d_z": c.d_z,
            "d_z_ci": list(c.d_z_interval) if c.d_z_interval else None, "wins": c.wins,
            "p_equivalence": c.p_equivalence, "p_equivalence_holm": c.p_equivalence_holm,
            "decision": c.decision, "decided_at": c.decided_at, "alpha": c.alpha,
            "seeds_needed": c.needed, "why": c.why}


def _values(runs: Iterable[TrialRun], metric: str) -> dict[int, float]:
    return {r.seed: r.metrics[metric] for r in runs if metric in r.metrics}


def ablation_rows(finished: list[TrialRun], variants: list[str], base: str | None, metric: str,
                  mode: str, rule: Rule, looks: Looks) -> list[VariantRow]:
    """Rows for every variant, ranked by the mean of ``metric`` (best first; empty ones last).

    Args:
        finished: One finished run per trial.
        variants: Variant names to list even without results (planned ones), in plan order.
        base: The base variant's name; None leaves the deltas and decisions out.
        metric: The study's metric (ranks the rows).
        mode: ``max`` or ``min``.
        rule: How comparisons are decided.
        looks: When the study looked at its seeds (:class:`~ablate.stats.decide.Looks`).
    """
    groups: dict[str, list[TrialRun]] = {v: [] for v in variants}
    for run in finished:
        groups.setdefault(run.variant, []).append(run)
    metrics = tuple(dict.fromkeys((*TABLE_METRICS, metric, rule.metric)))
    values = {v: {m: _values(runs, m) for m in metrics} for v, runs in groups.items()}
    comparisons = (decide({v: values[v][rule.metric] for v in groups}, base, rule, looks)
                   if base is not None and base in values else {})
    rows = []
    for variant, runs in groups.items():
        by_seed = values[variant]
        stats = {m: Stat(*summarize(list(by_seed[m].values()))) for m in metrics}
        deltas = {}
        if base is not None and variant != base and base in values:
            for m in TABLE_METRICS:
                pairs = paired(by_seed[m], values[base][m])
                deltas[m] = Delta(pairs.n, pairs.mean, pairs.interval(rule.confidence))
        rows.append(VariantRow(
            variant=variant, seeds=tuple(sorted({r.seed for r in runs})), by_seed=by_seed,
            stats=stats, deltas=deltas, comparison=comparisons.get(variant),
            is_base=variant == base, rank=None, run_ids={r.seed: r.run_id for r in runs}))
    sign = -1.0 if mode == "max" else 1.0
    scored = sorted((r for r in rows if r.stats[metric].mean is not None),
                    key=lambda r: sign * r.stats[metric].mean)  # type: ignore[operator]
    ranked = [dataclasses.replace(r, rank=i) for i, r in enumerate(scored, start=1)]
    return ranked + [r for r in rows if r.stats[metric].mean is None]
