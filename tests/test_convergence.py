"""The convergence criterion and the validation-test rank agreement of a report."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import kendalltau

from ablate.report.convergence import (
    MAX_GAIN,
    last_share_gain,
    rank_agreement,
    variant_convergence,
)
from ablate.tracking.runs import TrialRun


@pytest.mark.parametrize(("history", "gain"), [
    ({e: 0.01 * e for e in range(1, 21)}, 0.05),  # 20 epochs: the gain since epoch 15
    ({e: 0.01 * e for e in range(1, 11)}, 0.03),  # 10 epochs: ceil(2.5) = 3, since epoch 7
    ({1: 0.5, 2: 0.7}, 0.2),  # two epochs: the last one's gain
    ({5: 0.6, 10: 0.7, 15: 0.75, 20: 0.8}, 0.05),  # scored every 5: the last score by epoch 15
    ({1: 0.5}, None),
    ({}, None),
])
def test_last_share_gain(history: dict[int, float], gain: float | None) -> None:
    got = last_share_gain(history)
    assert got == (None if gain is None else pytest.approx(gain))


def test_the_gain_is_the_last_quarters_trend_not_its_end_points() -> None:
    # 40 epochs, flat at 0.80 but for a last epoch 2 points up: the end points alone say +2
    # points; the trend over epochs 30..40 says under half of that.
    history = {e: 0.80 for e in range(1, 41)}
    history[40] = 0.82
    epochs = list(range(30, 41))
    slope = np.polyfit(epochs, [history[e] for e in epochs], 1)[0]
    got = last_share_gain(history)
    assert got == pytest.approx(slope * 10)
    assert 0 < got < 0.01


def test_a_variant_converges_when_its_mean_gain_is_under_half_a_point() -> None:
    flat = {e: 0.9 + 0.0001 * e for e in range(1, 21)}
    rising = {e: 0.7 + 0.01 * e for e in range(1, 21)}
    histories = {"a": flat, "b": flat, "c": rising}
    assert variant_convergence(histories, ["a", "b"]).converged is True
    mixed = variant_convergence(histories, ["a", "c"])
    assert mixed.runs == 2 and mixed.gain == pytest.approx((0.0005 + 0.05) / 2)
    assert mixed.gain > MAX_GAIN and mixed.converged is False
    assert variant_convergence(histories, ["missing"]).converged is None


def _run(variant: str, seed: int, val: float, test: float) -> TrialRun:
    return TrialRun(run_id=f"{variant}{seed}", key=f"{variant}/seed{seed}", variant=variant,
                    seed=seed, status="FINISHED", metrics={"val_auc": val, "auc": test})


def test_rank_agreement_is_scipys_kendall_tau_over_the_variant_means() -> None:
    val = {"a": 0.9, "b": 0.8, "c": 0.7, "d": 0.6}
    test = {"a": 0.70, "b": 0.75, "c": 0.65, "d": 0.60}
    runs = [_run(v, s, val[v] + 0.01 * s, test[v] - 0.01 * s) for v in val for s in (0, 1)]
    got = rank_agreement(runs, "auc")
    expected = kendalltau(list(val.values()), list(test.values()))
    assert got is not None and got.variants == 4
    assert got.tau == pytest.approx(expected.statistic) and got.tau == pytest.approx(2 / 3)
    assert got.p == pytest.approx(expected.pvalue)


def test_rank_agreement_needs_three_variants_with_both_metrics() -> None:
    runs = [_run("a", 0, 0.9, 0.7), _run("b", 0, 0.8, 0.6),
            TrialRun(run_id="c0", key="c/seed0", variant="c", seed=0, status="FINISHED",
                     metrics={"auc": 0.5})]
    assert rank_agreement(runs, "auc") is None
