"""The Ray Tune function trainable that runs one trial of a study: an adapter between Tune and
the trial driver (:mod:`ablate.train.driver`).

It runs in a Ray worker: it takes its resolved trial configs from the plan, memory-maps the
feature store (the store's cache is shared by every trial on the node), offers the driver what
Tune restored and what the study persisted to resume from, and reports every epoch with a
checkpoint. It never talks to the tracking store: the driver process logs what the checkpoints
carry (``history.json``, ``scores.npz``, ``config.yaml``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ablate.study.plan import member_dir
from ablate.train.driver import Results, Unit, drive, open_unit, resume
from ablate.train.trainer import EpochResult

if TYPE_CHECKING:
    from ablate.study.plan import Plan, PlannedTrial

# What a trial offered a checkpoint of other data is told: the last line of defence, since the
# driver refuses such a study before Tune starts (ablate.engine.samedata).
STUDY_REMEDY = ("restore the data the study started on, or run it as a new study with --name "
                "NEW_NAME")
NODE_DATA = ("trial {key}: the store {store} on this node holds other data than the driver's "
             "(features sha256 {here} here, {driver} there); give every node the same store")
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


def newest_persisted_state(tune_path: str, key: str, plan: Plan) -> dict[str, Any] | None:
    """The most advanced readable checkpoint persisted under ``tune_path`` for the trial ``key``.

    Tune restores a trial from the checkpoint its last experiment snapshot recorded; a driver
    killed between a checkpoint and the next snapshot would make the trial redo epochs, and a
    lost snapshot would make it start over. The trial directories know better: any attempt at
    the same trial identity counts. Local storage only.
    """
    from ablate.engine.tunestate import checkpoints_of
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


def _store(dataset: str) -> Any:
    """The loaded store of the spec's ``dataset`` (a reused worker keeps it open)."""
    from ablate.data import load
    from ablate.data.source import ensure_store

    if dataset not in _DATASETS:
        _DATASETS[dataset] = load(ensure_store(dataset))
    return _DATASETS[dataset]


def _restored(count: int) -> list[dict[str, Any] | None]:
    """Each member's state in the checkpoint Tune restored this trial from (None: none)."""
    from ray import tune

    from ablate.train.checkpoint import load_checkpoint

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return [None] * count
    with checkpoint.as_directory() as directory:
        return [load_checkpoint(member_dir(Path(directory), i, count)) for i in range(count)]


class TuneReport:
    """The driver's ``on_epoch`` in a Tune trial: every member's checkpoint and outputs in one
    Tune checkpoint (a member's in its own subdirectory when fused,
    :func:`~ablate.study.plan.member_dir`), and one ``tune.report`` of the epoch. A lone trial
    reports its metrics at the top level, a fused one each member's under ``members``."""

    def __init__(self, unit: Unit, members: Sequence[PlannedTrial], start_epoch: int) -> None:
        self.unit = unit
        self.members = members
        self.start_epoch = start_epoch  # > 0 when this attempt continues

    def __call__(self, results: Results) -> None:
        from ray import tune

        from ablate.train.checkpoint import save_checkpoint
        from ablate.train.outputs import write_trial_outputs

        count = len(self.members)
        with tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-") as directory:
            for i, trainer in enumerate(self.unit.members):
                target = member_dir(Path(directory), i, count)
                save_checkpoint(target, trainer.state_dict())
                write_trial_outputs(target, trainer)
            seconds = next(iter(results.values())).seconds
            if count == 1:
                (result,) = results.values()
                body: dict[str, Any] = {**result.metrics, "epoch": result.epoch,
                                        "variant": self.members[0].variant,
                                        "seed": self.members[0].seed}
            else:
                body = {"epoch": max(r.epoch for r in results.values()),
                        "variant": self.members[0].variant,
                        "members": {self.members[i].key: {**r.metrics, "epoch": r.epoch}
                                    for i, r in results.items()}}
            tune.report({**body, "epoch_seconds": seconds, "start_epoch": self.start_epoch},
                        checkpoint=tune.Checkpoint.from_directory(directory))


