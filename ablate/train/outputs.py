"""Files a trial leaves beside its checkpoint, read by ``ablate run``'s MLflow logging."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ablate.train.trainer import Trainer

HISTORY = "history.json"  # per-epoch metrics, a list of {"epoch", "auc", "ap", ...}
SCORES = "scores.npz"  # per-video test snippet scores of the last scored epoch, by video id
CONFIG = "config.yaml"  # the resolved trial config
DATA = "data.json"  # {"sha256": the data fingerprint, "store": path}: read without torch


def write_trial_outputs(directory: Path, trainer: Trainer) -> None:
    """Writes the history, per-video scores, resolved config and data fingerprint of
    ``trainer``."""
    import numpy as np
    import yaml

    (directory / HISTORY).write_text(json.dumps(trainer.history))
    if trainer.last_scores:  # test is scored every train.eval_every epochs and at the last
        np.savez_compressed(directory / SCORES,
                            **dict(zip(trainer.test_ids, trainer.last_scores, strict=True)))
    (directory / CONFIG).write_text(yaml.safe_dump(trainer.config.to_dict(), sort_keys=False))
    (directory / DATA).write_text(json.dumps({"sha256": trainer.dataset.fingerprint,
                                              "store": str(trainer.dataset.path)}))
