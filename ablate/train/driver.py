"""The one trial driver: resume, the epoch loop, checkpoints and reports, for every way a trial
is trained.

A :class:`Unit` is what trains together: one trial (a :class:`~ablate.train.trainer.Trainer`,
wrapped as :class:`Lone`) or a fused group (a :class:`~ablate.train.fused.FusedTrainer`, whose
members are Trainers of their own configs). ``ablate train``, the plain loop, fused runs and a
study's Tune trainable all train a unit the same way:

1. :func:`resume` loads into each member the most advanced of the states it is offered (its own
   checkpoint directory; in a study, also what Tune restored and the newest checkpoint persisted
   under the study), after :func:`check_same_trial`: only ``train.epochs`` may differ, so a
   finished trial can be trained further; and :func:`check_same_data`: every state offered
   must have been trained on the data the member trains on (a checkpoint written before
   checkpoints recorded their data is accepted);
2. :func:`drive` runs the epochs, asking an optional ``decide`` (an early-stopping scheduler)
   which members stop after each, and hands every epoch's results to ``on_epoch``, which
   checkpoints and reports them;
3. a member that failed while the others went on (fused) fails the unit at the end.

:func:`train_in` is steps 1-3 with each member checkpointing into a directory of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ablate.errors import AblateError
from ablate.train.trainer import EpochResult, Trainer

if TYPE_CHECKING:
    from ablate.config import TrialConfig
    from ablate.data import FeatureDataset
    from ablate.train.fused import FusedTrainer

OTHER_CONFIG = ("{where}: holds a checkpoint of a different config (changed: {changed}); use "
                "another output directory")
OTHER_LENGTH = ("{where}: holds a checkpoint of a {old}-epoch {schedule} lr schedule; its epochs "
                "trained at that schedule's lr, so it cannot become a {new}-epoch run (only a "
                "constant lr can grow); use another output directory")
OTHER_DATA = ("{where}: holds a checkpoint trained on other data than the store {store} "
              "(features sha256 {old} in the checkpoint, {new} in the store); {remedy}")
OUT_REMEDY = "use another output directory, or the store it was trained on"
CHECKPOINT_DIRS = "{configs} trial configs but {dirs} checkpoint directories"

Results = dict[int, EpochResult]  # one epoch's results, by member index
OnEpoch = Callable[[Results], None]
Decide = Callable[[Results], set[int]]  # the members to stop after an epoch


class Unit(Protocol):
    """Trials trained together: their Trainers, epoch by epoch."""

    @property
    def members(self) -> Sequence[Trainer]: ...

    def epochs(self) -> Iterator[Results]:
        """Trains until no member has epochs left, yielding each epoch's results (a member
        stopped or failed is absent)."""

    def stop(self, member: int) -> None:
        """Takes a member out of training for good; its state stays resumable."""

    def failures(self) -> list[str]:
        """Why members failed while the others trained on (none for a lone trial, which raises
        at once)."""


class Lone:
    """One :class:`~ablate.train.trainer.Trainer` as a unit of one member."""

    def __init__(self, trainer: Trainer) -> None:
        self.members = (trainer,)
        self._stopped = False

    def epochs(self) -> Iterator[Results]:
        if self._stopped:
            return
        for result in self.members[0].epochs():
            yield {0: result}
            if self._stopped:
                return

    def stop(self, member: int) -> None:
        self._stopped = True

    def failures(self) -> list[str]:
        return []


def open_unit(configs: Sequence[TrialConfig], dataset: FeatureDataset,
              stop_epochs: frozenset[int] = frozenset()) -> Unit:
    """One config trains alone, several as a fused trial.

    Args:
        configs: Resolved trial configs (several: see :class:`~ablate.train.fused.FusedTrainer`).
        dataset: A loaded feature store.
        stop_epochs: Epochs after which a scheduler may stop a member: test is scored there
            too, so a member stopped early reports test scores of its final epoch (scoring
            draws no random numbers, so training is the same with or without them).
    """
    if len(configs) == 1:
        unit: Unit = Lone(Trainer(configs[0], dataset))
    else:
        from ablate.train.fused import FusedTrainer

        unit = FusedTrainer(configs, dataset)
    for member in unit.members:
        member.extra_test_epochs = stop_epochs
    return unit


def check_same_trial(saved: dict[str, Any], config: TrialConfig, where: str | Path) -> None:
    """Refuses to resume a checkpoint of another config; only ``train.epochs`` may grow, and
    only at a constant lr (a cosine schedule's epochs already trained at the lr of the old
    length, so growing it would not give the run that the new length trains straight).

    Raises:
        AblateError: The configs differ, naming the top-level keys that do; or a cosine
            schedule's length changed.
    """
    def comparable(body: dict[str, Any]) -> dict[str, Any]:
        return {**body, "train": {k: v for k, v in body["train"].items() if k != "epochs"}}

    old, new = comparable(saved), comparable(config.to_dict())
    if old != new:
        changed = sorted(k for k in new if old.get(k) != new[k])
        raise AblateError(OTHER_CONFIG.format(where=where, changed=", ".join(changed)))
    old_epochs, schedule = saved["train"]["epochs"], saved["train"].get("lr_schedule", "constant")
    if schedule != "constant" and old_epochs != config.train.epochs:
        raise AblateError(OTHER_LENGTH.format(where=where, old=old_epochs,
                                              new=config.train.epochs, schedule=schedule))


def check_same_data(saved: dict[str, Any], trainer: Trainer, where: str | Path,
                    remedy: str = OUT_REMEDY) -> None:
    """Refuses a checkpoint trained on other data than ``trainer``'s store (one without a
    recorded fingerprint predates them and is accepted).

    Raises:
        AblateError: Naming the store, both fingerprints and ``remedy``.
    """
    from ablate.data.layout import short_fingerprint

    old, new = saved.get("data_sha256"), trainer.dataset.fingerprint
    if old is not None and old != new:
        raise AblateError(OTHER_DATA.format(where=where, store=trainer.dataset.path,
                                            old=short_fingerprint(old),
                                            new=short_fingerprint(new), remedy=remedy))


def load_newest(trainer: Trainer, states: Iterable[dict[str, Any] | None],
                where: str | Path, remedy: str = OUT_REMEDY) -> bool:
    """Loads the most advanced of ``states`` (None entries skipped) into ``trainer``.

    Returns:
        Whether a state was loaded.

    Raises:
        AblateError: That state is of another config, or any offered one of other data
            (``remedy`` says what to do).
    """
    offered = [s for s in states if s is not None]
    if not offered:
        return False
    for state in offered:
        check_same_data(state, trainer, where, remedy)
    newest = max(offered, key=lambda s: s["epoch"])
    check_same_trial(newest["config"], trainer.config, where)
    trainer.load_state_dict(newest)
    return True


def resume(unit: Unit, offered: Sequence[Iterable[dict[str, Any] | None]],
           where: Sequence[str | Path], remedy: str = OUT_REMEDY) -> None:
    """Loads into each member the newest of the states offered to it (see :func:`load_newest`);
    ``where`` names each member's source in errors, ``remedy`` what to do about other data."""
    for member, states, place in zip(unit.members, offered, where, strict=True):
        load_newest(member, states, place, remedy)


