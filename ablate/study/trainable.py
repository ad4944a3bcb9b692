"""The Ray Tune function trainable that runs one trial of a study.

It runs in a Ray worker: it takes its resolved trial config from the plan, memory-maps the
feature store (the store's cache is shared by every trial on the node), resumes from
``tune.get_checkpoint()`` when Tune restores it, and reports every epoch with a checkpoint. It
never talks to MLflow: the driver logs what the checkpoints carry (``history.json``,
``scores.npz``, ``config.yaml``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ablate.study.plan import Plan

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


def train_trial(config: dict[str, Any], plan: Plan, dataset: str, tune_path: str,
                rungs: Any = None) -> None:
    """Tune entry point (bound with ``tune.with_parameters``): trains the plan's trial, or with
    fusion a group of trials as one model (:class:`~ablate.train.fused.FusedTrainer`).

    ``dataset`` is the spec's dataset: a store path, or the synthetic default, which each node
    generates into its own cache on first use. ``tune_path`` is the study's Tune directory.

    A lone trial reports its metrics at the top level; a fused one reports each member's under
    ``members`` (by trial key) and checkpoints each member into its own subdirectory
    (:func:`~ablate.study.plan.member_dir`), laid out as a lone trial's checkpoint.

    ``rungs`` (a fused study with ASHA) is the Ray actor of the study's
    :class:`~ablate.study.rungs.Rungs`: after each epoch the trial asks it about each member,
    and a member it stops trains no further (masked in the fused model) while the rest go on.
    """
    from ray import get as ray_get
    from ray import tune

    from ablate.data import load
    from ablate.data.source import ensure_store
    from ablate.errors import AblateError
    from ablate.study.plan import member_dir
    from ablate.train.checkpoint import load_checkpoint, save_checkpoint
    from ablate.train.outputs import write_trial_outputs
    from ablate.train.resume import load_newest
    from ablate.train.trainer import EpochResult, Trainer

    sweep_stale_scratch()
    members = plan.members(config)
    if dataset not in _DATASETS:  # a reused worker keeps the store (and its train view) open
        _DATASETS[dataset] = load(ensure_store(dataset))
    store = _DATASETS[dataset]
    if len(members) == 1:
        trainers: list[Trainer] = [Trainer(members[0].config, store)]
        fused = None
    else:
        from ablate.train.fused import FusedTrainer

        fused = FusedTrainer([m.config for m in members], store)
        trainers = list(fused.members)
    for trainer in trainers:  # a trial the scheduler stops has test scores of its last epoch
        trainer.extra_test_epochs = plan.stop_epochs
    count = len(members)
    known: list[dict[str, Any] | None] = [None] * count  # what Tune restored this trial from
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            known = [load_checkpoint(member_dir(Path(directory), i, count))
                     for i in range(count)]
    for i, (member, trainer) in enumerate(zip(members, trainers, strict=True)):
        persisted = newest_persisted_state(tune_path, member.key, plan)
        load_newest(trainer, [persisted, known[i]], where=f"trial {member.key}")
    start_epoch = min(t.epoch for t in trainers)  # > 0 when this attempt continues

    def report(results: dict[int, EpochResult], seconds: float) -> None:
        with tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-") as directory:
            for i, trainer in enumerate(trainers):
                target = member_dir(Path(directory), i, count)
                save_checkpoint(target, trainer.state_dict())
                write_trial_outputs(target, trainer)
            if fused is None:
                (result,) = results.values()
                body: dict[str, Any] = {**result.metrics, "epoch": result.epoch,
                                        "variant": members[0].variant, "seed": members[0].seed}
            else:
                body = {"epoch": max(r.epoch for r in results.values()),
                        "variant": members[0].variant,
                        "members": {members[i].key: {**r.metrics, "epoch": r.epoch}
                                    for i, r in results.items()}}
            tune.report({**body, "epoch_seconds": seconds, "start_epoch": start_epoch},
                        checkpoint=tune.Checkpoint.from_directory(directory))

    # Resumed past what Tune's snapshot recorded (possibly past the last epoch, leaving nothing
    # to train): report those epochs again, so Tune's last result and checkpoint, which the
    # driver logs and summarises, are the trial's newest and not older ones.
    ahead = {i: t for i, t in enumerate(trainers)
             if t.history and t.epoch > (known[i]["epoch"] if known[i] else 0)}
    if ahead:
        for trainer in ahead.values():
            trainer.evaluate()  # the test scores of the loaded model, for the outputs
        report({i: EpochResult(t.epoch, {k: v for k, v in t.history[-1].items() if k != "epoch"},
                               0.0) for i, t in ahead.items()}, 0.0)
    keys = [m.key for m in members]
    stopped = set(ray_get(rungs.stopped_among.remote(keys))) if rungs is not None else set()

    def decide(results: dict[int, EpochResult]) -> set[int]:
        """The members the rungs stop after this epoch (none without rungs)."""
        if rungs is None:
            return set()
        metric = plan.spec.metric
        asked = {keys[i]: (r.epoch, r.metrics.get(metric)) for i, r in results.items()}
        return {keys.index(k) for k in ray_get(rungs.decide_all.remote(asked))}

    if fused is None:
        if keys[0] in stopped:  # stopped at a rung before the driver was interrupted
            return
        for result in trainers[0].epochs():
            ended = decide({0: result})
            report({0: result}, result.seconds)
            if ended:
                return
        return
    for i, key in enumerate(keys):
        if key in stopped:  # masked from here on; scored again for the outputs it still writes
            fused.stop(i)
            if trainers[i].history and i not in ahead:
                trainers[i].evaluate()
    for results in fused.epochs():
        ended = decide(results)
        report(results, next(iter(results.values())).seconds)
        for i in ended:
            fused.stop(i)
    failed = [f"{members[m.index].key}: {m.error}" for m in fused.members if m.error is not None]
    if failed:
        raise AblateError("fused trial failed for " + "; ".join(failed))
