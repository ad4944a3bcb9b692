"""The Ray Tune function trainable that runs one trial of a study.

It runs in a Ray worker: it resolves its trial config, memory-maps the feature store (the
store's cache is shared by every trial on the node), resumes from ``tune.get_checkpoint()`` when
Tune restores it, and reports every epoch with a checkpoint. It never talks to MLflow: the
driver logs what the checkpoints carry (``history.json``, ``scores.npz``, ``config.yaml``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ablate.config import apply_overrides, resolve_trial_config

TRIAL_INDEX = "__trial_index__"  # set by Ray's Repeater: which seed of a searched config
SCRATCH_PREFIX = "ablate-ckpt-"  # + "<pid>-": where a checkpoint is written before Tune takes it


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def sweep_stale_scratch(root: Path | None = None) -> None:
    """Removes the checkpoint scratch directories of trial processes that died mid-report.

    A killed worker (lost driver, OOM, preemption) never runs its ``TemporaryDirectory``
    cleanup, and each leftover holds a whole checkpoint; the next trial on the node removes
    them.
    """
    root = Path(tempfile.gettempdir()) if root is None else root
    for path in root.glob(f"{SCRATCH_PREFIX}*-*"):
        pid = path.name[len(SCRATCH_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


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


def newest_persisted_state(tune_path: str, trial_id: str) -> dict[str, Any] | None:
    """The most advanced readable checkpoint this trial persisted under ``tune_path``.

    Tune restores a trial from the checkpoint its last experiment snapshot recorded; a driver
    killed between a checkpoint and the next snapshot would make the trial redo epochs (or
    start over). The trial's own directory knows better. Local storage only.
    """
    import json

    from ablate.train.checkpoint import load_checkpoint
    from ablate.train.outputs import HISTORY

    if "://" in tune_path:
        return None
    ranked = []
    for history in Path(tune_path).glob(f"*_{trial_id}_*/checkpoint_*/{HISTORY}"):
        try:
            ranked.append((len(json.loads(history.read_text())), history.parent))
        except (OSError, ValueError):
            continue  # a checkpoint being written when the driver died
    for _, directory in sorted(ranked, key=lambda item: item[0], reverse=True):
        try:
            state = load_checkpoint(directory)
        except Exception:  # unreadable: try the next older one
            continue
        if state is not None:
            return state
    return None


def train_trial(config: dict[str, Any], plan: dict[str, Any], dataset: str,
                tune_path: str) -> None:
    """Tune entry point (bound with ``tune.with_parameters``).

    ``dataset`` is the spec's dataset: a store path, or the synthetic default, which each node
    generates into its own cache on first use. ``tune_path`` is the study's Tune directory.
    """
    from ray import tune

    from ablate.data import load
    from ablate.study.runner import resolve_dataset
    from ablate.train.checkpoint import load_checkpoint, save_checkpoint
    from ablate.train.outputs import write_trial_outputs
    from ablate.train.trainer import Trainer

    sweep_stale_scratch()
    raw, variant, seed = trial_raw_config(config, plan)
    trial_config = resolve_trial_config(raw)
    trainer = Trainer(trial_config, load(resolve_dataset(dataset)))
    known = None  # the state of the checkpoint Tune restored this trial from, if any
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            known = load_checkpoint(Path(directory))
    persisted = newest_persisted_state(tune_path, tune.get_context().get_trial_id())
    states = [s for s in (persisted, known) if s is not None]
    if states:
        trainer.load_state_dict(max(states, key=lambda s: s["epoch"]))
    start_epoch = trainer.epoch  # > 0 when this attempt continues from a checkpoint

    def report(metrics: dict[str, float], seconds: float) -> None:
        with tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-") as directory:
            save_checkpoint(Path(directory), trainer.state_dict())
            write_trial_outputs(Path(directory), trainer)
            tune.report({**metrics, "epoch": trainer.epoch, "variant": variant, "seed": seed,
                         "epoch_seconds": seconds, "start_epoch": start_epoch},
                        checkpoint=tune.Checkpoint.from_directory(directory))

    if trainer.history and trainer.epoch > (known["epoch"] if known else 0):
        # Resumed past what Tune's snapshot recorded (possibly past the last epoch, leaving
        # nothing to train): report that epoch again, so Tune's last result and checkpoint,
        # which the driver logs and summarises, are the trial's newest and not older ones.
        trainer.evaluate()  # the test scores of the loaded model, for the checkpoint's outputs
        report({k: v for k, v in trainer.history[-1].items() if k != "epoch"}, 0.0)
    for result in trainer.epochs():
        report(result.metrics, result.seconds)
