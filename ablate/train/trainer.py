"""The training loop of one trial.

Training follows the field's protocol (RTFM, Tian et al. 2021): each step draws half the batch
from normal and half from abnormal training videos, each resampled to 32 segments, one random
crop per video; an epoch is one pass over the abnormal videos. A label-stratified validation split
is held out of the train videos first (:mod:`ablate.data.splits`). After every epoch the
validation videos are scored and evaluated at the video level (``val_auc``, ``val_ap``: what
selection may use), and the test split is scored at full length (or in windows of
``train.eval_chunk`` snippets, :mod:`ablate.train.scoring`), averaged over crops and evaluated
frame-level by :func:`ablate.metrics.evaluate` (``auc``, ``ap``: reported only). The README
lists where this departs from RTFM.

Everything random (batch order, crops, dropout, initialisation) derives from the trial seed, and
the RNG states travel in the checkpoint, so on CPU a trial resumed after epoch k ends with the
same metrics as one run straight through.

The pieces that do not depend on how a model is run are shared with :mod:`ablate.train.fused`,
which trains several seeds of one variant as one vectorised model: the data views and the batch
sampler (:mod:`ablate.train.data`), the video scorer and the metrics
(:mod:`ablate.train.scoring`), the device helpers (:mod:`ablate.train.device`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ablate.config import TrainOptions, TrialConfig
from ablate.errors import AblateError
from ablate.train.data import TrialData, batch_labels, epoch_batches
from ablate.train.device import _as_float, autocast, pick_device, set_cpu_threads
from ablate.train.scoring import evaluate_trials, member_scores, own_scores, score_videos

if TYPE_CHECKING:
    import contextlib

    from ablate.data import FeatureDataset

LOSS_NOT_FINITE = ("loss became {loss} at epoch {epoch}, step {step}; lower train.lr or check "
                   "the features")


@dataclass(frozen=True)
class EpochResult:
    """Metrics of one finished epoch."""

    epoch: int
    metrics: dict[str, float]
    seconds: float


def is_test_epoch(epoch: int, options: TrainOptions) -> bool:
    """Whether the test split is scored after ``epoch`` (1-based): every ``eval_every`` epochs and
    always at the last. Test is reported, never selected on, so only the curve's resolution
    depends on it."""
    return epoch % options.eval_every == 0 or epoch == options.epochs


class LossMeans:
    """An epoch's loss terms, summed per step; :meth:`means` averages them over the steps."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.steps = 0

    def add(self, loss: float, parts: dict[str, float]) -> None:
        for name, value in {"loss": loss, **parts}.items():
            self.totals[name] = self.totals.get(name, 0.0) + float(value)
        self.steps += 1

    def means(self) -> dict[str, float]:
        return {name: value / self.steps for name, value in self.totals.items()}


def epoch_lr(opts: TrainOptions, epoch: int) -> float:
    """The learning rate of epoch ``epoch`` (0-based) under ``opts.lr_schedule``."""
    if opts.lr_schedule == "constant":
        return opts.lr
    return opts.lr * (1 + math.cos(math.pi * epoch / opts.epochs)) / 2


