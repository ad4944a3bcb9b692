"""AnomalyModel: the slots assembled into one snippet scorer.

    x (B, T, D) -> embed -> [clav] -> [como] -> head -> scores (B, T)

``clav`` and ``como`` may be switched off (``{"type": "none"}``); the features fed to the head are
returned with the scores, because the magnitude losses act on them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ablate.models.registry import REGISTRY
from ablate.models.spec import require_resolved


@dataclass
class ModelOutput:
    """What a forward pass returns.

    Attributes:
        scores: Per-snippet anomaly scores in (0, 1), (B, T).
        features: The features fed to the head, (B, T, H).
        extras: Intermediate tensors the objective or an analysis may need: ``clav_features``
            (B, T, H) and ``clav_gate`` (B, T) when CLAV is on.
    """

    scores: torch.Tensor
    features: torch.Tensor
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


class AnomalyModel(nn.Module):
    """Weakly-supervised snippet scorer assembled from registry components.

    Args:
        embed: Snippet embedding, (B, T, D) -> (B, T, H).
        clav: Class-activated feature learning, or None.
        como: Context-motion relation module, or None.
        head: Snippet scorer, (B, T, H) -> (B, T).
        spec: The resolved model spec it was built from, kept for checkpoints and logs.
        in_dim: Input feature width D.
    """

    def __init__(
        self,
        embed: nn.Module,
        clav: nn.Module | None,
        como: nn.Module | None,
        head: nn.Module,
        spec: dict[str, Any],
        in_dim: int,
    ) -> None:
        super().__init__()
        self.embed = embed
        self.clav = clav
        self.como = como
        self.head = head
        self.spec = spec
        self.in_dim = in_dim

    def forward(self, x: torch.Tensor) -> ModelOutput:
        """Score every snippet of a batch of videos.

        Args:
            x: Snippet features (B, T, D).

        Returns:
            Scores (B, T), head features (B, T, H) and extras.
        """
        if x.dim() != 3 or x.shape[-1] != self.in_dim:
            raise ValueError(f"expected input (B, T, {self.in_dim}), got {tuple(x.shape)}")
        extras: dict[str, torch.Tensor] = {}
        h = self.embed(x)  # (B, T, H)
        if self.clav is not None:
            h, gate = self.clav(h)  # (B, T, H), (B, T)
            extras["clav_features"] = h
            extras["clav_gate"] = gate
        if self.como is not None:
            h = self.como(h, x)  # (B, T, H); context and motion are read from x
        scores = self.head(h)  # (B, T)
        return ModelOutput(scores=scores, features=h, extras=extras)


def build_model(spec: Mapping[str, Any], in_dim: int) -> AnomalyModel:
    """Build the model a resolved spec describes.

    Args:
        spec: A resolved model spec (a trial config's ``model``, or
            :func:`~ablate.models.spec.resolve_model_spec` of a raw one).
        in_dim: Input feature width D.

    Returns:
        The assembled :class:`AnomalyModel`.

    Raises:
        ValueError: A raw spec, or a bad ``in_dim``.
    """
    if isinstance(in_dim, bool) or not isinstance(in_dim, int) or in_dim <= 0:
        raise ValueError(f"in_dim must be a positive int, got {in_dim!r}")
    resolved = dict(require_resolved(spec, "model"))
    embed = REGISTRY.build("embed", resolved["embed"], in_dim)
    width = embed.out_dim
    clav = REGISTRY.build("clav", resolved["clav"], width)
    como = REGISTRY.build("como", resolved["como"], width, feature_dim=in_dim)
    head = REGISTRY.build("head", resolved["head"], width)
    return AnomalyModel(embed, clav, como, head, resolved, in_dim)
