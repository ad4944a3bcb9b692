"""Training objectives: a MIL loss, an optional magnitude loss, and CLAV's losses.

Every loss here works on a batch holding both normal (label 0) and abnormal (label 1) videos, as the
trainer samples them half and half; a term that needs both classes is zero when one is missing.

    objective = build_objective(loss_spec, model)
    loss, parts = objective(model(x), labels)

``parts`` holds each active term's weighted contribution (they sum to ``total``), as floats for
logging.

Each term has exactly one owner: Sultani et al.'s smoothness and sparsity belong to the MIL ranking
loss (``loss.mil.smoothness``, ``loss.mil.sparsity``), CLAV's losses to the global ``rd_weight`` and
``gate_weight``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ablate.models.model import ModelOutput
from ablate.models.registry import NON_NEGATIVE, POSITIVE, REGISTRY, Constraint
from ablate.models.spec import require_resolved


def topk_mean(values: torch.Tensor, k: int) -> torch.Tensor:
    """Mean of the k largest values along time, k clipped to T: (B, T) -> (B,)."""
    return values.topk(min(k, values.shape[1]), dim=1).values.mean(dim=1)


def pairwise_hinge(abnormal: torch.Tensor, normal: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean over all (abnormal, normal) pairs of max(0, margin - abnormal + normal)."""
    if len(abnormal) == 0 or len(normal) == 0:
        return abnormal.sum() * 0.0 + normal.sum() * 0.0
    return F.relu(margin - abnormal[:, None] + normal[None, :]).mean()  # (A, N) -> ()


def smoothness(scores: torch.Tensor) -> torch.Tensor:
    """Sultani et al.'s temporal smoothness, sum_t (s_t - s_{t+1})^2, averaged over videos."""
    if scores.shape[0] == 0 or scores.shape[1] < 2:
        return scores.sum() * 0.0
    return ((scores[:, 1:] - scores[:, :-1]) ** 2).sum(dim=1).mean()


def sparsity(scores: torch.Tensor) -> torch.Tensor:
    """Sultani et al.'s sparsity, sum_t s_t, averaged over videos."""
    if scores.shape[0] == 0:
        return scores.sum() * 0.0
    return scores.sum(dim=1).mean()


@REGISTRY.register("mil", "topk_bce")
class TopKBCE(nn.Module):
    """Top-k MIL: BCE between each video's mean top-k snippet score and its label.

    Args:
        k: Snippets per video averaged into the video score.
        weight: Weight of this loss in the objective.
    """

    constraints: ClassVar[dict[str, Constraint]] = {"k": POSITIVE, "weight": NON_NEGATIVE}

    def __init__(self, k: int = 4, weight: float = 1.0) -> None:
        super().__init__()
        self.k = k
        self.weight = weight

    def forward(self, out: ModelOutput, labels: torch.Tensor) -> torch.Tensor:
        """Unweighted loss (scalar)."""
        video = topk_mean(out.scores, self.k)  # (B,)
        return F.binary_cross_entropy(video, labels)


@REGISTRY.register("mil", "mil_ranking")
class MILRanking(nn.Module):
    """MIL ranking loss (Sultani et al. 2018): top abnormal snippet above top normal one by 1.

    Over every (abnormal, normal) pair of the batch: max(0, 1 - max(s_abnormal) + max(s_normal)),
    averaged; plus the paper's smoothness and sparsity terms on the abnormal videos' scores. These
    options are the only place the two terms are set.

    Args:
        smoothness: Weight of sum_t (s_t - s_{t+1})^2 on abnormal videos (the paper: 8e-5).
        sparsity: Weight of sum_t s_t on abnormal videos (the paper: 8e-5).
        weight: Weight of this loss in the objective.
    """

    constraints: ClassVar[dict[str, Constraint]] = {
        "smoothness": NON_NEGATIVE,
        "sparsity": NON_NEGATIVE,
        "weight": NON_NEGATIVE,
    }

    def __init__(
        self, smoothness: float = 8e-5, sparsity: float = 8e-5, weight: float = 1.0
    ) -> None:
        super().__init__()
        self.smoothness = smoothness
        self.sparsity = sparsity
        self.weight = weight

    def forward(self, out: ModelOutput, labels: torch.Tensor) -> torch.Tensor:
        """Unweighted loss (scalar)."""
        abnormal = labels > 0.5
        top = out.scores.max(dim=1).values  # (B,)
        loss = pairwise_hinge(top[abnormal], top[~abnormal], margin=1.0)
        abn_scores = out.scores[abnormal]  # (A, T)
        return (
            loss + self.smoothness * smoothness(abn_scores) + self.sparsity * sparsity(abn_scores)
        )


