"""Decisions for a table of comparisons with the base, over one or more looks at the seeds.

Each variant's comparison with the base (:mod:`ablate.stats.paired`) ends in a decision:

- **better** / **worse**: the two-sided sign-flip test rejects "no difference" after Holm's
  correction across the table's comparisons (``statsmodels``' ``multipletests``, ``holm``);
- **equivalent**: the paired TOST rejects "the difference is at least ``delta``", also after
  Holm's correction across the table;
- **undecided**: neither; the comparison says how many seeds a power calculation from its
  observed variance says would decide it (``statsmodels``' ``TTestPower``).

A study may look at its seeds more than once (:class:`Looks`): adaptive seeds add seeds to the
comparisons still undecided after each look. To keep every decision valid under that stopping
rule, the study's ``alpha`` is split over the looks at which a family of decisions is possible
(a Bonferroni bound over looks, the simplest group-sequential bound): whatever the data and
wherever seeds are spent, the chance of any wrong *better/worse* decision over all looks and
comparisons is at most ``alpha``, and so is the chance of any wrong *equivalent*. With n seeds
the two-sided sign-flip p is at least ``2 / 2**n``, so a look can decide differences only once
``2 / 2**n`` is within Holm's smallest threshold; looks before that spend nothing on them. A
study with fixed seeds has one look, at all of them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Literal, NamedTuple

from ablate.metrics import Metric
from ablate.stats.paired import Paired, paired

Decision = Literal["better", "worse", "equivalent", "undecided"]
DECISIONS: tuple[Decision, ...] = ("better", "worse", "equivalent", "undecided")
POWER = 0.8  # of the seed counts suggested for undecided comparisons
MAX_SUGGESTED = 1000  # seed counts beyond this are reported as out of reach
CANNOT_DECIDE = ("{n} seeds cannot reach Holm's threshold for {m} comparisons (the sign-flip p "
                 "is at least {floor:.3g} > {threshold:.3g}); {needed} can")


def sign_flip_floor(n: int) -> float:
    """The smallest two-sided sign-flip p-value n pairs can give: all signs alike."""
    return 2.0 ** (1 - n)


def seeds_for(threshold: float) -> int:
    """The fewest pairs whose two-sided sign-flip p can reach ``threshold``."""
    return max(2, math.ceil(1 - math.log2(threshold) - 1e-12))


@dataclass(frozen=True)
class Rule:
    """How a study decides (the spec's ``decision`` block).

    Attributes:
        metric: The metric compared, final epoch (higher is better: every metric ablate
            records is an AUC or an AP). The test AUC by default: decisions report, they do
            not select.
        alpha: The family-wise error rate of each kind of decision (better/worse, equivalent)
            across the table and all of a study's looks.
        delta: The smallest difference that matters, in the metric's units (0.01 = one AUC
            point): within it a variant is equivalent to the base.
    """

    metric: Metric = "auc"
    alpha: float = 0.05
    delta: float = 0.01

    @property
    def confidence(self) -> float:
        """Of the reported intervals."""
        return 1 - self.alpha


@dataclass(frozen=True)
class Looks:
    """When a study looks at its seeds, and the share of ``alpha`` each look spends.

    Attributes:
        seeds: The number of seeds at each look, increasing.
        difference: The alpha each look spends on better/worse decisions (0: none possible).
        equivalence: The alpha each look spends on equivalence decisions.
    """

    seeds: tuple[int, ...]
    difference: tuple[float, ...]
    equivalence: tuple[float, ...]

    @classmethod
    def of(cls, seeds: Sequence[int], comparisons: int, alpha: float) -> Looks:
        """Splits ``alpha`` over the looks at ``seeds`` that can decide, for ``comparisons``
        comparisons: the most looks k, taken from the last, such that even the first of them
        can reach Holm's smallest threshold ``alpha / (k * comparisons)`` with the sign-flip
        test; equivalence (a t-test) can be decided at every look."""
        seeds = tuple(sorted(set(seeds)))
        m = max(comparisons, 1)
        deciding = 0
        for k in range(len(seeds), 0, -1):
            if sign_flip_floor(seeds[-k]) <= alpha / (k * m):
                deciding = k
                break
        difference = tuple(alpha / deciding if i >= len(seeds) - deciding else 0.0
                           for i in range(len(seeds)))
        equivalence = tuple(alpha / len(seeds) for _ in seeds)
        return cls(seeds, difference, equivalence)

    @classmethod
    def fixed(cls, seeds: int, comparisons: int, alpha: float) -> Looks:
        return cls.of([seeds], comparisons, alpha)


class _Tested(NamedTuple):
    p: float | None
    p_holm: float | None
    p_equivalence: float | None
    p_equivalence_holm: float | None


@dataclass(frozen=True)
class Comparison:
    """A variant against the base, as decided. The costlier statistics (the effect size's
    interval, the seeds a power calculation suggests) are computed when first read.

    Attributes:
        variant: The variant.
        pairs: The pairs its decision rests on (those of the look that decided it, or of the
            last look).
        p: Two-sided sign-flip p.
        p_holm: ``p`` adjusted by Holm across the table, at the look that decided it (or the
            last it took part in).
        p_equivalence: The TOST p of ``|difference| < delta``, and ``p_equivalence_holm``.
        decision: better, worse, equivalent or undecided.
        decided_at: The seeds at the look that decided it (None: undecided).
        alpha: The alpha the deciding look (or the last) spent on this kind of decision.
        rule: The rule it was decided by.
        comparisons: The table's comparisons (Holm's family).
        decidable: Whether any of the study's looks could decide a difference at all.
        seeds: The seeds at the study's last look.
    """

    variant: str
    pairs: Paired
    p: float | None
    p_holm: float | None
    p_equivalence: float | None
    p_equivalence_holm: float | None
    decision: Decision
    decided_at: int | None
    alpha: float
    rule: Rule
    comparisons: int
    decidable: bool
    seeds: int

    @property
    def n(self) -> int:
        return self.pairs.n

    @property
    def mean(self) -> float | None:
        """Mean difference (variant - base)."""
        return self.pairs.mean

    @property
    def interval(self) -> tuple[float, float] | None:
        """t interval of the mean difference."""
        return self.pairs.interval(self.rule.confidence)

    @cached_property
    def _effect(self) -> tuple[float, tuple[float, float]] | None:
        return self.pairs.effect_size(self.rule.confidence)

    @property
    def d_z(self) -> float | None:
        """Standardised mean difference (mean / std of the differences)."""
        return self._effect[0] if self._effect else None

    @property
    def d_z_interval(self) -> tuple[float, float] | None:
        return self._effect[1] if self._effect else None

    @property
    def wins(self) -> float | None:
        """The share of seeds on which the variant beat the base."""
        return self.pairs.wins()

    @cached_property
    def needed(self) -> int | None:
        """Undecided: the seeds that would decide it in a fixed design, by a power calculation
        (power :data:`POWER` at Holm's smallest threshold, from the observed mean and std);
        None when decided, or when no count up to :data:`MAX_SUGGESTED` would."""
        if self.decision != "undecided" or self.n < 2:
            return None
        return _needed(self.pairs, self.rule, self.comparisons)

    @property
    def why(self) -> str | None:
        """Why the study's design cannot decide it, when it cannot."""
        if self.decision != "undecided" or self.decidable:
            return None
        threshold = self.rule.alpha / self.comparisons
        return CANNOT_DECIDE.format(n=self.seeds, m=self.comparisons,
                                    floor=sign_flip_floor(self.seeds), threshold=threshold,
                                    needed=seeds_for(threshold))


def decide(values: Mapping[str, Mapping[int, float]], base: str, rule: Rule,
           looks: Looks) -> dict[str, Comparison]:
    """Decides every variant of ``values`` (``{variant: {seed: value}}``) against ``base``.

    The looks are replayed in order: at a look of n seeds, each comparison not decided yet is
    tested on its first n pairs (a decided one keeps the pairs that decided it), Holm's
    procedure runs across all comparisons for each kind of decision, and the comparisons it
    rejects at the look's alpha are decided there. Replay stops at the first look some
    undecided comparison has not reached (a study still running), except the last look, which
    tests the pairs there are (a trial that failed leaves its comparison fewer).

    Returns:
        ``{variant: Comparison}`` for every variant but the base.
    """
    variants = [v for v in values if v != base]
    full = {v: paired(values[v], values[base]) for v in variants}
    used = dict(full)
    decided: dict[str, tuple[Decision, int, float]] = {}
    tested: dict[str, _Tested] = {}  # each comparison's p-values at its deciding look
    last = len(looks.seeds) - 1
    for i, (n, alpha_difference, alpha_equivalence) in enumerate(zip(
            looks.seeds, looks.difference, looks.equivalence, strict=True)):
        open_ = [v for v in variants if v not in decided]
        if not open_ or (i < last and any(full[v].n < n for v in open_)):
            break  # the study has not reached this look (the last takes what there is)
        used.update({v: full[v].first(n) for v in open_})
        holm = _holm(used, rule.delta)
        for v in open_:
            tested[v] = found = holm[v]
            if alpha_difference and found.p_holm is not None and found.p_holm <= (
                    alpha_difference):
                side: Decision = "better" if used[v].mean > 0 else "worse"  # type: ignore[operator]
                decided[v] = (side, n, alpha_difference)
            elif found.p_equivalence_holm is not None and (
                    found.p_equivalence_holm <= alpha_equivalence):
                decided[v] = ("equivalent", n, alpha_equivalence)
    if any(v not in tested for v in variants):  # no look reached: the pairs there are
        tested = {**_holm(used, rule.delta), **tested}
    m = len(variants)
    return {v: _comparison(v, used[v], tested[v], decided.get(v), rule, looks, m)
            for v in variants}


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (``statsmodels``' ``multipletests``, ``method="holm"``).

    statsmodels ends its Holm branch with a full ``gc.collect()``, which in a process holding
    torch, Ray and MLflow scans millions of objects per call; objects frozen beforehand
    (``gc.freeze``) are left out of that scan, and unfrozen after.
    """
    import gc

    from statsmodels.stats.multitest import multipletests

    gc.freeze()
    try:
        return [float(p) for p in multipletests(list(pvalues), method="holm")[1]]
    finally:
        gc.unfreeze()


def _holm(pairs: Mapping[str, Paired], delta: float) -> dict[str, _Tested]:
    """Each comparison's sign-flip and TOST p, and both adjusted by Holm across the
    comparisons that have them."""
    raw = {v: (p.sign_flip_p() if p.n else None, p.equivalence_p(delta))
           for v, p in pairs.items()}
    adjusted: list[dict[str, float]] = []
    for kind in (0, 1):
        tested = {v: ps[kind] for v, ps in raw.items() if ps[kind] is not None}
        corrected = holm(list(tested.values())) if tested else []
        adjusted.append(dict(zip(tested, (float(c) for c in corrected), strict=True)))
    return {v: _Tested(raw[v][0], adjusted[0].get(v), raw[v][1], adjusted[1].get(v))
            for v in pairs}


def _comparison(variant: str, pairs: Paired, tested: _Tested,
                decided: tuple[Decision, int, float] | None, rule: Rule, looks: Looks,
                comparisons: int) -> Comparison:
    decision, at, alpha = decided if decided is not None else ("undecided", None,
                                                               looks.difference[-1])
    return Comparison(
        variant=variant, pairs=pairs, p=tested.p, p_holm=tested.p_holm,
        p_equivalence=tested.p_equivalence, p_equivalence_holm=tested.p_equivalence_holm,
        decision=decision, decided_at=at, alpha=alpha, rule=rule, comparisons=comparisons,
        decidable=any(looks.difference), seeds=looks.seeds[-1])


def _needed(pairs: Paired, rule: Rule, comparisons: int) -> int | None:
    """See :attr:`Comparison.needed`."""
    threshold = rule.alpha / comparisons
    mean, std = abs(pairs.mean or 0.0), pairs.std or 0.0
    candidates = []
    if mean > 0:  # a difference, by the two-sided test (and the sign-flip's floor)
        n = _seeds_for_power(mean / std if std else math.inf, threshold, "two-sided")
        candidates.append(None if n is None else max(seeds_for(threshold), n))
    if mean < rule.delta:  # equivalence: each one-sided test of the TOST
        candidates.append(_seeds_for_power((rule.delta - mean) / std if std else math.inf,
                                           threshold, "larger"))
    found = [n for n in candidates if n is not None]
    return min(found) if found else None


def _seeds_for_power(effect: float, alpha: float, alternative: str) -> int | None:
    """The fewest pairs whose paired t-test has power :data:`POWER` for a standardised
    ``effect`` at ``alpha``; None beyond :data:`MAX_SUGGESTED`."""
    if math.isinf(effect):
        return 2
    import numpy as np
    from statsmodels.stats.power import TTestPower

    counts = np.arange(2, MAX_SUGGESTED + 1)
    powers = TTestPower().power(effect_size=effect, nobs=counts, alpha=alpha,
                                alternative=alternative)
    enough = np.flatnonzero(np.asarray(powers) >= POWER)
    return int(counts[enough[0]]) if enough.size else None
