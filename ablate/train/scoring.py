"""Scoring videos and turning the scores into a trial's metrics, for :class:`Trainer` and the
members of a fused trial alike.

A video is scored at full length, averaged over its crops. With ``train.eval_chunk`` > 0 a video
longer than that is scored in consecutive windows (:func:`windows`), each run through the whole
model on its own and the window scores concatenated: CoMo's relation graphs are O(T^2) in time
and memory, so a 3,000-snippet test video costs a window's graphs per window instead. The
windows see no context beyond their edges (each window's first snippet has zero motion, its
graphs span the window only), so chunked scores approximate full-length ones, and CoMo's attention
statistics average over windows. On the synthetic benchmarks windows of 32-128 snippets raise
the test AUC by 1-3 points: a chunk changes results unless it exceeds every video's length, so
the default (0) scores whole videos.

Scores are held as arrays with a leading member dim, (N, T) per video: one member for a Trainer,
N for a fused trial scoring its members together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING, Protocol

import numpy as np

from ablate.train.device import autocast

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ablate.data import FeatureDataset


class Evaluated(Protocol):
    """What scoring needs of a trial: its data splits and CoMo's attention statistics (a
    :class:`~ablate.train.trainer.Trainer`, alone or as a fused member)."""

    dataset: FeatureDataset
    val_ids: list[str]
    val_labels: np.ndarray
    test_ids: list[str]
    test_gt: np.ndarray

    def drop_attention_stats(self) -> None: ...

    def attention_stats(self) -> dict[str, float]: ...


@dataclass(frozen=True)
class Evaluation:
    """One trial's evaluation: its metrics and, when test was scored, its per-video test
    snippet scores (crops averaged, in test-list order)."""

    metrics: dict[str, float]
    test_scores: list[np.ndarray] | None


# A validation video's score: the mean of its k highest snippet scores, as top-k MIL trains it.
VAL_TOPK = 3

# A video's crops are scored in one forward pass unless the relation graphs (crops x T x T)
# would exceed this many elements; then crops go in smaller groups.
EVAL_GRAPH_BUDGET = 64_000_000

# What a scorer returns for a group of crops (g, T, D): snippet scores (N, g, T) and CLAV's
# gates of the same shape, or None without CLAV; N is the number of members scored.
VideoForward = Callable[["torch.Tensor"], "tuple[torch.Tensor, torch.Tensor | None]"]

# Per-video snippet scores and gates, (N, T) each, of the given trials on the given videos.
Scorer = Callable[["Sequence[Evaluated]", "list[str]"],
                  "tuple[list[np.ndarray], list[np.ndarray]]"]


def windows(snippets: int, chunk: int) -> list[slice]:
    """The windows a video of ``snippets`` snippets is scored in: the whole video when ``chunk``
    is 0 or the video is no longer, else ceil(T / chunk) consecutive windows of near-equal
    length (at most ``chunk``, differing by at most one), so that no window is a short
    remainder with little context."""
    if chunk <= 0 or snippets <= chunk:
        return [slice(0, snippets)]
    count = -(-snippets // chunk)
    bounds = [i * snippets // count for i in range(count + 1)]
    return [slice(start, stop) for start, stop in pairwise(bounds)]


def own_scores(model: nn.Module,
               x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One model's :data:`VideoForward`: its scores and CLAV gates of crops ``x`` (g, T, D),
    as one member, (1, g, T)."""
    out = model(x)
    gate = out.extras.get("clav_gate")
    return out.scores[None], None if gate is None else gate[None]


