"""Resuming a trial: the one loop that ``ablate train`` and a study's Tune trials share.

A trial resumes from the most advanced of the states it is offered (its own checkpoint
directory; in a study, also the checkpoint Tune restored and the newest one persisted under the
study), after checking the state is of the same trial: only ``train.epochs`` may differ, so a
finished trial can be trained further.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ablate.errors import AblateError

if TYPE_CHECKING:
    from ablate.config import TrialConfig
    from ablate.data import FeatureDataset
    from ablate.train.trainer import EpochResult, Trainer

OTHER_CONFIG = ("{where}: holds a checkpoint of a different config (changed: {changed}); use "
                "another output directory")


def check_same_trial(saved: dict[str, Any], config: TrialConfig, where: str | Path) -> None:
    """Refuses to resume a checkpoint of another config; only ``train.epochs`` may grow.

    Raises:
        AblateError: The configs differ, naming the top-level keys that do.
    """
    def comparable(body: dict[str, Any]) -> dict[str, Any]:
        return {**body, "train": {k: v for k, v in body["train"].items() if k != "epochs"}}

    old, new = comparable(saved), comparable(config.to_dict())
    if old != new:
        changed = sorted(k for k in new if old.get(k) != new[k])
        raise AblateError(OTHER_CONFIG.format(where=where, changed=", ".join(changed)))


def load_newest(trainer: Trainer, states: Iterable[dict[str, Any] | None],
                where: str | Path) -> bool:
    """Loads the most advanced of ``states`` (None entries skipped) into ``trainer``.

    Returns:
        Whether a state was loaded.

    Raises:
        AblateError: That state is of another config.
    """
    offered = [s for s in states if s is not None]
    if not offered:
        return False
    newest = max(offered, key=lambda s: s["epoch"])
    check_same_trial(newest["config"], trainer.config, where)
    trainer.load_state_dict(newest)
    return True


def resume(trainer: Trainer, checkpoint_dir: Path) -> bool:
    """Loads the newest checkpoint in ``checkpoint_dir`` into ``trainer`` if there is one.

    Raises:
        AblateError: The checkpoint is of another config, or none of them can be read.
    """
    from ablate.train.checkpoint import load_checkpoint

    return load_newest(trainer, [load_checkpoint(checkpoint_dir)], checkpoint_dir)


def run_trial(config: TrialConfig, dataset: FeatureDataset, checkpoint_dir: Path,
              on_epoch: Callable[[EpochResult], None] | None = None) -> Trainer:
    """Trains one trial to completion, checkpointing every epoch and resuming if possible."""
    from ablate.train.checkpoint import save_checkpoint
    from ablate.train.trainer import Trainer

    trainer = Trainer(config, dataset)
    resume(trainer, checkpoint_dir)
    for result in trainer.epochs():
        save_checkpoint(checkpoint_dir, trainer.state_dict())
        if on_epoch is not None:
            on_epoch(result)
    return trainer