def drive(unit: Unit, on_epoch: OnEpoch, decide: Decide | None = None) -> None:
    """Trains ``unit`` to the end: after each epoch, ``decide`` names the members to stop,
    ``on_epoch`` checkpoints and reports the epoch, then those members stop.

    Raises:
        AblateError: A member failed (fused members fail at the end, naming each).
    """
    for results in unit.epochs():
        ended = decide(results) if decide is not None else set()
        on_epoch(results)
        for member in ended:
            unit.stop(member)
    failed = unit.failures()
    if failed:
        raise AblateError("; ".join(failed))


def train_in(unit: Unit, directories: Sequence[Path],
             on_epoch: Callable[[int, EpochResult], None] | None = None) -> Unit:
    """Trains ``unit`` to completion, each member checkpointing every epoch into its own
    directory and resuming from it if possible (members may resume at different epochs; a
    member's directory is interchangeable with a separate trial's).

    Args:
        unit: What trains.
        directories: One per member.
        on_epoch: Called with the member index and its result after each member's epoch.

    Raises:
        AblateError: A checkpoint of another config; a member failed.
    """
    from ablate.train.checkpoint import load_checkpoint, save_checkpoint

    if len(directories) != len(unit.members):
        raise ValueError(CHECKPOINT_DIRS.format(configs=len(unit.members),
                                                dirs=len(directories)))
    resume(unit, [[load_checkpoint(d)] for d in directories], directories)

    def checkpoint(results: Results) -> None:
        for index, result in results.items():
            save_checkpoint(directories[index], unit.members[index].state_dict())
            if on_epoch is not None:
                on_epoch(index, result)

    drive(unit, checkpoint)
    return unit


def run_trial(config: TrialConfig, dataset: FeatureDataset, checkpoint_dir: Path,
              on_epoch: Callable[[EpochResult], None] | None = None) -> Trainer:
    """Trains one trial to completion, checkpointing every epoch and resuming if possible."""
    unit = train_in(Lone(Trainer(config, dataset)), [checkpoint_dir],
                    None if on_epoch is None else lambda _, result: on_epoch(result))
    return unit.members[0]


def run_fused(configs: Sequence[TrialConfig], dataset: FeatureDataset,
              checkpoint_dirs: Sequence[Path],
              on_epoch: Callable[[int, EpochResult], None] | None = None,
              members_per_call: int | None = None) -> FusedTrainer:
    """Trains ``configs`` as one fused trial (:class:`~ablate.train.fused.FusedTrainer`) to
    completion with :func:`train_in`.

    Raises:
        AblateError: As :class:`~ablate.train.fused.FusedTrainer`; a checkpoint of another
            config; after the others finished, any member whose loss was not finite (each named
            with its seed).
    """
    from ablate.train.fused import FusedTrainer

    if len(checkpoint_dirs) != len(configs):
        raise ValueError(CHECKPOINT_DIRS.format(configs=len(configs), dirs=len(checkpoint_dirs)))
    fused = FusedTrainer(configs, dataset, members_per_call)
    train_in(fused, checkpoint_dirs, on_epoch)
    return fused
