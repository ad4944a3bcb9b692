"""Frame-level metrics by the conventions of the weakly-supervised VAD literature.

Snippet scores (crops already averaged) are expanded to frames with
``np.repeat(scores, frames_per_snippet)``, concatenated over the test videos in list order and
compared with the concatenated frame-level ground truth (RTFM's ``test_10crop.py``):

- ``auc``: area under the ROC curve, ``auc(*roc_curve(gt, pred)[:2])``.
- ``ap``: the field's "AP", ``auc(recall, precision)`` from ``precision_recall_curve`` — the
  trapezoidal area, which is what UCF-Crime / XD-Violence papers report.
- ``ap_sklearn``: ``average_precision_score`` (step-wise), recorded so both are on hand.
- ``auc_abnormal``: the field's AUC_A, the same frame AUC over the frames of the abnormal test
  videos only (a video is abnormal when its ground truth has an abnormal frame). A detector that
  only knows each video's label scores 0.5 here, so it measures *localisation* within a video,
  which the pooled AUC mixes with telling abnormal videos from normal ones. NaN when no video has
  both normal and abnormal frames.

A ground truth whose length differs from ``frames_per_snippet × total snippets`` is an error:
trimming it silently would score the wrong frames.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar, get_args

import numpy as np

T = TypeVar("T")

TestMetric = Literal["auc", "ap", "ap_sklearn", "auc_abnormal"]
ValidationMetric = Literal["val_auc", "val_ap"]
Metric = Literal[ValidationMetric, TestMetric]
"""What a study may rank, select and stop trials on: validation metrics, then test metrics."""
Mode = Literal["max", "min"]

METRICS: tuple[str, ...] = get_args(TestMetric)
"""The metrics :func:`evaluate` returns; a study ranks its trials by one of them."""

TABLE_METRICS = ("auc", "auc_abnormal", "ap")
"""What tables report: the frame-level test AUC, AUC_A beside it, and the field's AP, as papers
report them (``ap_sklearn`` is recorded for reference only)."""

EPOCH_METRICS = (*METRICS, "loss")
"""What a trial logs after every epoch: the metrics and the mean training loss."""

METRIC_LABELS = {**dict(zip(METRICS, ("AUC", "AP", "AP (sklearn)", "AUC_A"), strict=True)),
                 "val_auc": "val AUC", "val_ap": "val AP"}
"""How reports and plots name each metric."""

LENGTH_MISMATCH = (
    "frame ground truth has {gt} frames but the scores cover {frames} frames "
    "({snippets} snippets x {fps} frames per snippet)"
)


@dataclass(frozen=True)
class Curves:
    """ROC and precision–recall curves of one evaluation, for plots."""

    fpr: np.ndarray
    tpr: np.ndarray
    precision: np.ndarray
    recall: np.ndarray


def frame_scores(snippet_scores: Sequence[np.ndarray], frames_per_snippet: int = 16) -> np.ndarray:
    """Expands per-video snippet scores to one frame-level array over all videos."""
    if len(snippet_scores) == 0:
        raise ValueError("no snippet scores given")
    parts = [np.repeat(np.asarray(s, dtype=np.float64).reshape(-1), frames_per_snippet)
             for s in snippet_scores]
    return np.concatenate(parts)


def _aligned(snippet_scores: Sequence[np.ndarray], frame_gt: np.ndarray,
             frames_per_snippet: int) -> tuple[np.ndarray, np.ndarray]:
    pred = frame_scores(snippet_scores, frames_per_snippet)
    gt = np.asarray(frame_gt).reshape(-1)
    if gt.shape[0] != pred.shape[0]:
        raise ValueError(LENGTH_MISMATCH.format(
            gt=gt.shape[0], frames=pred.shape[0], snippets=pred.shape[0] // frames_per_snippet,
            fps=frames_per_snippet))
    if not np.all(np.isfinite(pred)):
        raise ValueError("snippet scores contain NaN or Inf")
    return pred, gt


def evaluate(snippet_scores: Sequence[np.ndarray], frame_gt: np.ndarray,
             frames_per_snippet: int = 16) -> dict[str, float]:
    """Frame-level AUC and AP of per-video snippet scores.

    Args:
        snippet_scores: One score array per test video, in test-list order, crops averaged.
        frame_gt: Frame-level 0/1 labels of all test videos concatenated in list order.
        frames_per_snippet: Frames covered by one snippet (16 for I3D features).

    Returns:
        One float per name in :data:`METRICS`.

    Raises:
        ValueError: The ground truth length differs from the frames the scores cover (the
            message gives both), or the scores are not finite.
    """
    from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve

    pred, gt = _aligned(snippet_scores, frame_gt, frames_per_snippet)
    fpr, tpr, _ = roc_curve(gt, pred)
    precision, recall, _ = precision_recall_curve(gt, pred)
    return {
        "auc": float(auc(fpr, tpr)),
        "ap": float(auc(recall, precision)),
        "ap_sklearn": float(average_precision_score(gt, pred)),
        "auc_abnormal": _auc_within_abnormal(snippet_scores, pred, gt, frames_per_snippet),
    }


def _auc_within_abnormal(snippet_scores: Sequence[np.ndarray], pred: np.ndarray, gt: np.ndarray,
                         frames_per_snippet: int) -> float:
    """AUC_A: the frame AUC over the frames of the videos whose ground truth has an anomaly."""
    from sklearn.metrics import auc, roc_curve

    frames = [np.asarray(s).size * frames_per_snippet for s in snippet_scores]
    keep = np.concatenate([np.full(n, bool(part.any()))
                           for n, part in zip(frames, np.split(gt, np.cumsum(frames)[:-1]),
                                              strict=True)])
    within = gt[keep]
    if within.size == 0 or within.min() == within.max():
        return math.nan
    fpr, tpr, _ = roc_curve(within, pred[keep])
    return float(auc(fpr, tpr))


def curves(snippet_scores: Sequence[np.ndarray], frame_gt: np.ndarray,
           frames_per_snippet: int = 16) -> Curves:
    """ROC and PR curves for the same inputs as :func:`evaluate`."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    pred, gt = _aligned(snippet_scores, frame_gt, frames_per_snippet)
    fpr, tpr, _ = roc_curve(gt, pred)
    precision, recall, _ = precision_recall_curve(gt, pred)
    return Curves(fpr=fpr, tpr=tpr, precision=precision, recall=recall)


