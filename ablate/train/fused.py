"""Fused trials: the seeds of one model variant trained as one vectorised model.

A study trains every variant with several seeds. One small model leaves a GPU launch-bound, so N
trials of one architecture pay N times the kernel launches of one. A :class:`FusedTrainer` trains
them in one process as one model: each step stacks the members' parameters, runs one
``torch.func.vmap``-ed forward pass over N batches (one per member) and one backward pass;
evaluation is vmapped over the members with each video shared. ``members_per_call`` sets how many
members one call serves: all of them on CUDA by default, one on CPU, where a vectorised call is
no faster (batched matrix products and N times larger activations cost what the saved calls
gain), so that on CPU a fused trial costs what its separate trials cost.

Every member keeps its identity. It is a :class:`FusedMember`, a
:class:`~ablate.train.trainer.Trainer` of its own config holding its own model (the parameters
that are stacked), Adam, batch RNG, dropout RNG, epoch and history; its ``state_dict()`` is a
Trainer checkpoint, so a member resumes as a separate trial and a separate trial's checkpoint
joins a fused one. :meth:`FusedTrainer.stop` takes a member out of the vmapped batch (an early
stopping decision); a member whose loss fails fails alone and the others go on.

Equivalence with separate trials. A member is initialised exactly as ``Trainer(config, dataset)``
initialises it (torch's RNG seeded with its seed), draws the same batches and crops from its own
numpy RNG (:func:`~ablate.train.data.epoch_batches`), and the same dropout masks: in the
parameterless copy of the model that serves all members (:mod:`ablate.train.vectorised`), each
``nn.Dropout`` multiplies by a given mask, which every member draws from its own generator with the
calls ``nn.Dropout`` makes on CPU (``bernoulli_(1 - p)``, then ``div_(1 - p)``), layer by layer in
the order its separate forward pass draws them. Its loss is its own
:class:`~ablate.models.losses.Objective` on its slice of the output, its optimizer its own Adam. So
on CPU, one member per call, a member equals its separate trial bit for bit. A vmapped call changes
the float32 reduction order (a batched matrix product instead of one per model), about one ulp per
forward pass: members then follow their separate runs to about 1e-5 over a few epochs
(``tests/test_fused.py`` states the tolerance), and a fused run is still deterministic, so a fused
trial resumed from its members' checkpoints repeats a straight fused run exactly. On CUDA the
separate run's dropout comes from the fused dropout kernel's own random stream, which cannot be
replayed; members draw from their own CUDA generators there: statistically equivalent, as bfloat16
CUDA runs are not bit-reproducible anyway.

Design costs. Each member keeps its own Adam over its own parameters, stacked afresh each step (a
copy of the parameters, small next to the activations). One Adam over stacked tensors would
compute the same numbers (Adam is elementwise) but only for equal learning rates, weight decays
and step counts, and stopping or checkpointing a member would mean slicing its state; with one
Adam per member, members may differ in ``lr``, ``weight_decay``, ``epochs`` and the loss
(:data:`FUSABLE`), a stopped member simply gets no gradient, and its optimizer state is the
Trainer's. The loss runs per member on its slice of the output, because ``Objective`` reports its
terms as Python floats, which vmap cannot trace; it is a few small kernels per member. Both costs
grow with N on a GPU; ``benchmarks/bench_fused.py`` measures what fusion gains net of them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ablate.config import FUSABLE, TrialConfig, unshared_keys
from ablate.errors import AblateError
from ablate.train.data import TrialData, batch_labels, epoch_batches
from ablate.train.device import _as_float, autocast, pick_device, set_cpu_threads
from ablate.train.scoring import evaluate_trials, score_videos
from ablate.train.trainer import (
    LOSS_NOT_FINITE,
    EpochResult,
    LossMeans,
    Trainer,
)
from ablate.train.vectorised import VectorisedModel

if TYPE_CHECKING:
    from ablate.data import FeatureDataset

NO_CONFIGS = "a fused trial needs at least one trial config"
NOT_FUSABLE = ("config {index} cannot join a fused trial with config 0: they differ in {keys}; "
               "members may differ only in " + ", ".join(FUSABLE))
SAME_TRIAL = "configs {first} and {second} are the same trial; a fused trial trains each once"
OBJECTIVE_FAILED = "{error} (epoch {epoch}, step {step})"
MEMBER_FAILED = "fused member {index} (seed {seed}): {error}"


class FusedMember(Trainer):
    """One trial of a fused trial: a :class:`Trainer` of its own config whose training steps the
    :class:`FusedTrainer` runs.

    Its model, objective, Adam and batch RNG are built exactly as ``Trainer(config, dataset)``
    builds them; dropout draws from the member's own generator (torch's global RNG is left as it
    was), and ``state_dict()`` holds that generator's state where a Trainer's holds the global
    one, so checkpoints move freely between separate and fused trials.

    Args:
        config: The member's resolved trial config.
        dataset: The loaded feature store.
        data: The data views shared by all members.
        index: The member's position in the fused trial.

    Attributes:
        index: The member's position in the fused trial.
        stopped: Taken out of training and evaluation (:meth:`FusedTrainer.stop`, or failed).
        error: Why the member failed (its loss was not finite or could not be computed), else
            None.
    """

    def __init__(self, config: TrialConfig, dataset: FeatureDataset, data: TrialData,
                 index: int) -> None:
        cuda = data.train_set.device == "cuda"
        with torch.random.fork_rng(devices=_cuda_devices(cuda)):
            self._setup(config, dataset, data)  # seeds torch's RNG and initialises the model
            self.generator = torch.Generator()
            self.generator.set_state(torch.get_rng_state())  # where the separate run's dropout
            # starts drawing: right after initialisation
        self.cuda_generator = (torch.Generator(device="cuda").manual_seed(config.seed) if cuda
                               else None)
        self.index = index
        self.stopped = False
        self.error: str | None = None

    @property
    def due(self) -> bool:
        """Whether the member trains in the next fused epoch."""
        return not self.stopped and self.epoch < self.config.train.epochs

    @property
    def dropout_generator(self) -> torch.Generator:
        """The generator the member's dropout masks come from, on the training device."""
        return self.cuda_generator if self.cuda_generator is not None else self.generator

    def fail(self, error: str) -> None:
        """Records why the member failed and stops it; the other members go on."""
        self.error = error
        self.stopped = True

    def _torch_rng_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"torch_rng": self.generator.get_state()}
        if self.cuda_generator is not None:
            state["cuda_rng"] = self.cuda_generator.get_state()
        return state

    def _load_torch_rng_state(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["torch_rng"])
        if self.cuda_generator is not None and "cuda_rng" in state:
            self.cuda_generator.set_state(state["cuda_rng"])

    def train_epoch(self) -> dict[str, float]:
        """One epoch of this member alone, unfused, exactly as a separate Trainer with its state
        runs it: its generators stand in for torch's global RNG meanwhile."""
        with torch.random.fork_rng(devices=_cuda_devices(self.cuda_generator is not None)):
            Trainer._load_torch_rng_state(self, self._torch_rng_state())
            try:
                return super().train_epoch()
            finally:
                self._load_torch_rng_state(Trainer._torch_rng_state(self))


