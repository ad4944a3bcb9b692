"""The training loop of one trial.

Training follows the field's protocol (RTFM, Tian et al. 2021): each step draws half the batch
from normal and half from abnormal training videos, each resampled to 32 segments, one random
crop per video; an epoch is one pass over the abnormal videos. After every epoch the test split
is scored at full length, scores are averaged over crops and evaluated frame-level by
:func:`ablate.metrics.evaluate`.

Everything random (batch order, crops, dropout, initialisation) derives from the trial seed, and
the RNG states travel in the checkpoint, so on CPU a trial resumed after epoch k ends with the
same metrics as one run straight through.
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

from ablate.config import TrialConfig
from ablate.errors import AblateError

if TYPE_CHECKING:
    import torch

    from ablate.data import FeatureDataset
    from ablate.models import ModelOutput

# Test videos are scored with all their crops in one forward pass unless the relation graphs
# (crops x T x T) would exceed this many elements; then crops go in smaller groups.
EVAL_GRAPH_BUDGET = 64_000_000


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


class Trainer:
    """Builds the model variant of ``config`` and trains it on ``dataset``.

    Args:
        config: The resolved trial config.
        dataset: A loaded feature store (see :func:`ablate.data.load`).
    """

    def __init__(self, config: TrialConfig, dataset: FeatureDataset) -> None:
        import torch

        from ablate.models import build_model, build_objective

        self.config = config
        self.dataset = dataset
        opts = config.train
        self.device = pick_device(opts.device)
        if self.device == "cpu":
            set_cpu_threads(opts.threads)
        torch.manual_seed(config.seed)
        self.rng = np.random.default_rng(config.seed)
        self.model = build_model(config.model, in_dim=dataset.dim).to(self.device)
        self.objective = build_objective(config.loss, self.model)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=opts.lr,
                                          weight_decay=opts.weight_decay)
        self.train_set = _TrainSet(dataset, opts.segments, self.device)
        self.abnormal = np.flatnonzero(self.train_set.labels == 1)
        self.normal = np.flatnonzero(self.train_set.labels == 0)
        if len(self.abnormal) == 0 or len(self.normal) == 0:
            raise AblateError(f"{dataset.path}: the train split needs normal and abnormal "
                              f"videos; found {len(self.normal)} normal, "
                              f"{len(self.abnormal)} abnormal")
        self.test_ids = dataset.video_ids("test")
        self.test_gt = dataset.test_frame_labels()
        self.epoch = 0
        self.history: list[dict[str, float]] = []
        self.last_scores: list[np.ndarray] = []

    # -- checkpoints -------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        import torch

        state: dict[str, Any] = {
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "numpy_rng": self.rng.bit_generator.state,
            "torch_rng": torch.get_rng_state(),
            "history": self.history,
            "config": self.config.to_dict(),
        }
        if self.device == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        import torch

        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        if self.device == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"])
        self.epoch = int(state["epoch"])
        self.history = list(state["history"])

    # -- training ----------------------------------------------------------------------------

    def _autocast(self):
        import contextlib

        import torch

        if self.device == "cuda" and self.config.train.amp:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_epoch(self) -> dict[str, float]:
        """One pass over the abnormal videos; returns the mean of each loss term."""
        import torch

        half = self.config.train.batch_size // 2
        steps = math.ceil(len(self.abnormal) / half)
        abnormal = self.rng.permutation(self.abnormal)
        normal = self.rng.permutation(np.resize(self.normal, steps * half))
        totals: dict[str, float] = {}
        self.model.train()
        for step in range(steps):
            abn = abnormal[np.arange(step * half, (step + 1) * half) % len(abnormal)]
            nor = normal[step * half:(step + 1) * half]
            videos = np.concatenate([nor, abn])
            crops = self.rng.integers(self.train_set.crops, size=len(videos))
            x = self.train_set.batch(videos, crops)
            labels = torch.cat([torch.zeros(half), torch.ones(half)]).to(self.device)
            with self._autocast():
                out = self.model(x)
            # Losses in float32: BCE on probabilities is unsafe under autocast.
            loss, parts = self.objective(_as_float(out), labels)
            if not torch.isfinite(loss):
                raise AblateError(f"loss became {loss.item()} at epoch {self.epoch + 1}, step "
                                  f"{step + 1}; lower train.lr or check the features")
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            for name, value in {"loss": float(loss.detach()), **parts}.items():
                totals[name] = totals.get(name, 0.0) + float(value)
        return {name: value / steps for name, value in totals.items()}

    def score_test(self) -> list[np.ndarray]:
        """Per-video snippet scores of the test split, averaged over crops, in list order."""
        import torch

        self.model.eval()
        scores = []
        with torch.inference_mode(), self._autocast():
            for video_id in self.test_ids:
                feats = self.dataset.features(video_id)  # (crops, T, D)
                crops, t = feats.shape[0], feats.shape[1]
                group = max(1, min(crops, EVAL_GRAPH_BUDGET // max(1, t * t)))
                total = torch.zeros(t, device=self.device)
                for start in range(0, crops, group):
                    x = torch.from_numpy(np.asarray(feats[start:start + group],
                                                    dtype=np.float32)).to(self.device)
                    total += self.model(x).scores.float().sum(0)
                scores.append((total / crops).cpu().numpy())
        return scores

    def evaluate(self) -> dict[str, float]:
        from ablate.metrics import evaluate

        self.last_scores = self.score_test()
        return evaluate(self.last_scores, self.test_gt, self.dataset.frames_per_snippet)

    def epochs(self) -> Iterator[EpochResult]:
        """Trains from the current epoch to ``train.epochs``, yielding after each epoch."""
        while self.epoch < self.config.train.epochs:
            start = time.perf_counter()
            losses = self.train_epoch()
            metrics = {**self.evaluate(), **losses}
            self.epoch += 1
            self.history.append({"epoch": self.epoch, **metrics})
            yield EpochResult(self.epoch, metrics, time.perf_counter() - start)


def check_same_trial(saved: dict[str, Any], config: TrialConfig, where: Path) -> None:
    """Refuses to resume a checkpoint of another config; only ``train.epochs`` may grow."""
    current = config.to_dict()
    for cfg in (saved, current):
        cfg["train"] = {k: v for k, v in cfg["train"].items() if k != "epochs"}
    if saved != current:
        changed = sorted(k for k in current if saved.get(k) != current[k])
        raise AblateError(f"{where}: holds a checkpoint of a different config (changed: "
                          f"{', '.join(changed)}); use another output directory")


def run_trial(config: TrialConfig, dataset: FeatureDataset, checkpoint_dir: Path,
              on_epoch: Callable[[EpochResult], None] | None = None) -> Trainer:
    """Trains one trial to completion, checkpointing every epoch and resuming if possible."""
    from ablate.train.checkpoint import load_checkpoint, save_checkpoint

    trainer = Trainer(config, dataset)
    state = load_checkpoint(checkpoint_dir)
    if state is not None:
        check_same_trial(state["config"], config, checkpoint_dir)
        trainer.load_state_dict(state)
    for result in trainer.epochs():
        save_checkpoint(checkpoint_dir, trainer.state_dict())
        if on_epoch is not None:
            on_epoch(result)
    return trainer
