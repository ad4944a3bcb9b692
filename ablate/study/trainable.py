"""The Ray Tune function trainable that runs one trial of a study.

It runs in a Ray worker: it resolves its trial config, memory-maps the feature store (the
store's cache is shared by every trial on the node), resumes from ``tune.get_checkpoint()`` when
Tune restores it, and reports every epoch with a checkpoint. It never talks to MLflow: the
driver logs what the checkpoints carry (``history.json``, ``scores.npz``, ``config.yaml``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from ablate.config import apply_overrides, resolve_trial_config

TRIAL_INDEX = "__trial_index__"  # set by Ray's Repeater: which seed of a searched config


def trial_raw_config(config: dict[str, Any], plan: dict[str, Any]) -> tuple[dict, str, int]:
    """The raw trial mapping, variant name and seed for a Tune ``config``.

    Ablation trials carry ``trial_key`` (looked up in the plan); search trials carry sampled
    values under dotted keys, plus the Repeater's index choosing the seed.
    """
    if "trial_key" in config:
        entry = plan["trials"][config["trial_key"]]
        return entry["raw"], entry["variant"], entry["seed"]
    sampled = {k: v for k, v in config.items() if k != TRIAL_INDEX}
    seed = plan["seeds"][int(config.get(TRIAL_INDEX, 0)) % len(plan["seeds"])]
    raw = apply_overrides(plan["base"], sampled)
    return {**raw, "seed": seed}, "search", seed


def train_trial(config: dict[str, Any], plan: dict[str, Any], dataset: str) -> None:
    """Tune entry point (bound with ``tune.with_parameters``).

    ``dataset`` is the spec's dataset: a store path, or the synthetic default, which each node
    generates into its own cache on first use.
    """
    from ray import tune

    from ablate.data import load
    from ablate.study.runner import resolve_dataset
    from ablate.train.checkpoint import load_checkpoint, save_checkpoint
    from ablate.train.outputs import write_trial_outputs
    from ablate.train.trainer import Trainer

    raw, variant, seed = trial_raw_config(config, plan)
    trial_config = resolve_trial_config(raw)
    trainer = Trainer(trial_config, load(resolve_dataset(dataset)))
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = load_checkpoint(Path(directory))
        if state is not None:
            trainer.load_state_dict(state)
    start_epoch = trainer.epoch  # > 0 when this attempt continues from a checkpoint
    for result in trainer.epochs():
        with tempfile.TemporaryDirectory(prefix="ablate-ckpt-") as directory:
            save_checkpoint(Path(directory), trainer.state_dict())
            write_trial_outputs(Path(directory), trainer)
            metrics = {**result.metrics, "epoch": result.epoch, "variant": variant,
                       "seed": seed, "epoch_seconds": result.seconds, "start_epoch": start_epoch}
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory))
