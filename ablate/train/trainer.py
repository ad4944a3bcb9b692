"""The training loop of one trial.

Training follows the field's protocol (RTFM, Tian et al. 2021): each step draws half the batch
from normal and half from abnormal training videos, each resampled to 32 segments, one random
crop per video; an epoch is one pass over the abnormal videos. A label-stratified validation split
is held out of the train videos first (:mod:`ablate.data.splits`). After every epoch the
validation videos are scored and evaluated at the video level (``val_auc``, ``val_ap``: what
selection may use), and the test split is scored at full length, averaged over crops and
evaluated frame-level by :func:`ablate.metrics.evaluate` (``auc``, ``ap``: reported only). The
README lists where this departs from RTFM.

Everything random (batch order, crops, dropout, initialisation) derives from the trial seed, and
the RNG states travel in the checkpoint, so on CPU a trial resumed after epoch k ends with the
same metrics as one run straight through.

The pieces that do not depend on how a model is run (the data views of :class:`TrialData`, the
batch sampler :func:`epoch_batches`, the video scorer :func:`score_videos`) are shared with
:mod:`ablate.train.fused`, which trains several seeds of one variant as one vectorised model.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ablate.config import TrainOptions, TrialConfig
from ablate.data.splits import validation_split
from ablate.errors import AblateError

if TYPE_CHECKING:
    import contextlib

    import torch

    from ablate.data import FeatureDataset
    from ablate.models import ModelOutput

# A validation video's score: the mean of its k highest snippet scores, as top-k MIL trains it.
VAL_TOPK = 3

# Test videos are scored with all their crops in one forward pass unless the relation graphs
# (crops x T x T) would exceed this many elements; then crops go in smaller groups.
EVAL_GRAPH_BUDGET = 64_000_000

LOSS_NOT_FINITE = ("loss became {loss} at epoch {epoch}, step {step}; lower train.lr or check "
                   "the features")
NO_TRAIN_CLASS = ("{path}: the train split needs normal and abnormal videos; found {normal} "
                  "normal, {abnormal} abnormal")

# What a scorer returns for a group of crops (g, T, D): snippet scores (..., g, T) and CLAV's
# gates of the same shape, or None without CLAV. The leading dims are empty for one model and
# (members,) for a fused trial.
VideoForward = Callable[["torch.Tensor"], "tuple[torch.Tensor, torch.Tensor | None]"]


@dataclass(frozen=True)
class EpochResult:
    """Metrics of one finished epoch."""

    epoch: int
    metrics: dict[str, float]
    seconds: float


def pick_device(preference: str) -> str:
    import torch

    if preference == "cuda" and not torch.cuda.is_available():
        raise AblateError("train.device: cuda requested but no CUDA device is available")
    if preference == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return preference


def set_cpu_threads(threads: int) -> int:
    """Sets torch's intra-op threads: explicit, else what Ray granted (OMP_NUM_THREADS), else
    the cores this process may run on."""
    import torch

    if threads <= 0:
        granted = os.environ.get("OMP_NUM_THREADS", "")
        threads = int(granted) if granted.isdigit() and int(granted) > 0 else len(
            os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    return threads


def autocast(device: str, amp: bool) -> contextlib.AbstractContextManager[Any]:
    """bfloat16 autocast on CUDA when ``amp`` is on; nothing on CPU."""
    import contextlib

    import torch

    if device == "cuda" and amp:
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _as_float(out: ModelOutput) -> ModelOutput:
    import dataclasses

    return dataclasses.replace(out, scores=out.scores.float(), features=out.features.float(),
                               extras={k: v.float() for k, v in out.extras.items()})


class _TrainSet:
    """The training view as batches; on the device when it fits, else gathered per step."""

    def __init__(self, dataset: FeatureDataset, segments: int, device: str) -> None:
        import torch

        features, labels = dataset.train_view(segments)  # (N, crops, S, D), (N,)
        self.labels = np.asarray(labels)
        self.crops = features.shape[1]
        self.device = device
        self._host = features
        self._on_device: torch.Tensor | None = None
        if device == "cuda":
            free, _ = torch.cuda.mem_get_info()
            if features.nbytes < 0.5 * free:  # leave room for activations and other trials
                with warnings.catch_warnings():  # read-only mmap: copied to the device, unwritten
                    warnings.simplefilter("ignore", UserWarning)
                    self._on_device = torch.as_tensor(np.asarray(features)).to(device)

    def batch(self, videos: np.ndarray, crops: np.ndarray) -> torch.Tensor:
        import torch

        if self._on_device is not None:
            index = torch.as_tensor(videos, device=self.device)
            crop = torch.as_tensor(crops, device=self.device)
            return self._on_device[index, crop].float()  # (B, S, D)
        x = np.asarray(self._host[videos, crops], dtype=np.float32)  # gathers B rows only
        return torch.from_numpy(x).to(self.device, non_blocking=True)


class TrialData:
    """What every trial of a dataset sees, whatever its model and seed: the training view, the
    videos trained on, the validation split and the test split.

    Args:
        dataset: A loaded feature store.
        options: The trial's training options (``segments`` and ``val_fraction`` are read).
        device: Where training batches are gathered.

    Raises:
        AblateError: The train split (less the validation split) lacks a class.
    """

    def __init__(self, dataset: FeatureDataset, options: TrainOptions, device: str) -> None:
        self.train_set = _TrainSet(dataset, options.segments, device)
        labels = self.train_set.labels
        fit, held_out = validation_split(labels, options.val_fraction)
        self.abnormal = fit[labels[fit] == 1]
        self.normal = fit[labels[fit] == 0]
        if len(self.abnormal) == 0 or len(self.normal) == 0:
            raise AblateError(NO_TRAIN_CLASS.format(path=dataset.path, normal=len(self.normal),
                                                    abnormal=len(self.abnormal)))
        train_ids = dataset.video_ids("train")
        self.val_ids = [train_ids[i] for i in held_out]
        self.val_labels = labels[held_out]
        self.test_ids = dataset.video_ids("test")
        self.test_gt = dataset.test_frame_labels()


def batch_labels(half: int, device: str) -> torch.Tensor:
    """Video labels of every training batch: ``half`` normal, then ``half`` abnormal, (B,)."""
    import torch

    return torch.cat([torch.zeros(half), torch.ones(half)]).to(device)


def epoch_batches(rng: np.random.Generator, abnormal: np.ndarray, normal: np.ndarray, half: int,
                  crops: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The batches of one epoch: (videos, crops) per step, ``half`` normal videos then ``half``
    abnormal ones, each with one random crop.

    An epoch is one pass over the abnormal videos in a random order (the last batch wraps around);
    the normal videos are repeated to match and shuffled. Draws from ``rng`` in a fixed order
    (both orders first, then each step's crops), so a trial's batches depend on its seed alone.
    """
    steps = math.ceil(len(abnormal) / half)
    abnormal = rng.permutation(abnormal)
    normal = rng.permutation(np.resize(normal, steps * half))
    for step in range(steps):
        abn = abnormal[np.arange(step * half, (step + 1) * half) % len(abnormal)]
        nor = normal[step * half:(step + 1) * half]
        videos = np.concatenate([nor, abn])
        yield videos, rng.integers(crops, size=len(videos))


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