class FusedTrainer:
    """Trains the seeds of one model variant as one vectorised model.

    Args:
        configs: Resolved trial configs that differ only in :data:`FUSABLE` keys (a study's
            fused group: a variant's seeds, or with ``fuse: compatible`` several variants').
        dataset: A loaded feature store.
        members_per_call: Members that one vmapped forward pass serves; the members are run in
            groups of this size. None: all of them on CUDA, one on CPU, where a vectorised call
            is no faster (the batched kernels and N times larger activations cost what the
            saved calls gain) and one member per call runs its separate trial's own kernels.

    Raises:
        AblateError: The configs cannot be fused (the message names the differing keys), two are
            the same trial, or the model cannot be vectorised.
    """

    def __init__(self, configs: Sequence[TrialConfig], dataset: FeatureDataset,
                 members_per_call: int | None = None) -> None:
        check_fusable(configs)
        if members_per_call is not None and members_per_call < 1:
            raise ValueError(f"members_per_call must be >= 1, got {members_per_call}")
        opts = configs[0].train
        self.device = pick_device(opts.device)
        if self.device == "cpu":
            set_cpu_threads(opts.threads)
        self.dataset = dataset
        self.amp = opts.amp
        self.data = TrialData(dataset, opts, self.device)
        self.members = [FusedMember(config, dataset, self.data, i)
                        for i, config in enumerate(configs)]
        if members_per_call is None:
            members_per_call = len(configs) if self.device == "cuda" else 1
        self.members_per_call = members_per_call
        batch = (opts.batch_size, opts.segments, dataset.dim)
        self._vectorised = VectorisedModel(self.members[0].model, batch)

    # -- members -----------------------------------------------------------------------------

    @property
    def active(self) -> list[int]:
        """Indices of the members still to train: not stopped, not failed, epochs left."""
        return [m.index for m in self.members if m.due]

    def stop(self, member: int) -> None:
        """Takes a member out of training and evaluation for good (e.g. a scheduler stopped its
        trial): its parameters, optimizer and RNG states stay as they are, so its
        ``state_dict()`` resumes it later, fused or alone."""
        self.members[member].stopped = True

    def failures(self) -> list[str]:
        """Why members failed (their loss was not finite or could not be computed) while the
        others trained on, each named with its seed."""
        return [MEMBER_FAILED.format(index=m.index, seed=m.config.seed, error=m.error)
                for m in self.members if m.error is not None]

    # -- training ----------------------------------------------------------------------------

    def epochs(self) -> Iterator[dict[int, EpochResult]]:
        """Trains every active member one epoch at a time until none is left, yielding each
        epoch's results by member index; a member that failed in the epoch or was stopped before
        it is absent. Members may be at different epochs (resumed from different checkpoints);
        each stops at its own ``train.epochs``. ``seconds`` is the fused epoch's wall time."""
        while True:
            members = [m for m in self.members if m.due]
            if not members:
                return
            start = time.perf_counter()
            losses = self._train_epoch(members)
            members = [m for m in members if m.error is None]
            if not members:
                continue
            tested = [m for m in members if m.scores_test_after(m.epoch + 1)]
            metrics = self._evaluate(members, tested)
            seconds = time.perf_counter() - start
            yield {m.index: m._end_epoch(losses[m.index], metrics[m.index], seconds)
                   for m in members}

    def train_epoch(self) -> dict[int, dict[str, float]]:
        """One epoch of every active member; each one's mean loss terms, by member index (a
        member that fails meanwhile is absent and carries its ``error``)."""
        members = [m for m in self.members if m.due]
        losses = self._train_epoch(members)
        return {m.index: losses[m.index] for m in members if m.error is None}

    def evaluate(self, test: bool = True) -> dict[int, dict[str, float]]:
        """:meth:`Trainer.evaluate` of every member not stopped, by member index."""
        members = [m for m in self.members if not m.stopped]
        return self._evaluate(members, members if test else [])

    def _train_epoch(self, members: list[FusedMember]) -> dict[int, dict[str, float]]:
        if not members:
            return {}
        half = members[0].config.train.batch_size // 2
        labels = batch_labels(half, self.device)
        data = self.data
        means = {m.index: LossMeans() for m in members}
        for m in members:
            m.set_epoch_lr()
        draws = [epoch_batches(m.rng, data.abnormal, data.normal, half, data.train_set.crops)
                 for m in members]
        self._vectorised.template.train()
        for step, batches in enumerate(zip(*draws, strict=True)):
            live = [(m, batch) for m, batch in zip(members, batches, strict=True)
                    if m.error is None]
            if not live:
                break
            videos = np.concatenate([videos for _, (videos, _) in live])
            crops = np.concatenate([crops for _, (_, crops) in live])
            x = data.train_set.batch(videos, crops)  # (N * B, S, D): one gather for all
            x = x.view(len(live), -1, *x.shape[1:])  # (N, B, S, D)
            for m, value, terms in self._step([m for m, _ in live], x, labels, step):
                means[m.index].add(value, terms)
        return {index: meter.means() for index, meter in means.items() if meter.steps}

    def _step(self, members: list[FusedMember], x: torch.Tensor, labels: torch.Tensor,
              step: int) -> list[tuple[FusedMember, float, dict[str, float]]]:
        """One Adam step of every member on its own batch ``x[i]`` (N, B, S, D).

        Returns:
            (member, loss, loss terms) of the members that stepped; a member whose loss is not
            finite or cannot be computed fails instead, as its separate trial would have.
        """
        with autocast(self.device, self.amp):
            outputs = self._vectorised.train_outputs(
                [list(m.model.parameters()) for m in members],
                [m.dropout_generator for m in members], x, self.members_per_call)
        computed = []
        for m, out in zip(members, outputs, strict=True):
            m.optimizer.zero_grad(set_to_none=True)
            try:  # losses in float32, as the Trainer computes them
                loss, terms = m.objective(_as_float(out), labels)
            except RuntimeError as exc:  # e.g. BCE refusing NaN scores: this member's failure
                m.fail(OBJECTIVE_FAILED.format(error=exc, epoch=m.epoch + 1, step=step + 1))
                continue
            computed.append((m, loss, terms))
        if not computed:
            return []
        values = torch.stack([loss for _, loss, _ in computed]).detach().cpu().tolist()  # 1 sync
        stepped = []
        for (m, loss, terms), value in zip(computed, values, strict=True):
            if math.isfinite(value):
                stepped.append((m, loss, value, terms))
            else:
                m.fail(LOSS_NOT_FINITE.format(loss=value, epoch=m.epoch + 1, step=step + 1))
        if stepped:
            # Members are independent: the sum's gradient is each member's own loss gradient.
            torch.stack([loss for _, loss, _, _ in stepped]).sum().backward()
            for m, _, _, _ in stepped:
                m.optimizer.step()
        for m in members:
            if m.error is not None:
                m.optimizer.zero_grad(set_to_none=True)  # drops a failed slice's gradient
        return [(m, value, terms) for m, _, value, terms in stepped]

    # -- evaluation --------------------------------------------------------------------------

    def _evaluate(self, members: list[FusedMember],
                  tested: list[FusedMember]) -> dict[int, dict[str, float]]:
        """Validation metrics of ``members`` and test metrics of ``tested`` (a subset), as a
        Trainer's evaluate computes them, by member index."""
        evaluations = evaluate_trials(members, tested, self._score)
        for member, evaluation in zip(members, evaluations, strict=True):
            if evaluation.test_scores is not None:
                member.last_scores = evaluation.test_scores
        return {m.index: e.metrics for m, e in zip(members, evaluations, strict=True)}

    def _score(self, members: Sequence[Any],
               video_ids: list[str]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """:func:`~ablate.train.scoring.score_videos` of every member at once: (N, T) per
        video."""
        vectorised = self._vectorised
        with torch.no_grad():
            stacked = (vectorised.stack([list(m.model.parameters()) for m in members])
                       if self.members_per_call > 1 else {})
        vectorised.template.eval()
        models = [m.model for m in members]
        for model in models:
            model.eval()
        opts = members[0].config.train
        return score_videos(self.dataset, video_ids,
                            lambda x: vectorised.eval_scores(models, stacked,
                                                             self.members_per_call, x),
                            self.device, self.amp, opts.eval_chunk)


def check_fusable(configs: Sequence[TrialConfig]) -> None:
    """Refuses configs that cannot train as one fused trial.

    Raises:
        AblateError: No configs; two configs differ in keys outside
            :data:`~ablate.config.FUSABLE` (the message names them, dotted); or two configs are
            the same trial.
    """
    if not configs:
        raise AblateError(NO_CONFIGS)
    for index, config in enumerate(configs):
        keys = unshared_keys(configs[0], config)
        if keys:
            raise AblateError(NOT_FUSABLE.format(index=index, keys=", ".join(keys)))
        if config in configs[:index]:
            raise AblateError(SAME_TRIAL.format(first=configs.index(config), second=index))


# -- helpers ----------------------------------------------------------------------------------

def _cuda_devices(cuda: bool) -> list[int]:
    """The devices whose RNG ``torch.random.fork_rng`` must save: the current GPU on CUDA."""
    return [torch.cuda.current_device()] if cuda else []
