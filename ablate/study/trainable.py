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

from ablate.config import resolve_trial_config
from ablate.study.identity import identify, trial_raw_config

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


def newest_persisted_state(tune_path: str, key: str, plan: dict[str, Any]
                           ) -> dict[str, Any] | None:
    """The most advanced readable checkpoint persisted under ``tune_path`` for the trial ``key``.

    Tune restores a trial from the checkpoint its last experiment snapshot recorded; a driver
    killed between a checkpoint and the next snapshot would make the trial redo epochs, and a
    lost snapshot would make it start over. The trial directories know better: any attempt at
    the same trial identity counts. Local storage only.
    """
    from ablate.study.tunestate import checkpoints_of
    from ablate.train.checkpoint import load_checkpoint

    for _, directory in checkpoints_of(tune_path, key, plan):
        try:
            state = load_checkpoint(directory)
        except Exception:  # unreadable: try the next older one
            continue
        if state is not None:
            return state
    return None


# Per worker process: the spec's dataset -> the loaded store. Tune reuses a worker for the next
# trial (reuse_actors), so torch, the model code and the memory-mapped store stay warm.
_DATASETS: dict[str, Any] = {}


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
    raw, _ = trial_raw_config(config, plan)
    identity = identify(config, plan)
    trial_config = resolve_trial_config(raw)
    if dataset not in _DATASETS:  # a reused worker keeps the store (and its train view) open
        _DATASETS[dataset] = load(resolve_dataset(dataset))
    trainer = Trainer(trial_config, _DATASETS[dataset])
    known = None  # the state of the checkpoint Tune restored this trial from, if any
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            known = load_checkpoint(Path(directory))
    persisted = newest_persisted_state(tune_path, identity.key, plan)
    states = [s for s in (persisted, known) if s is not None]
    if states:
        trainer.load_state_dict(max(states, key=lambda s: s["epoch"]))
    start_epoch = trainer.epoch  # > 0 when this attempt continues from a checkpoint

    def report(metrics: dict[str, float], seconds: float) -> None:
        with tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-") as directory:
            save_checkpoint(Path(directory), trainer.state_dict())
            write_trial_outputs(Path(directory), trainer)
            tune.report({**metrics, "epoch": trainer.epoch, "variant": identity.variant,
                         "seed": identity.seed,
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
