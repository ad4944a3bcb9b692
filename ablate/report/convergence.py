"""Whether a study's runs trained to convergence, and whether validation ranks its variants as
test does.

Both read validation only where they judge (test is never used to decide how long to train):

- **Converged**: a variant's mean gain in validation AUC over the last quarter of its epochs,
  averaged over its seeds, is below :data:`MAX_GAIN` (half an AUC point). A run's gain is the
  least-squares trend of its validation AUC over the epochs from ``E - ceil(E / 4)`` to ``E``
  (``scipy.stats.linregress``) times that span: the trend, not the difference of two epochs,
  because one epoch's validation AUC on a few dozen videos jumps by about a point either way. A
  run still climbing at its last epoch reports a number that more training would change;
  comparing such variants compares how fast they learn.
- **Rank agreement**: Kendall's tau (``scipy.stats.kendalltau``, tau-b) between the variants'
  mean final validation AUC and mean final test AUC. Searches select on validation; a low tau
  says that what validation prefers is not what test measures.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ablate.tracking.runs import TrialRun

CRITERION_METRIC = "val_auc"
MAX_GAIN = 0.005  # half an AUC point
LAST_SHARE = 0.25  # the last quarter of the epochs


def last_share_gain(history: Mapping[int, float]) -> float | None:
    """The least-squares trend of one run's ``{epoch: value}`` over its last quarter, from the
    last epoch scored at or before ``E - ceil(E / 4)`` to ``E``, times that span (with two
    scores, their difference); None when nothing was scored by then (a one-epoch run, or one
    scored too rarely)."""
    from scipy.stats import linregress

    if not history:
        return None
    last = max(history)
    start = last - max(1, math.ceil(LAST_SHARE * last))
    earlier = [e for e in history if e <= start]
    if not earlier:
        return None
    epochs = [e for e in sorted(history) if e >= max(earlier)]
    trend = linregress(epochs, [history[e] for e in epochs])
    return float(trend.slope) * (last - epochs[0])


@dataclass(frozen=True)
class Convergence:
    """One variant's mean last-quarter validation gain over the ``runs`` that have one."""

    gain: float | None
    runs: int

    @property
    def converged(self) -> bool | None:
        """Whether the gain is below :data:`MAX_GAIN`; None without a gain."""
        return None if self.gain is None else self.gain < MAX_GAIN


def variant_convergence(histories: Mapping[str, Mapping[int, float]],
                        run_ids: Iterable[str]) -> Convergence:
    """The convergence of the runs ``run_ids`` from their validation histories."""
    gains = [g for g in (last_share_gain(histories.get(r, {})) for r in run_ids)
             if g is not None]
    return Convergence(statistics.mean(gains) if gains else None, len(gains))


NOT_CONVERGED = ("not converged: {variants} still gained {worst:.2f} points or more of "
                 "validation AUC over the last quarter of their epochs (the criterion: under "
                 f"{100 * MAX_GAIN:g}); their final numbers would change with more training")


@dataclass(frozen=True)
class RankAgreement:
    """Kendall's tau between the variants' mean validation and mean test metric."""

    tau: float
    p: float
    variants: int
    validation: str
    test: str

    def describe(self) -> str:
        return (f"validation and test rank the {self.variants} variants with Kendall's tau = "
                f"{self.tau:+.2f} (p = {self.p:.3g}; {self.validation} against {self.test})")


def rank_agreement(finished: Iterable[TrialRun], test: str,
                   validation: str = CRITERION_METRIC) -> RankAgreement | None:
    """Kendall's tau over the variants with both metrics; None for fewer than three."""
    from scipy.stats import kendalltau

    by_variant: dict[str, list[TrialRun]] = {}
    for run in finished:
        by_variant.setdefault(run.variant, []).append(run)
    pairs = []
    for runs in by_variant.values():
        val = [r.metrics[validation] for r in runs if validation in r.metrics]
        tested = [r.metrics[test] for r in runs if test in r.metrics]
        if val and tested:
            pairs.append((statistics.mean(val), statistics.mean(tested)))
    if len(pairs) < 3:
        return None
    result = kendalltau(*zip(*pairs, strict=True))
    if math.isnan(result.statistic):  # one of the two is constant across the variants
        return None
    return RankAgreement(float(result.statistic), float(result.pvalue), len(pairs), validation,
                         test)
