"""The ablation table: one row per variant, with seed statistics and paired deltas to the base."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ablate.metrics import TABLE_METRICS
from ablate.report.stats import Delta, paired_delta, summarize
from ablate.tracking.runs import TrialRun


@dataclass(frozen=True)
class Stat:
    """``n``, mean and sample std of one metric over seeds."""

    n: int
    mean: float | None
    std: float | None


@dataclass(frozen=True)
class VariantRow:
    """One variant of the table.

    Attributes:
        variant: Its name (``full``, ``clav=none``, ...).
        seeds: Seeds with a finished run, sorted.
        by_seed: ``{metric: {seed: final value}}``.
        stats: ``{metric: Stat}`` for :data:`TABLE_METRICS` and the study's metric.
        deltas: ``{metric: Delta}`` against the base; empty when there is no base.
        is_base: Whether this is the base variant.
        rank: 1 for the best mean of the study's metric; None for variants without results.
        run_ids: The finished runs, by seed.
    """

    variant: str
    seeds: tuple[int, ...]
    by_seed: dict[str, dict[int, float]]
    stats: dict[str, Stat]
    deltas: dict[str, Delta]
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
            out[f"delta_{m}_ci"] = list(delta.ci) if delta and delta.ci else None
            out[f"p_{m}"] = delta.p if delta else None
            out[f"n_pairs_{m}"] = delta.n_pairs if delta else 0
        out["seeds"] = list(self.seeds)
        out["rank"] = self.rank
        out["is_base"] = self.is_base
        for m in TABLE_METRICS:
            out[f"{m}_by_seed"] = {str(s): v for s, v in sorted(self.by_seed[m].items())}
        out["run_ids"] = {str(s): r for s, r in sorted(self.run_ids.items())}
        return out


def _values(runs: Iterable[TrialRun], metric: str) -> dict[int, float]:
    return {r.seed: r.metrics[metric] for r in runs if metric in r.metrics}


def ablation_rows(finished: list[TrialRun], variants: list[str], base: str | None, metric: str,
                  mode: str, n_boot: int = 10_000, seed: int = 0) -> list[VariantRow]:
    """Rows for every variant, ranked by the mean of ``metric`` (best first; empty ones last).

    Args:
        finished: One finished run per trial.
        variants: Variant names to list even without results (planned ones), in plan order.
        base: The base variant's name; None leaves the deltas empty.
        metric: The study's metric (ranks the rows).
        mode: ``max`` or ``min``.
        n_boot: Bootstrap resamples of each confidence interval.
        seed: RNG seed of the bootstrap and permutation tests.
    """
    groups: dict[str, list[TrialRun]] = {v: [] for v in variants}
    for run in finished:
        groups.setdefault(run.variant, []).append(run)
    metrics = tuple(dict.fromkeys((*TABLE_METRICS, metric)))
    values = {v: {m: _values(runs, m) for m in metrics} for v, runs in groups.items()}
    base_values = values.get(base) if base is not None else None
    rows = []
    for variant, runs in groups.items():
        by_seed = values[variant]
        stats = {m: Stat(*summarize(list(by_seed[m].values()))) for m in metrics}
        deltas = ({m: paired_delta(by_seed[m], base_values[m], n_boot=n_boot, seed=seed)
                   for m in TABLE_METRICS} if base_values is not None else {})
        rows.append(VariantRow(
            variant=variant, seeds=tuple(sorted({r.seed for r in runs})), by_seed=by_seed,
            stats=stats, deltas=deltas, is_base=variant == base, rank=None,
            run_ids={r.seed: r.run_id for r in runs}))
    sign = -1.0 if mode == "max" else 1.0
    scored = sorted((r for r in rows if r.stats[metric].mean is not None),
                    key=lambda r: sign * r.stats[metric].mean)  # type: ignore[operator]
    ranked = [_with_rank(r, i) for i, r in enumerate(scored, start=1)]
    return ranked + [r for r in rows if r.stats[metric].mean is None]


def _with_rank(row: VariantRow, rank: int) -> VariantRow:
    return dataclasses.replace(row, rank=rank)

