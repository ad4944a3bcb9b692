"""One variant against the base, paired on seeds: the statistics of the per-seed differences.

The same seed gives a variant and the base the same data order and initialisation, so the
per-seed difference ``d = variant - base`` removes most of the seed-to-seed variance. For
``d_1..d_n`` (scipy and statsmodels compute every statistic):

- **interval** of the mean difference: Student's t (``scipy.stats.ttest_1samp(...)
  .confidence_interval``). Exact for normal differences at any n, which is what matters at the
  seed counts studies use: the percentile bootstrap it replaces covered about 86 % at n = 6
  (its intervals are too narrow by the factor sqrt((n-1)/n) and the t quantile's margin over
  the normal one), and BCa, which corrects the bias and skew, still needs tens of pairs for its
  own estimates to settle. ``tests/test_stats.py`` simulates the coverage.
- **p**: the exact paired sign-flip permutation test (``scipy.stats.permutation_test``,
  ``permutation_type="samples"`` on the differences): under "variant and base are
  exchangeable" each difference is equally likely to have either sign. Distribution-free, and
  with n seeds it can never go below ``2 / 2**n`` (two-sided), which bounds what a design can
  decide (:mod:`ablate.stats.decide`).
- **effect size** d_z = mean / sample std of the differences, with the interval that inverts
  the noncentral t distribution of ``t = sqrt(n) d_z`` (``scipy.stats.nct``).
- **equivalence**: the paired two one-sided tests of ``-delta < mean < delta``
  (``statsmodels.stats.weightstats.ttost_paired``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

Alternative = Literal["two-sided", "greater", "less"]
# Up to this many pairs the sign-flip test enumerates all 2**n sign assignments; beyond, it
# draws this many at random (with a fixed seed, so a report is reproducible).
EXACT_PAIRS = 16
MONTE_CARLO_DRAWS = 100_000


@dataclass(frozen=True)
class Paired:
    """The variant's per-seed differences to the base over the seeds both have, in seed order.

    Attributes:
        seeds: The paired seeds, sorted.
        variant: The variant's values on them.
        base: The base's values on them.
    """

    seeds: tuple[int, ...]
    variant: tuple[float, ...]
    base: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def diffs(self) -> np.ndarray:
        return np.asarray(self.variant, dtype=np.float64) - np.asarray(self.base,
                                                                      dtype=np.float64)

    @property
    def mean(self) -> float | None:
        return float(self.diffs.mean()) if self.n else None

    @property
    def std(self) -> float | None:
        """Sample standard deviation of the differences (ddof 1); None below two pairs."""
        return float(self.diffs.std(ddof=1)) if self.n >= 2 else None

    def first(self, n: int) -> Paired:
        """The first ``n`` pairs (a study's seeds run in order: its first looks saw these)."""
        return Paired(self.seeds[:n], self.variant[:n], self.base[:n])

    def wins(self) -> float | None:
        """The share of seeds on which the variant scored higher than the base."""
        return float(np.mean(self.diffs > 0)) if self.n else None

    def interval(self, confidence: float) -> tuple[float, float] | None:
        """Student's t interval of the mean difference; None below two pairs."""
        if self.n < 2:
            return None
        if self.std == 0:  # every seed moved by the same amount
            return self.mean, self.mean  # type: ignore[return-value]
        import warnings

        from scipy.stats import ttest_1samp

        with warnings.catch_warnings():  # differences equal but for rounding: a tiny interval
            warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
            low, high = ttest_1samp(self.diffs, 0.0).confidence_interval(confidence)
        return float(low), float(high)

    def sign_flip_p(self, alternative: Alternative = "two-sided", shift: float = 0.0) -> float:
        """Exact sign-flip p-value of the mean difference against ``shift``.

        Args:
            alternative: ``two-sided``, or ``greater`` / ``less``: the variant is better /
                worse than the base by more than ``shift``.
            shift: The null difference (a claim's minimum effect); 0 by default.

        Raises:
            ValueError: No pairs.
        """
        if not self.n:
            raise ValueError("a sign-flip test needs at least one pair")
        if self.n == 1:  # two sign assignments: +d and -d
            d = float(self.diffs[0]) - shift
            if alternative == "two-sided":
                return 1.0
            return 0.5 if (d > 0 if alternative == "greater" else d < 0) else 1.0
        from scipy.stats import permutation_test

        exact = self.n <= EXACT_PAIRS
        result = permutation_test((self.diffs - shift,), _mean, permutation_type="samples",
                                  vectorized=True, alternative=alternative,
                                  n_resamples=np.inf if exact else MONTE_CARLO_DRAWS,
                                  rng=None if exact else np.random.default_rng(0))
        return float(result.pvalue)

    def effect_size(self, confidence: float) -> tuple[float, tuple[float, float]] | None:
        """``(d_z, interval)``: the standardised mean difference and its noncentral-t interval;
        None below two pairs or without variation."""
        std = self.std
        if std is None or std == 0:
            return None
        from scipy.optimize import brentq
        from scipy.stats import nct

        n, d_z = self.n, self.mean / std  # type: ignore[operator]
        # By symmetry the interval of -t is that of t negated; scipy's noncentral t is
        # accurate for t >= 0 (for t < 0 its cdf turns NaN at large noncentralities).
        t, df, tail = abs(d_z) * math.sqrt(n), n - 1, (1 - confidence) / 2

        def cdf(nc: float) -> float:
            value = float(nct.cdf(t, df, nc))
            if math.isnan(value):  # scipy's series fails far in the tails: the limits hold
                return 1.0 if nc < t else 0.0
            return value

        def noncentrality(probability: float) -> float:
            # The noncentrality at which the observed t is the `probability` quantile; the
            # bracket widens until it holds the root (cdf falls as the noncentrality grows).
            width = 10.0 + t
            while cdf(t - width) < probability or cdf(t + width) > probability:
                width *= 2
            return brentq(lambda nc: cdf(nc) - probability, t - width, t + width)

        root_n = math.sqrt(n)
        low, high = noncentrality(1 - tail) / root_n, noncentrality(tail) / root_n
        return d_z, ((low, high) if d_z >= 0 else (-high, -low))

    def equivalence_p(self, delta: float) -> float | None:
        """The TOST p-value of ``-delta < mean difference < delta``; None below two pairs."""
        if self.n < 2:
            return None
        if self.std == 0:  # no variation: equivalent exactly when inside the margin
            return 0.0 if abs(self.mean) < delta else 1.0  # type: ignore[arg-type]
        from statsmodels.stats.weightstats import ttost_paired

        return float(ttost_paired(np.asarray(self.variant), np.asarray(self.base),
                                  -delta, delta)[0])


def paired(variant: Mapping[int, float], base: Mapping[int, float]) -> Paired:
    """The pairs of two seed -> value mappings over the seeds both have."""
    seeds = tuple(sorted(set(variant) & set(base)))
    return Paired(seeds, tuple(float(variant[s]) for s in seeds),
                  tuple(float(base[s]) for s in seeds))


def summarize(values: list[float]) -> tuple[int, float | None, float | None]:
    """``(n, mean, sample std)`` of seed results; the std is None for n < 2."""
    arr = np.asarray(values, dtype=np.float64)
    if not arr.size:
        return 0, None, None
    return int(arr.size), float(arr.mean()), float(arr.std(ddof=1)) if arr.size >= 2 else None


def _mean(x: np.ndarray, axis: int) -> np.ndarray:
    return np.mean(x, axis=axis)