class Trainer:
    """Builds the model variant of ``config`` and trains it on ``dataset``.

    Args:
        config: The resolved trial config.
        dataset: A loaded feature store (see :func:`ablate.data.load`).
    """

    def __init__(self, config: TrialConfig, dataset: FeatureDataset) -> None:
        device = pick_device(config.train.device)
        if device == "cpu":
            set_cpu_threads(config.train.threads)
        self._setup(config, dataset, TrialData(dataset, config.train, device))

    def _setup(self, config: TrialConfig, dataset: FeatureDataset, data: TrialData) -> None:
        """Builds the seeded parts of the trial (model, objective, optimizer, batch RNG): the
        global torch RNG is seeded with the trial seed and initialises the model."""
        import torch

        from ablate.models import build_model, build_objective

        self.config = config
        self.dataset = dataset
        self.device = data.train_set.device
        opts = config.train
        torch.manual_seed(config.seed)
        self.rng = np.random.default_rng(config.seed)
        self.model = build_model(config.model, in_dim=dataset.dim).to(self.device)
        self.objective = build_objective(config.loss, self.model)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=opts.lr,
                                          weight_decay=opts.weight_decay)
        self.train_set = data.train_set
        self.abnormal = data.abnormal
        self.normal = data.normal
        self.val_ids = data.val_ids
        self.val_labels = data.val_labels
        self.test_ids = data.test_ids
        self.test_gt = data.test_gt
        self.epoch = 0
        self.history: list[dict[str, float]] = []
        self.last_scores: list[np.ndarray] = []
        # Epochs after which a scheduler may stop the trial (ASHA's milestones): the test split
        # is scored there too, so a trial stopped early reports test scores of its final epoch.
        # Scoring draws no random numbers, so training is the same with or without them.
        self.extra_test_epochs: frozenset[int] = frozenset()

    # -- checkpoints -------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "numpy_rng": self.rng.bit_generator.state,
            **self._torch_rng_state(),
            "history": self.history,
            "config": self.config.to_dict(),
            "data_sha256": self.dataset.fingerprint,  # checked on resume (train.driver)
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.rng.bit_generator.state = state["numpy_rng"]
        self._load_torch_rng_state(state)
        self.epoch = int(state["epoch"])
        self.history = list(state["history"])

    def _torch_rng_state(self) -> dict[str, Any]:
        """The torch RNG states that dropout draws from: ``torch_rng``, and ``cuda_rng`` on CUDA."""
        import torch

        state: dict[str, Any] = {"torch_rng": torch.get_rng_state()}
        if self.device == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state()
        return state

    def _load_torch_rng_state(self, state: dict[str, Any]) -> None:
        import torch

        torch.set_rng_state(state["torch_rng"])
        if self.device == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"])

    # -- training ----------------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        return autocast(self.device, self.config.train.amp)

    def set_epoch_lr(self) -> None:
        """The learning rate of the coming epoch (:func:`epoch_lr`): derived from the epoch, so
        a resumed trial needs no scheduler state."""
        for group in self.optimizer.param_groups:
            group["lr"] = epoch_lr(self.config.train, self.epoch)

    def train_epoch(self) -> dict[str, float]:
        """One pass over the abnormal videos; returns the mean of each loss term."""
        import torch

        self.set_epoch_lr()
        half = self.config.train.batch_size // 2
        labels = batch_labels(half, self.device)
        losses = LossMeans()
        self.model.train()
        batches = epoch_batches(self.rng, self.abnormal, self.normal, half, self.train_set.crops)
        for step, (videos, crops) in enumerate(batches):
            x = self.train_set.batch(videos, crops)
            with self._autocast():
                out = self.model(x)
            # Losses in float32: BCE on probabilities is unsafe under autocast.
            loss, parts = self.objective(_as_float(out), labels)
            if not torch.isfinite(loss):
                raise AblateError(LOSS_NOT_FINITE.format(loss=loss.item(), epoch=self.epoch + 1,
                                                         step=step + 1))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            losses.add(float(loss.detach()), parts)
        return losses.means()

    def score_videos(self, video_ids: list[str]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per-video snippet scores and CLAV gates (empty arrays without CLAV), averaged over
        crops, in the order given."""
        return member_scores(*self._score([self], video_ids), 0)

    def _score(self, trials: Sequence[Any],
               video_ids: list[str]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The :data:`~ablate.train.scoring.Scorer` of this trial alone: (1, T) per video."""
        self.model.eval()
        opts = self.config.train
        return score_videos(self.dataset, video_ids, lambda x: own_scores(self.model, x),
                            self.device, opts.amp, opts.eval_chunk)

    def evaluate(self, test: bool = True) -> dict[str, float]:
        """Validation metrics (video-level) and, with ``test``, test metrics (frame-level) and
        diagnostics: CLAV's mean gate on abnormal and normal test snippets, CoMo's attention
        statistics."""
        evaluation = evaluate_trials([self], [self] if test else [], self._score)[0]
        if evaluation.test_scores is not None:
            self.last_scores = evaluation.test_scores
        return evaluation.metrics

    def attention_stats(self) -> dict[str, float]:
        """CoMo's attention statistics of the eval passes since the last call (none without
        CoMo); reading them starts a new count."""
        como = getattr(self.model, "como", None)
        return como.diagnostics() if como is not None else {}

    def drop_attention_stats(self) -> None:
        """Forgets the attention statistics of earlier passes (validation, earlier epochs), so
        the next :meth:`attention_stats` covers the test passes alone."""
        self.attention_stats()

    def _end_epoch(self, losses: dict[str, float], metrics: dict[str, float],
                   seconds: float) -> EpochResult:
        """Counts a trained and evaluated epoch into the history."""
        metrics = {**metrics, **losses}
        self.epoch += 1
        self.history.append({"epoch": self.epoch, **metrics})
        return EpochResult(self.epoch, metrics, seconds)

    def scores_test_after(self, epoch: int) -> bool:
        """Whether the test split is scored after ``epoch``: :func:`is_test_epoch`, or one of
        :attr:`extra_test_epochs`."""
        return is_test_epoch(epoch, self.config.train) or epoch in self.extra_test_epochs

    def epochs(self) -> Iterator[EpochResult]:
        """Trains from the current epoch to ``train.epochs``, yielding after each epoch."""
        while self.epoch < self.config.train.epochs:
            start = time.perf_counter()
            losses = self.train_epoch()
            metrics = self.evaluate(test=self.scores_test_after(self.epoch + 1))
            yield self._end_epoch(losses, metrics, time.perf_counter() - start)
