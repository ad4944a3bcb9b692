"""One trial: train a model variant on a feature store, evaluate every epoch, checkpoint, resume.

Fused trials (:mod:`ablate.train.fused`: several trials of one architecture as one vectorised
model) are exported lazily, so that importing this package does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ablate.train.trainer import EpochResult, Trainer

if TYPE_CHECKING:
    from ablate.train.fused import FusedMember, FusedTrainer

__all__ = ["EpochResult", "FusedMember", "FusedTrainer", "Trainer"]

_FUSED = ("FusedMember", "FusedTrainer")


def __getattr__(name: str) -> Any:
    if name in _FUSED:
        from ablate.train import fused

        return getattr(fused, name)
    raise AttributeError(f"module 'ablate.train' has no attribute {name!r}")
