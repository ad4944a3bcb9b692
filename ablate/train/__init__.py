"""One trial: train a model variant on a feature store, evaluate every epoch, checkpoint, resume."""

from ablate.train.trainer import EpochResult, Trainer

__all__ = ["EpochResult", "Trainer"]
