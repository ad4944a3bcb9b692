"""The statistics of an ablation table: hand-computed cases, and seeded simulations of what the
intervals cover and how often Holm-corrected decisions err."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from ablate.stats.decide import Looks, Rule, decide, seeds_for, sign_flip_floor
from ablate.stats.paired import Paired, paired, summarize


def _pairs(diffs: list[float]) -> Paired:
    return paired({s: d for s, d in enumerate(diffs)}, {s: 0.0 for s in range(len(diffs))})


def test_summarize_by_hand():
    # mean 2.5; squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5; sample variance 5 / 3.
    n, mean, std = summarize([1.0, 2.0, 3.0, 4.0])
    assert (n, mean) == (4, 2.5)
    assert std == pytest.approx(math.sqrt(5 / 3))
    assert summarize([0.7]) == (1, 0.7, None)
    assert summarize([]) == (0, None, None)


def test_sign_flip_exact_by_hand():
    # Signs of (3, -1): sums 2, 4, -4, -2 in absolute value 2, 4, 4, 2; all >= |2|.
    assert _pairs([3.0, -1.0]).sign_flip_p() == 1.0
    # (1, 2, 3): |sum| = 6 only for all-plus and all-minus: 2 / 8.
    assert _pairs([1.0, 2.0, 3.0]).sign_flip_p() == 0.25
    # Floating-point ties still count: 0.1 + 0.2 and 0.3 must be the same statistic.
    assert _pairs([0.1, 0.2, -0.3]).sign_flip_p() == 1.0
    # Six positive differences: the floor 2 / 2**6, whatever their size.
    assert _pairs([0.01, 0.2, 0.03, 0.5, 0.02, 0.4]).sign_flip_p() == sign_flip_floor(6) == 1 / 32
    # One-sided against a minimum effect: (d - 0.1) = (0.1, 0.2, 0.3) all above: 1 / 8.
    assert _pairs([0.2, 0.3, 0.4]).sign_flip_p("greater", shift=0.1) == 1 / 8
    with pytest.raises(ValueError, match="at least one pair"):
        _pairs([]).sign_flip_p()


def test_pairs_only_shared_seeds():
    pairs = paired({0: 0.9, 1: 0.8, 2: 0.5}, {0: 0.8, 1: 0.7, 3: 0.1})
    assert pairs.seeds == (0, 1) and pairs.mean == pytest.approx(0.1)
    assert pairs.first(1).seeds == (0,)


def test_t_interval_and_effect_size_by_hand():
    diffs = [0.02, -0.01, 0.03, 0.00, 0.01]
    pairs = _pairs(diffs)
    mean, sd, n = np.mean(diffs), np.std(diffs, ddof=1), len(diffs)
    half = scipy_stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)
    assert pairs.interval(0.95) == pytest.approx((mean - half, mean + half))
    d_z, (low, high) = pairs.effect_size(0.95)
    assert d_z == pytest.approx(mean / sd)
    # The noncentral t of t = sqrt(n) d_z puts the observed t at the interval's quantiles.
    t = d_z * math.sqrt(n)
    assert scipy_stats.nct.cdf(t, n - 1, low * math.sqrt(n)) == pytest.approx(0.975)
    assert scipy_stats.nct.cdf(t, n - 1, high * math.sqrt(n)) == pytest.approx(0.025)
    negative = _pairs([-d for d in diffs]).effect_size(0.95)
    assert negative[0] == pytest.approx(-d_z)
    assert negative[1] == pytest.approx((-high, -low))
    assert _pairs([0.01]).interval(0.95) is None and _pairs([0.01]).effect_size(0.95) is None
    assert _pairs([0.01, 0.01]).interval(0.95) == (0.01, 0.01)  # no variation


def test_the_interval_covers_95_percent_at_six_seeds():
    """Seeded simulation with normal differences: the t interval's coverage at n = 6 is within
    Monte Carlo error of its nominal 95 % (the percentile bootstrap it replaces covered about
    86 %)."""
    rng = np.random.default_rng(20261204)
    draws, n, true_mean = 4000, 6, 0.013
    covered = 0
    for _ in range(draws):
        low, high = _pairs(list(rng.normal(true_mean, 0.02, n))).interval(0.95)
        covered += low <= true_mean <= high
    assert 0.93 <= covered / draws <= 0.97


def _null_study(rng: np.random.Generator, comparisons: int, n: int,
                shift: float = 0.0) -> dict[str, dict[int, float]]:
    base = {s: 0.8 + rng.normal(0, 0.02) for s in range(n)}
    values = {"base": base}
    for i in range(comparisons):
        values[f"v{i}"] = {s: base[s] + shift + rng.normal(0, 0.01) for s in range(n)}
    return values


@pytest.mark.slow
def test_holm_keeps_the_family_wise_error_of_seven_null_comparisons():
    """Seven variants no different from the base, 10 seeds: how often does any of them get
    decided better or worse? At most alpha, within Monte Carlo error (3 standard errors).
    (With 6 seeds the sign-flip test cannot reach Holm's threshold at all: see
    test_a_design_that_cannot_decide_says_so.)"""
    rng = np.random.default_rng(10)
    rule, draws = Rule(alpha=0.05, delta=0.001), 400
    looks = Looks.fixed(10, 7, rule.alpha)
    wrong = sum(any(c.decision in ("better", "worse") for c in decide(
        _null_study(rng, 7, 10), "base", rule, looks).values()) for _ in range(draws))
    assert 0 < wrong / draws <= rule.alpha + 3 * math.sqrt(0.05 * 0.95 / draws)


@pytest.mark.slow
def test_equivalence_errs_at_most_alpha_at_the_margin():
    """Differences exactly delta (not equivalent): the chance of any wrong "equivalent" across
    seven comparisons stays within alpha."""
    rng = np.random.default_rng(7)
    rule, draws = Rule(alpha=0.05, delta=0.01), 300
    looks = Looks.fixed(8, 7, rule.alpha)
    wrong = sum(any(c.decision == "equivalent" for c in decide(
        _null_study(rng, 7, 8, shift=rule.delta), "base", rule, looks).values())
        for _ in range(draws))
    assert wrong / draws <= rule.alpha + 3 * math.sqrt(0.05 * 0.95 / draws)
    # And it does decide: truly equal variants, 12 seeds, are mostly found equivalent.
    looks = Looks.fixed(12, 7, rule.alpha)
    found = [c.decision == "equivalent" for _ in range(40)
             for c in decide(_null_study(rng, 7, 12), "base", rule, looks).values()]
    assert sum(found) / len(found) >= 0.5


@pytest.mark.slow
def test_adaptive_looks_keep_the_family_wise_error():
    """Seeds added to undecided comparisons look by look: with alpha split over the looks that
    can decide, any wrong better/worse stays within alpha."""
    rng = np.random.default_rng(3)
    rule, draws = Rule(alpha=0.05, delta=0.001), 200
    looks = Looks.of([6, 8, 10, 12], 3, rule.alpha)
    wrong = sum(any(c.decision in ("better", "worse")
                    for c in decide(_null_study(rng, 3, 12), "base", rule, looks).values())
                for _ in range(draws))
    assert wrong / draws <= rule.alpha + 3 * math.sqrt(0.05 * 0.95 / draws)
    # And it does decide: variants 5 points worse are found worse at the first deciding look.
    shifted = [decide(_null_study(rng, 3, 12, shift=-0.05), "base", rule, looks)
               for _ in range(30)]
    assert looks.difference == (0, 0, 0.025, 0.025)
    assert all(c.decision == "worse" and c.decided_at == 10 for d in shifted
               for c in d.values())


def test_looks_split_alpha_over_the_looks_that_can_decide():
    # 7 comparisons: one look at 6 seeds cannot reach 0.05 / 7; at 9 it can.
    assert seeds_for(0.05 / 7) == 9
    assert Looks.fixed(6, 7, 0.05).difference == (0.0,)
    assert Looks.fixed(9, 7, 0.05).difference == (0.05,)
    # Rounds 6..16 by 2: only 12, 14 and 16 can decide at 0.05 / 3 each (0.05 / 21 needs
    # 10 seeds; four looks would need 11, which 10 is not).
    looks = Looks.of([6, 8, 10, 12, 14, 16], 7, 0.05)
    assert looks.difference == (0, 0, 0, 0.05 / 3, 0.05 / 3, 0.05 / 3)
    assert looks.equivalence == (0.05 / 6,) * 6


def test_decisions_of_a_small_table():
    rng = np.random.default_rng(0)
    base = {s: 0.8 + rng.normal(0, 0.02) for s in range(10)}
    values = {"full": base,
              "worse": {s: v - 0.08 + rng.normal(0, 0.01) for s, v in base.items()},
              "same": {s: v + rng.normal(0, 0.002) for s, v in base.items()},
              "noisy": {s: v + 0.01 + rng.normal(0, 0.03) for s, v in base.items()}}
    decided = decide(values, "full", Rule(), Looks.fixed(10, 3, 0.05))
    assert {v: c.decision for v, c in decided.items()} == {
        "worse": "worse", "same": "equivalent", "noisy": "undecided"}
    worse = decided["worse"]
    assert worse.p == 2 / 2**10 and worse.p_holm == pytest.approx(3 * worse.p)
    assert worse.wins == 0.0 and worse.d_z < -3 and worse.decided_at == 10
    noisy = decided["noisy"]
    assert noisy.needed is not None and noisy.needed > 10 and noisy.why is None


def test_a_design_that_cannot_decide_says_so():
    rng = np.random.default_rng(1)
    values = _null_study(rng, 7, 6, shift=-0.1)
    decided = decide(values, "base", Rule(), Looks.fixed(6, 7, 0.05))
    assert {c.decision for c in decided.values()} == {"undecided"}
    assert {c.why for c in decided.values()} == {
        "6 seeds cannot reach Holm's threshold for 7 comparisons (the sign-flip p is at least "
        "0.0312 > 0.00714); 9 can"}
    assert {c.needed for c in decided.values()} == {9}


def test_an_unfinished_look_is_not_decided_but_the_last_takes_what_there_is():
    rng = np.random.default_rng(2)
    values = _null_study(rng, 2, 12, shift=-0.1)
    values["v1"] = {s: v for s, v in values["v1"].items() if s < 7}  # still running
    looks = Looks.of([6, 8, 10, 12], 2, 0.05)
    assert looks.difference == (0, 0.05 / 3, 0.05 / 3, 0.05 / 3)
    decided = decide(values, "base", Rule(), looks)
    # Look 8 is not reached by v1: the study stands at look 6, which cannot decide them.
    assert {(c.decision, c.n) for c in decided.values()} == {("undecided", 6)}
    values["v1"] = {s: v - 0.1 for s, v in values["base"].items() if s < 8}
    decided = decide(values, "base", Rule(), looks)
    assert {(v, c.decision, c.decided_at) for v, c in decided.items()} == {
        ("v0", "worse", 8), ("v1", "worse", 8)}
    values["v1"] = {s: v for s, v in values["v1"].items() if s < 7}
    fixed = decide(values, "base", Rule(), Looks.fixed(12, 2, 0.05))
    assert fixed["v1"].decision == "worse" and fixed["v1"].n == 7  # a trial failed: fewer pairs