class RungsDecision:
    """The driver's ``decide`` for a study with a scheduler: asks the study's rungs (the Ray
    actor of :class:`~ablate.engine.asha.RungsKeeper`) about every member after each epoch,
    and waits while the rungs wait for earlier trials (:mod:`ablate.study.rungs`)."""

    POLL_SECONDS = 0.2

    def __init__(self, rungs: Any, unit: Unit, keys: Sequence[str], metric: str) -> None:
        self.rungs = rungs
        self.unit = unit
        self.keys = list(keys)
        self.metric = metric

    def stopped(self) -> set[int]:
        """The members stopped at a rung at or before the epoch they resumed at (the driver
        was interrupted after the decision); one resumed behind it trains up to it."""
        from ray import get

        epochs = {key: self.unit.members[i].epoch for i, key in enumerate(self.keys)}
        return {self.keys.index(k) for k in get(self.rungs.stopped_at.remote(epochs))}

    def __call__(self, results: Results) -> set[int]:
        from ray import get

        asked = {}
        for i, result in results.items():
            config = self.unit.members[i].config
            asked[self.keys[i]] = (result.epoch, result.metrics.get(self.metric),
                                   result.epoch >= config.train.epochs)
        stopped: list[str] = []
        while asked:
            done, waiting = get(self.rungs.ask.remote(asked))
            stopped.extend(done)
            asked = {key: asked[key] for key in waiting}
            if asked:
                time.sleep(self.POLL_SECONDS)
        return {self.keys.index(k) for k in stopped}


def train_trial(config: dict[str, Any], plan: Plan, dataset: str, tune_path: str,
                rungs: Any = None, data_sha256: str | None = None) -> None:
    """Tune entry point (bound with ``tune.with_parameters``): trains the plan's trial, or with
    fusion a group of trials as one model, through the trial driver (:mod:`ablate.train.driver`).

    ``dataset`` is the spec's dataset: a store path, or the synthetic default, which each node
    generates into its own cache on first use. ``tune_path`` is the study's Tune directory.
    ``rungs`` (a study with a scheduler) is the Ray actor of the study's rungs
    (:mod:`ablate.engine.asha`): a member it stops trains no further (a fused one is masked in
    the fused model while the rest go on). ``data_sha256`` is the fingerprint of the store the
    driver checked: a node whose store differs, or a checkpoint of other data, is refused.
    """
    sweep_stale_scratch()
    members = plan.members(config)
    store = _store(dataset)
    if data_sha256 is not None and store.fingerprint != data_sha256:
        from ablate.data.layout import short_fingerprint
        from ablate.errors import AblateError

        raise AblateError(NODE_DATA.format(key=members[0].key, store=store.path,
                                           here=short_fingerprint(store.fingerprint),
                                           driver=short_fingerprint(data_sha256)))
    unit = open_unit([m.config for m in members], store, plan.schedule.stop_epochs)
    restored = _restored(len(members))
    resume(unit, [[newest_persisted_state(tune_path, m.key, plan), restored[i]]
                  for i, m in enumerate(members)], [f"trial {m.key}" for m in members],
           STUDY_REMEDY)
    report = TuneReport(unit, members, min(t.epoch for t in unit.members))
    # Resumed past what Tune's snapshot recorded (possibly past the last epoch, leaving nothing
    # to train): report those epochs again, so Tune's last result and checkpoint, which the
    # driver logs and summarises, are the trial's newest and not older ones.
    ahead = {i: t for i, t in enumerate(unit.members)
             if t.history and t.epoch > (restored[i]["epoch"] if restored[i] else 0)}
    for trainer in ahead.values():
        trainer.evaluate()  # the test scores of the loaded model, for the outputs
    if ahead:
        report({i: EpochResult(t.epoch, {k: v for k, v in t.history[-1].items()
                                         if k != "epoch"}, 0.0) for i, t in ahead.items()})
    decide = None if rungs is None else RungsDecision(rungs, unit, [m.key for m in members],
                                                      plan.spec.metric)
    stopped = decide.stopped() if decide is not None else set()
    for i in stopped:  # stopped at a rung before the driver was interrupted
        unit.stop(i)
        trainer = unit.members[i]
        if len(stopped) < len(members) and trainer.history and i not in ahead:
            trainer.evaluate()  # the others go on: its outputs are still written each epoch
    drive(unit, report, decide)
