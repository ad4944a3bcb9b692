"""The report's statistics against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ablate.report.stats import (
    EXACT_LIMIT,
    bootstrap_ci,
    paired_delta,
    sign_flip_p,
    summarize,
)


def test_summarize_by_hand():
    # mean 2.5; squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5; sample variance 5 / 3.
    n, mean, std = summarize([1.0, 2.0, 3.0, 4.0])
    assert (n, mean) == (4, 2.5)
    assert std == pytest.approx(math.sqrt(5 / 3))


def test_summarize_one_and_none():
    assert summarize([0.7]) == (1, 0.7, None)
    assert summarize([]) == (0, None, None)


def test_identical_variant():
    base = {0: 0.81, 1: 0.79, 2: 0.84}
    delta = paired_delta(dict(base), base)
    assert delta.n_pairs == 3 and delta.seeds == (0, 1, 2)
    assert delta.mean == 0.0
    assert delta.ci == (0.0, 0.0)
    assert delta.p == 1.0


def test_clearly_shifted_variant():
    base = {s: 0.70 + 0.01 * s for s in range(5)}
    noise = [0.004, -0.003, 0.002, -0.001, 0.003]
    variant = {s: base[s] + 0.1 + noise[s] for s in range(5)}
    delta = paired_delta(variant, base, n_boot=5000, seed=0)
    assert delta.mean == pytest.approx(0.1 + np.mean(noise))
    low, high = delta.ci
    assert 0 < low < delta.mean < high
    # Five positive differences: only all-plus and all-minus are as extreme, 2 of 32.
    assert delta.p == 2 / 32 == 0.0625


def test_sign_flip_exact_by_hand():
    # Signs of (3, -1): sums 2, 4, -4, -2 in absolute value 2, 4, 4, 2; all >= |2|.
    assert sign_flip_p([3.0, -1.0]) == 1.0
    # (1, 2, 3): |sum| = 6 only for all-plus and all-minus: 2 / 8.
    assert sign_flip_p([1.0, 2.0, 3.0]) == 0.25
    # (1, 1, 3): |±1 ±1 ±3| is 5 for (+,+,+) and (-,-,-), else 3 or 1: 2 / 8.
    assert sign_flip_p([1.0, 1.0, 3.0]) == 0.25
    assert sign_flip_p([0.0, 0.0, 0.0]) == 1.0
    # Floating-point ties still count: 0.1 + 0.2 and 0.3 must be the same statistic.
    assert sign_flip_p([0.1, 0.2, -0.3]) == 1.0


def test_sign_flip_monte_carlo_for_many_pairs():
    n = 20
    assert 2**n > EXACT_LIMIT
    p_shifted = sign_flip_p(np.full(n, 0.05), draws=20_000, seed=1)
    assert p_shifted == pytest.approx(1 / 20_001, abs=1e-4)  # never 0
    rng = np.random.default_rng(0)
    p_null = sign_flip_p(rng.normal(size=n), draws=20_000, seed=1)
    assert 0.05 < p_null <= 1.0


def test_fewer_than_two_pairs():
    one = paired_delta({0: 0.8, 1: 0.9}, {1: 0.85, 2: 0.7})
    assert (one.n_pairs, one.ci, one.p, one.seeds) == (1, None, None, (1,))
    assert one.mean == pytest.approx(0.05)
    none = paired_delta({0: 0.8}, {1: 0.8})
    assert (none.n_pairs, none.mean, none.ci, none.p) == (0, None, None, None)


def test_pairs_only_shared_seeds():
    delta = paired_delta({0: 0.9, 1: 0.8, 2: 0.5}, {0: 0.8, 1: 0.7, 3: 0.1})
    assert delta.seeds == (0, 1)
    assert delta.mean == pytest.approx(0.1)


def test_bootstrap_is_reproducible_and_bounded():
    diffs = [0.02, -0.01, 0.03, 0.00, 0.01]
    a = bootstrap_ci(diffs, n_boot=2000, seed=7)
    assert a == bootstrap_ci(diffs, n_boot=2000, seed=7)
    assert min(diffs) <= a[0] <= np.mean(diffs) <= a[1] <= max(diffs)
    with pytest.raises(ValueError, match="at least two"):
        bootstrap_ci([0.1])
    with pytest.raises(ValueError, match="at least one"):
        sign_flip_p([])