def score_videos(dataset: FeatureDataset, video_ids: list[str], forward: VideoForward,
                 device: str, amp: bool) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per-video snippet scores and CLAV gates (empty arrays without CLAV), averaged over crops,
    in the order given: arrays of shape (..., T), the leading dims those ``forward`` returns.

    A video's crops go through ``forward`` together unless their relation graphs would exceed
    :data:`EVAL_GRAPH_BUDGET` elements; then in groups.
    """
    import torch

    scores, gates = [], []
    with torch.inference_mode(), autocast(device, amp):
        for video_id in video_ids:
            feats = dataset.features(video_id)  # (crops, T, D)
            crops, t = feats.shape[0], feats.shape[1]
            group = max(1, min(crops, EVAL_GRAPH_BUDGET // max(1, t * t)))
            score: torch.Tensor | None = None
            gate: torch.Tensor | None = None
            for start in range(0, crops, group):
                x = torch.from_numpy(np.asarray(feats[start:start + group],
                                                dtype=np.float32)).to(device)
                part, part_gate = forward(x)  # (..., g, T) each
                part = part.float().sum(-2)
                score = part if score is None else score + part
                if part_gate is not None:
                    part_gate = part_gate.float().sum(-2)
                    gate = part_gate if gate is None else gate + part_gate
            assert score is not None  # a video has at least one crop
            scores.append((score / crops).cpu().numpy())
            gates.append((gate / crops).cpu().numpy() if gate is not None else np.empty(0))
    return scores, gates


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

    def train_epoch(self) -> dict[str, float]:
        """One pass over the abnormal videos; returns the mean of each loss term."""
        import torch

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
        self.model.eval()

        def forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
            out = self.model(x)
            return out.scores, out.extras.get("clav_gate")

        return score_videos(self.dataset, video_ids, forward, self.device, self.config.train.amp)

    def score_test(self) -> list[np.ndarray]:
        """Per-video snippet scores of the test split, averaged over crops, in list order."""
        return self.score_videos(self.test_ids)[0]

    def evaluate(self, test: bool = True) -> dict[str, float]:
        """Validation metrics (video-level) and, with ``test``, test metrics (frame-level) and
        diagnostics: CLAV's mean gate on abnormal and normal test snippets, CoMo's attention
        statistics."""
        gates: list[np.ndarray] = []
        attention: dict[str, float] = {}
        if test:
            self.drop_attention_stats()
            self.last_scores, gates = self.score_videos(self.test_ids)
            attention = self.attention_stats()
        val_scores = self.score_videos(self.val_ids)[0] if len(self.val_ids) else []
        return self._metrics(gates, val_scores, test, attention)

    def attention_stats(self) -> dict[str, float]:
        """CoMo's attention statistics of the eval passes since the last call (none without
        CoMo); reading them starts a new count."""
        como = getattr(self.model, "como", None)
        return como.diagnostics() if como is not None else {}

    def drop_attention_stats(self) -> None:
        """Forgets the attention statistics of earlier passes (validation, earlier epochs), so
        the next :meth:`attention_stats` covers the test passes alone."""
        self.attention_stats()

    def _metrics(self, gates: list[np.ndarray], val_scores: list[np.ndarray],
                 test: bool, attention: dict[str, float]) -> dict[str, float]:
        """:meth:`evaluate`'s metrics from scores already computed: the validation scores and,
        with ``test``, ``last_scores``, the test gates and CoMo's statistics of the test
        passes."""
        from ablate.metrics import evaluate, evaluate_videos

        metrics: dict[str, float] = {}
        if test:
            metrics = evaluate(self.last_scores, self.test_gt, self.dataset.frames_per_snippet)
        if len(self.val_ids):
            video_scores = [float(np.sort(s)[-VAL_TOPK:].mean()) for s in val_scores]
            metrics.update(evaluate_videos(video_scores, self.val_labels, prefix="val_"))
        if gates and gates[0].size:
            snippet_gt = self.test_gt[::self.dataset.frames_per_snippet].astype(bool)
            gate = np.concatenate(gates)
            metrics["gate_abnormal"] = float(gate[snippet_gt].mean())
            metrics["gate_normal"] = float(gate[~snippet_gt].mean())
        metrics.update(attention)
        return metrics

    def _end_epoch(self, losses: dict[str, float], metrics: dict[str, float],
                   seconds: float) -> EpochResult:
        """Counts a trained and evaluated epoch into the history."""
        metrics = {**metrics, **losses}
        self.epoch += 1
        self.history.append({"epoch": self.epoch, **metrics})
        return EpochResult(self.epoch, metrics, seconds)

    def epochs(self) -> Iterator[EpochResult]:
        """Trains from the current epoch to ``train.epochs``, yielding after each epoch."""
        while self.epoch < self.config.train.epochs:
            start = time.perf_counter()
            losses = self.train_epoch()
            metrics = self.evaluate(test=is_test_epoch(self.epoch + 1, self.config.train))
            yield self._end_epoch(losses, metrics, time.perf_counter() - start)


def check_same_trial(saved: dict[str, Any], config: TrialConfig, where: Path) -> None:
    """Refuses to resume a checkpoint of another config; only ``train.epochs`` may grow."""
    current = config.to_dict()
    for cfg in (saved, current):
        cfg["train"] = {k: v for k, v in cfg["train"].items() if k != "epochs"}
    if saved != current:
        changed = sorted(k for k in current if saved.get(k) != current[k])
        raise AblateError(f"{where}: holds a checkpoint of a different config (changed: "
                          f"{', '.join(changed)}); use another output directory")


def resume(trainer: Trainer, checkpoint_dir: Path) -> bool:
    """Loads the newest checkpoint in ``checkpoint_dir`` into ``trainer`` if there is one.

    Returns:
        Whether a checkpoint was loaded.

    Raises:
        AblateError: The checkpoint is of another config, or none of them can be read.
    """
    from ablate.train.checkpoint import load_checkpoint

    state = load_checkpoint(checkpoint_dir)
    if state is None:
        return False
    check_same_trial(state["config"], trainer.config, checkpoint_dir)
    trainer.load_state_dict(state)
    return True


def run_trial(config: TrialConfig, dataset: FeatureDataset, checkpoint_dir: Path,
              on_epoch: Callable[[EpochResult], None] | None = None) -> Trainer:
    """Trains one trial to completion, checkpointing every epoch and resuming if possible."""
    from ablate.train.checkpoint import save_checkpoint

    trainer = Trainer(config, dataset)
    resume(trainer, checkpoint_dir)
    for result in trainer.epochs():
        save_checkpoint(checkpoint_dir, trainer.state_dict())
        if on_epoch is not None:
            on_epoch(result)
    return trainer