VALIDATION_METRICS: tuple[str, ...] = get_args(ValidationMetric)
"""Video-level metrics on the validation split: what searches and early stopping select on."""


def evaluate_videos(video_scores: Sequence[float], labels: Sequence[int],
                    prefix: str = "") -> dict[str, float]:
    """Video-level AUC and AP (the field's ``auc(recall, precision)``) of one score per video.

    Weakly-supervised data has video labels only outside test, so this is the metric a
    validation split carved from the train videos supports.

    Raises:
        ValueError: The lengths differ, a score is not finite, or a class is missing.
    """
    from sklearn.metrics import auc, precision_recall_curve, roc_curve

    pred = np.asarray(video_scores, dtype=np.float64)
    gt = np.asarray(labels)
    if pred.shape != gt.shape:
        raise ValueError(f"{len(gt)} video labels but {len(pred)} video scores")
    if not np.isfinite(pred).all():
        raise ValueError("video scores contain NaN or Inf")
    if len(np.unique(gt)) < 2:
        raise ValueError("video-level metrics need normal and abnormal videos")
    fpr, tpr, _ = roc_curve(gt, pred)
    precision, recall, _ = precision_recall_curve(gt, pred)
    return {f"{prefix}auc": float(auc(fpr, tpr)), f"{prefix}ap": float(auc(recall, precision))}


DIAGNOSTIC_PREFIXES = ("gate_", "como.")
"""Per-epoch diagnostics a trial also reports: CLAV's mean gate on abnormal and normal test
snippets (``gate_abnormal``, ``gate_normal``), CoMo's attention temperature and entropy per
relation (``como.context_motion.entropy``)."""


def is_tracked(key: str) -> bool:
    """Whether a trial's per-epoch result key is a metric or diagnostic that tracking records."""
    return key in EPOCH_METRICS or key in VALIDATION_METRICS or key.startswith(DIAGNOSTIC_PREFIXES)


def best_by(items: Iterable[T], value: Callable[[T], float | None], mode: str) -> T | None:
    """The item with the largest (``mode="max"``) or smallest (``"min"``) ``value(item)``.

    Items whose value is None or NaN are skipped (a trial that never reported the metric, or
    diverged); a tie goes to the first. None when no item has a value.

    Raises:
        ValueError: ``mode`` is neither ``max`` nor ``min``.
    """
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    best: T | None = None
    best_value = math.nan
    for item in items:
        v = value(item)
        if v is None or math.isnan(v):
            continue
        if best is None or (v > best_value if mode == "max" else v < best_value):
            best, best_value = item, v
    return best