@REGISTRY.register("magnitude", "rtfm")
class RTFMMagnitude(nn.Module):
    """RTFM-style feature-magnitude margin (Tian et al. 2021) on the features fed to the head.

    A video's magnitude is the mean L2 norm of its k largest-norm snippets; over every (abnormal,
    normal) pair: max(0, margin - |abnormal| + |normal|), averaged. RTFM instead squares
    (|margin - |abnormal|| + |normal|); we keep the plain hinge, which stops pushing once the gap is
    reached rather than pulling normal magnitudes to zero. RTFM's margin of 100 is for raw 2048-d
    features; our features are learnt and H = 128 wide with norms of a few units at
    initialisation, so the default margin is 10 and the default weight 0.1 keeps the term's scale
    (at most 1) comparable to the BCE. CoMo's layer norm pins every snippet's norm near sqrt(H),
    leaving this loss little to act on; pair it with ``layer_norm: false`` or without CoMo (as the
    ``rtfm`` preset does).

    Args:
        margin: Required gap between abnormal and normal top-k feature magnitudes.
        k: Snippets per video whose magnitudes are averaged (RTFM: 3).
        weight: Weight of this loss in the objective.
    """

    constraints: ClassVar[dict[str, Constraint]] = {
        "margin": NON_NEGATIVE,
        "k": POSITIVE,
        "weight": NON_NEGATIVE,
    }

    def __init__(self, margin: float = 10.0, k: int = 3, weight: float = 0.1) -> None:
        super().__init__()
        self.margin = margin
        self.k = k
        self.weight = weight

    def forward(self, out: ModelOutput, labels: torch.Tensor) -> torch.Tensor:
        """Unweighted loss (scalar)."""
        abnormal = labels > 0.5
        norms = out.features.norm(dim=-1)  # (B, T)
        magnitude = topk_mean(norms, self.k)  # (B,)
        return pairwise_hinge(magnitude[abnormal], magnitude[~abnormal], self.margin)


class Objective:
    """The training loss of one trial: the sum of its weighted terms.

    Args:
        mil: The MIL loss.
        magnitude: The magnitude loss, or None.
        clav: The model's CLAV module, or None when CLAV is off.
        rd_weight: Weight of CLAV's relative distance loss.
        gate_weight: Weight of the top-k MIL loss that ties CLAV's gate to the video label.
    """

    def __init__(
        self,
        mil: nn.Module,
        magnitude: nn.Module | None,
        clav: nn.Module | None,
        rd_weight: float,
        gate_weight: float,
    ) -> None:
        self.mil = mil
        self.magnitude = magnitude
        self.clav = clav
        self.rd_weight = rd_weight
        self.gate_weight = gate_weight

    def __call__(
        self, out: ModelOutput, labels: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Compute the loss of a batch.

        Args:
            out: The model's output for the batch.
            labels: Video labels (B,), 1 for abnormal.

        Returns:
            The scalar loss and each active term's weighted contribution plus ``total``.
        """
        labels = labels.to(device=out.scores.device, dtype=out.scores.dtype)
        terms: dict[str, torch.Tensor] = {"mil": self.mil.weight * self.mil(out, labels)}
        if self.magnitude is not None:
            terms["magnitude"] = self.magnitude.weight * self.magnitude(out, labels)
        if self.clav is not None and self.rd_weight > 0:
            features = out.extras["clav_features"]
            terms["rd"] = self.rd_weight * self.clav.relative_distance_loss(features, labels)
        if self.clav is not None and self.gate_weight > 0:
            # The class activation is made class-dependent: the gate's top-k snippets of a video
            # must be high exactly when the video is abnormal (the same MIL signal as the scores).
            gate = topk_mean(out.extras["clav_gate"], self.clav.k)  # (B,)
            terms["gate"] = self.gate_weight * F.binary_cross_entropy(gate, labels)
        total = torch.stack(list(terms.values())).sum()
        # One device sync for all the logged values instead of one per term.
        values = torch.stack([*terms.values(), total]).detach().cpu().tolist()
        parts = dict(zip([*terms, "total"], values, strict=True))
        return total, parts


def build_objective(spec: Mapping[str, Any], model: nn.Module) -> Objective:
    """Build the objective a resolved loss spec describes, for ``model``.

    Args:
        spec: A resolved loss spec (a trial config's ``loss``, or
            :func:`~ablate.models.spec.resolve_loss_spec` of a raw one).
        model: The model being trained; its CLAV module (if any) supplies the relative distance
            loss and the gate.

    Returns:
        A callable ``objective(out, labels) -> (loss, parts)``.

    Raises:
        ValueError: A raw spec.
    """
    resolved = require_resolved(spec, "loss")
    return Objective(
        mil=REGISTRY.build("mil", resolved["mil"]),
        magnitude=REGISTRY.build("magnitude", resolved["magnitude"]),
        clav=getattr(model, "clav", None),
        rd_weight=resolved["rd_weight"],
        gate_weight=resolved["gate_weight"],
    )
