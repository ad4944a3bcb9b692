"""Per-snippet anomaly scorer."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from ablate.models.registry import POSITIVE, PROBABILITY, REGISTRY, Constraint


@REGISTRY.register("head", "mlp")
class MLPHead(nn.Module):
    """Linear -> ReLU -> Dropout -> Linear(-> 1) -> sigmoid: one score in (0, 1) per snippet.

    Args:
        in_dim: Feature width H (passed by the model, not an option).
        hidden: Width of the hidden layer.
        dropout: Dropout probability after the ReLU.
    """

    constraints: ClassVar[dict[str, Constraint]] = {"hidden": POSITIVE, "dropout": PROBABILITY}

    def __init__(self, in_dim: int, hidden: int = 64, dropout: float = 0.3) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, 1)
        self.out_dim = 1

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Score snippets: (B, T, H) -> (B, T)."""
        z = self.drop(torch.relu(self.fc1(h)))  # (B, T, hidden)
        return torch.sigmoid(self.fc2(z)).squeeze(-1)  # (B, T)
