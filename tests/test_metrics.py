from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    auc,
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from ablate.metrics import METRICS, best_by, curves, evaluate


def _reference(scores: list[np.ndarray], gt: np.ndarray) -> dict[str, float]:
    """RTFM's test_10crop.py, literally: repeat by 16, concatenate, roc/pr curves."""
    pred = np.concatenate([np.repeat(np.array(s), 16) for s in scores])
    fpr, tpr, _ = roc_curve(list(gt), pred)
    precision, recall, _ = precision_recall_curve(list(gt), pred)
    return {"auc": auc(fpr, tpr), "ap": auc(recall, precision),
            "ap_sklearn": average_precision_score(list(gt), pred),
            "auc_abnormal": _reference_auc_abnormal(scores, gt)}


def _reference_auc_abnormal(scores: list[np.ndarray], gt: np.ndarray) -> float:
    """AUC_A by a video-by-video loop: each video's frames, kept when the video has an anomaly."""
    kept_gt, kept_pred, start = [], [], 0
    for s in scores:
        frames = gt[start:start + 16 * len(s)]
        start += 16 * len(s)
        if frames.any():
            kept_gt += list(frames)
            kept_pred += list(np.repeat(np.array(s), 16))
    return roc_auc_score(kept_gt, kept_pred)


def _weak_layout(rng: np.random.Generator, videos: int = 12) -> tuple[list[np.ndarray], np.ndarray]:
    """Scores and frame labels laid out like a test split: normal videos have no abnormal frame,
    abnormal ones an anomalous stretch."""
    lengths = rng.integers(2, 60, size=videos)
    gt = []
    for i, t in enumerate(lengths):
        frames = np.zeros(16 * t, dtype=np.int64)
        if i % 2:
            start = int(rng.integers(0, 16 * t - 1))
            frames[start:start + int(rng.integers(1, 16 * t - start))] = 1
        gt.append(frames)
    return [rng.random(t) for t in lengths], np.concatenate(gt)


@pytest.mark.parametrize("seed", range(5))
def test_evaluate_matches_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores, gt = _weak_layout(rng)
    got = evaluate(scores, gt)
    ref = _reference(scores, gt)
    assert tuple(got) == METRICS
    for key in METRICS:
        assert abs(got[key] - ref[key]) < 1e-9, key
    # The field's AP and sklearn's are different estimators; both must be recorded.
    assert got["ap"] != got["ap_sklearn"]


def test_auc_abnormal_gives_a_video_label_detector_one_half() -> None:
    """Scoring every frame with its video's label wins the pooled AUC, not AUC_A."""
    scores, gt = _weak_layout(np.random.default_rng(0))
    labels, start = [], 0
    for s in scores:
        labels.append(np.full(len(s), float(gt[start:start + 16 * len(s)].any())))
        start += 16 * len(s)
    got = evaluate(labels, gt)
    assert got["auc"] > 0.7
    assert got["auc_abnormal"] == 0.5


def test_auc_abnormal_is_nan_without_a_video_of_both_kinds_of_frames() -> None:
    got = evaluate([np.array([0.8, 0.9]), np.array([0.3])], np.repeat([1, 1, 0], 16))
    assert got["auc"] == 1.0
    assert np.isnan(got["auc_abnormal"])


def test_perfect_scores() -> None:
    gt = np.repeat([0, 1, 0], 16)
    got = evaluate([np.array([0.1, 0.9, 0.2])], gt)
    assert got["auc"] == 1.0
    assert got["ap_sklearn"] == 1.0


def test_length_mismatch_names_both_lengths() -> None:
    with pytest.raises(ValueError) as err:
        evaluate([np.zeros(3), np.zeros(2)], np.zeros(79))
    assert str(err.value) == (
        "frame ground truth has 79 frames but the scores cover 80 frames "
        "(5 snippets x 16 frames per snippet)")


def test_nan_scores_rejected() -> None:
    with pytest.raises(ValueError, match="NaN"):
        evaluate([np.array([np.nan, 0.5])], np.array([0] * 16 + [1] * 16))


def test_curves_are_monotone() -> None:
    rng = np.random.default_rng(0)
    c = curves([rng.random(20)], (rng.random(320) < 0.5).astype(int))
    assert np.all(np.diff(c.fpr) >= 0) and c.fpr[-1] == 1.0


def test_best_by_skips_missing_values_and_keeps_the_first_of_a_tie() -> None:
    # NaN first: a comparison with NaN is always False, so an unskipped NaN would stay "best".
    runs = [("c", float("nan")), ("a", 0.7), ("b", None), ("d", 0.9), ("e", 0.9), ("f", 0.1)]
    value = dict(runs).get
    assert best_by([k for k, _ in runs], value, "max") == "d"
    assert best_by([k for k, _ in runs], value, "min") == "f"
    assert best_by(["x", "y"], lambda k: 0.5 if k == "y" else None, "min") == "y"
    assert best_by(["b", "c"], value, "max") is None
    assert best_by([], value, "max") is None
    with pytest.raises(ValueError, match="mode"):
        best_by(["a"], value, "best")
