"""Snippet embedding: the first layer every model variant shares."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from ablate.models.registry import POSITIVE, PROBABILITY, REGISTRY, Constraint


@REGISTRY.register("embed", "mlp")
class MLPEmbed(nn.Module):
    """Linear(D -> hidden) + ReLU + Dropout, applied to every snippet independently.

    Args:
        in_dim: Input feature width D (passed by the model, not an option).
        hidden: Width H of the embedding, i.e. of every later feature (64: half the synthetic
            benchmark's D, which keeps a default study within minutes on 2 cores; use more for
            2048-d I3D features).
        dropout: Dropout probability after the ReLU.
    """

    constraints: ClassVar[dict[str, Constraint]] = {"hidden": POSITIVE, "dropout": PROBABILITY}

    def __init__(self, in_dim: int, hidden: int = 64, dropout: float = 0.3) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, hidden)
        self.drop = nn.Dropout(dropout)
        self.out_dim = hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Embed snippets: (B, T, D) -> (B, T, H)."""
        return self.drop(torch.relu(self.proj(x)))
