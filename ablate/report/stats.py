"""Statistics of an ablation table: seed summaries and paired differences to the base variant.

Pure functions over numbers (numpy only), so they are tested against hand-computed cases.

A variant and the base are compared **paired on seeds**: the same seed gives both the same data
order and initialisation, so the per-seed difference removes most of the seed-to-seed
variance. For the differences ``d_1..d_n``:

- the point estimate is their mean;
- the 95% confidence interval is the percentile bootstrap over seed pairs (resample ``n``
  pairs with replacement, take the mean; the 2.5th and 97.5th percentiles of those means),
  with a fixed RNG seed so a report is reproducible;
- the p-value is the two-sided paired sign-flip permutation test: under the null hypothesis
  "variant and base are exchangeable" each difference is equally likely to have either sign,
  so ``p`` is the share of the ``2^n`` sign assignments whose mean is at least as far from
  zero as the observed one (enumerated exactly when ``2^n`` is small, else sampled).

With fewer than two pairs neither an interval nor a test means anything: both are ``None``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
# Up to this many sign assignments (n <= 16) the permutation test enumerates them all.
EXACT_LIMIT = 100_000
MONTE_CARLO_DRAWS = 100_000
# Ties between a permuted and the observed statistic are decided with this relative slack, so
# floating-point noise in a sum does not turn an exact tie into "less extreme".
_TIE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Delta:
    """A variant's paired difference to the base.

    Attributes:
        n_pairs: Seeds both have a result for.
        mean: Mean of the per-seed differences (variant − base); None without pairs.
        ci: Bootstrap confidence interval ``(low, high)`` of the mean; None for n_pairs < 2.
        p: Two-sided sign-flip permutation p-value; None for n_pairs < 2.
        seeds: The paired seeds, sorted.
    """

    n_pairs: int
    mean: float | None
    ci: tuple[float, float] | None
    p: float | None
    seeds: tuple[int, ...] = ()


def summarize(values: Sequence[float]) -> tuple[int, float | None, float | None]:
    """``(n, mean, std)`` of seed results; std is the sample std (ddof=1), None for n < 2.

    An empty sequence gives ``(0, None, None)``.
    """
    arr = np.asarray(values, dtype=np.float64)
    n = int(arr.size)
    if n == 0:
        return 0, None, None
    mean = float(arr.mean())
    std = float(arr.std(ddof=1)) if n >= 2 else None
    return n, mean, std


def sign_flip_p(diffs: Sequence[float], draws: int = MONTE_CARLO_DRAWS, seed: int = 0) -> float:
    """Two-sided p-value of the paired sign-flip permutation test for mean(diffs) = 0.

    Exact when ``2^n <= EXACT_LIMIT``: five positive differences give ``2/32 = 0.0625``
    (only all-plus and all-minus are as extreme). Larger ``n`` draws ``draws`` random sign
    vectors and returns ``(1 + hits) / (1 + draws)``, which is never 0.

    Args:
        diffs: Per-seed differences; must not be empty.
        draws: Monte Carlo sign vectors for large ``n``.
        seed: RNG seed of the Monte Carlo draws.

    Raises:
        ValueError: ``diffs`` is empty.
    """
    d = np.asarray(diffs, dtype=np.float64).reshape(-1)
    n = d.size
    if n == 0:
        raise ValueError("sign_flip_p needs at least one difference")
    observed = abs(d.sum())
    slack = _TIE_TOLERANCE * max(float(np.abs(d).sum()), 1e-300)
    if 2**n <= EXACT_LIMIT:
        # Row i of `signs` is the binary expansion of i mapped to ±1: every assignment once.
        bits = (np.arange(2**n)[:, None] >> np.arange(n)) & 1
        sums = np.abs((1 - 2 * bits) @ d)
        return float(np.mean(sums >= observed - slack))
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, draws, 10_000):  # chunks bound memory for large n
        size = min(10_000, draws - start)
        signs = rng.choice(np.array([-1.0, 1.0]), size=(size, n))
        hits += int(np.sum(np.abs(signs @ d) >= observed - slack))
    return (1 + hits) / (1 + draws)


def bootstrap_ci(diffs: Sequence[float], n_boot: int = 10_000, seed: int = 0,
                 confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``diffs`` (resampling the pairs).

    Raises:
        ValueError: Fewer than two differences, or ``n_boot`` < 1.
    """
    d = np.asarray(diffs, dtype=np.float64).reshape(-1)
    if d.size < 2:
        raise ValueError("a bootstrap interval needs at least two differences")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for start in range(0, n_boot, 10_000):
        size = min(10_000, n_boot - start)
        idx = rng.integers(0, d.size, size=(size, d.size))
        means[start:start + size] = d[idx].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def paired_delta(variant_by_seed: Mapping[int, float], base_by_seed: Mapping[int, float],
                 n_boot: int = 10_000, seed: int = 0) -> Delta:
    """The variant's difference to the base over the seeds both have.

    Args:
        variant_by_seed: Final metric of the variant per seed.
        base_by_seed: Final metric of the base per seed.
        n_boot: Bootstrap resamples for the confidence interval.
        seed: RNG seed of the bootstrap (and of a Monte Carlo permutation test).

    Returns:
        The :class:`Delta`; with fewer than two shared seeds ``ci`` and ``p`` are None.
    """
    seeds = tuple(sorted(set(variant_by_seed) & set(base_by_seed)))
    if not seeds:
        return Delta(0, None, None, None, ())
    diffs = np.array([variant_by_seed[s] - base_by_seed[s] for s in seeds], dtype=np.float64)
    mean = float(diffs.mean())
    if len(seeds) < 2:
        return Delta(1, mean, None, None, seeds)
    return Delta(len(seeds), mean, bootstrap_ci(diffs, n_boot, seed), sign_flip_p(diffs, seed=seed),
                 seeds)