def score_videos(dataset: FeatureDataset, video_ids: list[str], forward: VideoForward,
                 device: str, amp: bool, chunk: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per-video snippet scores and CLAV gates (empty arrays without CLAV), averaged over crops,
    in the order given: arrays (N, T), N the members ``forward`` scores.

    Args:
        dataset: The loaded store the videos are read from.
        video_ids: The videos to score.
        forward: Scores a group of crops, see :data:`VideoForward`.
        device: Where the crops are scored.
        amp: bfloat16 autocast on CUDA.
        chunk: ``train.eval_chunk``: videos longer than this are scored in :func:`windows`;
            0 scores every video whole.
    """
    import torch

    scores, gates = [], []
    with torch.inference_mode(), autocast(device, amp):
        for video_id in video_ids:
            feats = dataset.features(video_id)  # (crops, T, D)
            parts = [_score_window(feats[:, window], forward, device)
                     for window in windows(feats.shape[1], chunk)]
            crops = feats.shape[0]
            score = torch.cat([part for part, _ in parts], -1)
            scores.append((score / crops).cpu().numpy())
            if parts[0][1] is None:
                gates.append(np.empty(0))
            else:
                gate = torch.cat([part for _, part in parts], -1)
                gates.append((gate / crops).cpu().numpy())
    return scores, gates


def _score_window(feats: np.ndarray, forward: VideoForward,
                  device: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The crop sums of scores and gates (N, t) of one window ``feats`` (crops, t, D): the crops
    in one forward pass unless their relation graphs would exceed :data:`EVAL_GRAPH_BUDGET`
    elements, then in groups."""
    import torch

    crops, t = feats.shape[0], feats.shape[1]
    group = max(1, min(crops, EVAL_GRAPH_BUDGET // max(1, t * t)))
    score: torch.Tensor | None = None
    gate: torch.Tensor | None = None
    for start in range(0, crops, group):
        x = torch.from_numpy(np.asarray(feats[start:start + group], dtype=np.float32)).to(device)
        part, part_gate = forward(x)  # (N, g, t) each
        part = part.float().sum(-2)
        score = part if score is None else score + part
        if part_gate is not None:
            part_gate = part_gate.float().sum(-2)
            gate = part_gate if gate is None else gate + part_gate
    assert score is not None  # a video has at least one crop
    return score, gate


def member_scores(scores: list[np.ndarray], gates: list[np.ndarray],
                  member: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """One member's (T,) scores and gates out of :func:`score_videos`' (N, T) arrays."""
    return [s[member] for s in scores], [g[member] if g.size else g for g in gates]


def evaluate_trials(trials: Sequence[Evaluated], tested: Sequence[Evaluated],
                    score: Scorer) -> list[Evaluation]:
    """Validation metrics (video-level) of ``trials`` and test metrics (frame-level), scores and
    diagnostics of ``tested`` (a subset), in order. Test is scored first, its CoMo statistics
    read before validation runs.

    Args:
        trials: Trials of one dataset and split (a Trainer alone, or fused members).
        tested: Those whose test split is scored too.
        score: Scores trials on videos, all of them together.
    """
    if not trials:
        return []
    test_scores: list[list[np.ndarray] | None] = [None for _ in trials]
    gates: list[list[np.ndarray]] = [[] for _ in trials]
    attention: list[dict[str, float]] = [{} for _ in trials]
    if tested:
        for trial in tested:
            trial.drop_attention_stats()
        scores, all_gates = score(tested, trials[0].test_ids)
        for i, trial in enumerate(tested):
            at = trials.index(trial)
            test_scores[at], gates[at] = member_scores(scores, all_gates, i)
            attention[at] = trial.attention_stats()
    val: list[np.ndarray] = []
    if len(trials[0].val_ids):
        val, _ = score(trials, trials[0].val_ids)
    return [Evaluation(_metrics(trial, test_scores[i], gates[i], [s[i] for s in val],
                                attention[i]), test_scores[i])
            for i, trial in enumerate(trials)]


def _metrics(trial: Evaluated, test_scores: list[np.ndarray] | None, gates: list[np.ndarray],
             val_scores: list[np.ndarray], attention: dict[str, float]) -> dict[str, float]:
    """A trial's metrics from scores already computed: the validation scores and, when test was
    scored, its test scores and gates and CoMo's statistics of the test passes."""
    from ablate.metrics import evaluate, evaluate_videos

    dataset = trial.dataset
    metrics: dict[str, float] = {}
    if test_scores is not None:
        metrics = evaluate(test_scores, trial.test_gt, dataset.frames_per_snippet)
    if len(trial.val_ids):
        video_scores = [float(np.sort(s)[-VAL_TOPK:].mean()) for s in val_scores]
        metrics.update(evaluate_videos(video_scores, trial.val_labels, prefix="val_"))
    if gates and gates[0].size:
        snippet_gt = trial.test_gt[::dataset.frames_per_snippet].astype(bool)
        gate = np.concatenate(gates)
        metrics["gate_abnormal"] = float(gate[snippet_gt].mean())
        metrics["gate_normal"] = float(gate[~snippet_gt].mean())
    metrics.update(attention)
    return metrics
