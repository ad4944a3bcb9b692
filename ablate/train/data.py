"""What a trial trains and evaluates on, whatever its model and seed: the training view as
batches, the videos trained on, the validation and test splits, and each epoch's batches."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from ablate.config import TrainOptions
from ablate.data.splits import validation_split
from ablate.errors import AblateError

if TYPE_CHECKING:
    import torch

    from ablate.data import FeatureDataset

NO_TRAIN_CLASS = ("{path}: the train split needs normal and abnormal videos; found {normal} "
                  "normal, {abnormal} abnormal")


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


# Per process: (store, its features' checksum, segments, device) -> its training view. A process
# that trains trial after trial (a reused Ray worker) copies the view to the GPU once.
_TRAIN_SETS: dict[tuple[str, str, int, str], _TrainSet] = {}


def train_set(dataset: FeatureDataset, segments: int, device: str) -> _TrainSet:
    checksum = dataset.manifest["files"]["features.parquet"]["sha256"]
    key = (str(dataset.path), checksum, segments, device)
    if key not in _TRAIN_SETS:
        _TRAIN_SETS[key] = _TrainSet(dataset, segments, device)
    return _TRAIN_SETS[key]


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
        self.train_set = train_set(dataset, options.segments, device)
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
