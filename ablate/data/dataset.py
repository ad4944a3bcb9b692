"""Loading a feature store: checked metadata plus memory-mapped, shareable features.

:func:`load` checks the manifest and the small files, then maps the features from the store's
Arrow IPC cache (:mod:`ablate.data.cache`), building it on first use; the arrays a
:class:`FeatureDataset` hands out are read-only views on that map, shared by every process on
the node.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ablate.data.cache import cache_dirs, open_features, open_train_view
from ablate.data.layout import (
    FEATURES,
    FRAME_LABELS,
    FRAMES_PER_SNIPPET,
    SEGMENTS,
    SPLITS,
    VIDEOS,
    Progress,
    check_size,
    fingerprint,
    read_manifest,
    verify_file,
)
from ablate.data.reader import VideoTable, read_frame_labels, read_videos
from ablate.errors import DataError


@dataclass(frozen=True)
class VideoInfo:
    """Metadata of one video.

    Attributes:
        video_id: Unique id (the feature file's base name for imported stores).
        split: ``"train"`` or ``"test"``.
        label: Video-level label: 0 normal, 1 abnormal.
        class_name: Event class, e.g. ``"Abuse"``, ``"Normal"``, ``"abnormal"``.
        num_snippets: T, the number of 16-frame snippets.
        num_frames: 16 * T.
        crops: Crops per snippet.
    """

    video_id: str
    split: str
    label: int
    class_name: str
    num_snippets: int
    num_frames: int
    crops: int


def resample_segments(feat: np.ndarray, segments: int = SEGMENTS) -> np.ndarray:
    """Resample a video to a fixed number of segments by the field's convention.

    RTFM's ``process_feat``: boundaries ``linspace(0, T, segments + 1)`` cast to int; segment
    i is the mean of snippets ``[b_i, b_{i+1})``, or snippet ``b_i`` itself when that range is
    empty (T < segments). Sums are accumulated in float64.

    Args:
        feat: Features [T, D] or [crops, T, D].
        segments: Number of output segments.

    Returns:
        float32 array [segments, D] or [crops, segments, D].
    """
    feat = np.asarray(feat)
    if feat.ndim not in (2, 3):
        raise ValueError(f"expected features [T, D] or [crops, T, D], got shape {feat.shape}")
    snippets = feat.shape[-2]
    if snippets < 1:
        raise ValueError("cannot resample a video with no snippets")
    bounds = np.linspace(0, snippets, segments + 1).astype(int)
    # Snippets first: for a store's [crops, T, D] view this is its contiguous [T, crops, D]
    # layout, which numpy reduces fastest.
    rows = np.moveaxis(feat, -2, 0)
    # reduceat sums [b_i, b_{i+1}) and, for an empty range, returns element b_i itself: exactly
    # RTFM's fallback. The last range runs to the end, i.e. to b_segments = T.
    sums = np.add.reduceat(rows, bounds[:-1], axis=0, dtype=np.float64)
    counts = np.maximum(np.diff(bounds), 1).astype(np.float64)
    means = sums / counts.reshape((-1,) + (1,) * (sums.ndim - 1))
    return np.moveaxis(means, 0, -2).astype(np.float32)


class FeatureDataset:
    """A loaded feature store. Create it with :func:`load`.

    Feature arrays are read-only views on a memory-mapped cache file: taking them copies
    nothing, and processes on one node share the pages.

    Attributes:
        path: Store directory.
        manifest: The parsed ``manifest.json``.
        dim: Feature dimension D per crop.
        crops: Crops per snippet.
        dtype: Storage dtype (``float16`` or ``float32``).
        frames_per_snippet: Frames per snippet (16).
    """

    def __init__(
        self,
        path: Path,
        manifest: Mapping[str, Any],
        videos: VideoTable,
        frame_labels: tuple[np.ndarray, np.ndarray],
        features: pa.ipc.RecordBatchFileReader,
        cache_dirs: list[Path],
        cache_dir_arg: Path | None,
    ) -> None:
        self.path = path
        self.manifest = dict(manifest)
        self.dim: int = manifest["dim"]
        self.crops: int = manifest["crops"]
        self.dtype = np.dtype(manifest["dtype"])
        self.frames_per_snippet: int = manifest["frames_per_snippet"]
        self._videos = videos
        self._labels, self._label_offsets = frame_labels
        self._labels.flags.writeable = False
        self._test_position = {v: i for i, v in enumerate(videos.ids_of("test"))}
        self._cache_dirs = cache_dirs
        self._cache_dir_arg = cache_dir_arg
        self._reader = features  # keeps the memory map open
        width = self.crops * self.dim
        self._batches: list[np.ndarray] = []
        batch_starts = []
        start = 0
        for i in range(features.num_record_batches):
            column = features.get_batch(i).column(0)
            values = column.flatten().to_numpy(zero_copy_only=True)
            self._batches.append(values.reshape(len(column), width))
            batch_starts.append(start)
            start += len(column)
        self._video_batch = np.searchsorted(batch_starts, videos.starts, side="right") - 1
        self._video_offset = videos.starts - np.asarray(batch_starts)[self._video_batch]
        self._train_view: tuple[np.ndarray, np.ndarray] | None = None
        self._train_segments: int | None = None
        self._train_reader: pa.ipc.RecordBatchFileReader | None = None

    @property
    def fingerprint(self) -> str:
        """The store's data fingerprint (:func:`~ablate.data.layout.fingerprint`)."""
        return fingerprint(self.manifest)

    def __repr__(self) -> str:
        return (f"FeatureDataset({str(self.path)!r}, {len(self)} videos, "
                f"{self.crops} crops × {self.dim} {self.dtype})")

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickling (e.g. handing the dataset to a Ray worker) re-opens the store there instead
        # of shipping the arrays: the worker maps the same cache files.
        return (_reload, (str(self.path), self._cache_dir_arg))

    def __len__(self) -> int:
        return len(self._videos.ids)

    def __contains__(self, video_id: object) -> bool:
        return video_id in self._videos.index

    def video_ids(self, split: str | None = None) -> list[str]:
        """Video ids of one split (or all, train first) in list order."""
        if split is None:
            return list(self._videos.ids)
        _check_split(split)
        return self._videos.ids_of(split)

    def video(self, video_id: str) -> VideoInfo:
        """Metadata of one video."""
        i = self._position(video_id)
        v = self._videos
        snippets = int(v.num_snippets[i])
        return VideoInfo(v.ids[i], v.split[i], int(v.label[i]), v.class_name[i], snippets,
                         FRAMES_PER_SNIPPET * snippets, self.crops)

    def videos(self, split: str | None = None) -> list[VideoInfo]:
        """Metadata of every video of one split (or all), in list order."""
        return [self.video(v) for v in self.video_ids(split)]

    def features(self, video_id: str) -> np.ndarray:
        """Features of one video: a read-only [crops, T, D] view on the memory map."""
        i = self._position(video_id)
        snippets = int(self._videos.num_snippets[i])
        offset = int(self._video_offset[i])
        rows = self._batches[self._video_batch[i]][offset : offset + snippets]
        return rows.reshape(snippets, self.crops, self.dim).transpose(1, 0, 2)

    def frame_labels(self, video_id: str) -> np.ndarray:
        """Frame-level labels (uint8, length 16 * T) of one test video.

        Raises:
            DataError: the video is in the train split (only test videos have frame labels).
        """
        i = self._position(video_id)
        if self._videos.split[i] != "test":
            raise DataError(FRAME_LABELS, "is a train video; only test videos have frame "
                            "labels", video_id)
        k = self._test_position[video_id]
        return self._labels[self._label_offsets[k] : self._label_offsets[k + 1]]

    def test_frame_labels(self) -> np.ndarray:
        """Frame labels of all test videos concatenated in list order (the field's gt)."""
        return self._labels

    def train_view(
        self, segments: int = SEGMENTS, progress: Progress | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Every train video resampled to ``segments`` segments per crop (see
        :func:`resample_segments`), cached and memory-mapped like the features.

        Args:
            segments: Segments per video (the field uses 32).
            progress: Called as ``progress(videos_done, videos_total)`` while building.

        Returns:
            ``(features, labels)``: a read-only [N_train, crops, segments, D] array in the store
            dtype, and the video labels [N_train] as int64, both in list order.
        """
        if self._train_view is not None and self._train_segments == segments:
            return self._train_view
        train = self.video_ids("train")
        labels = np.asarray([self._videos.label[self._videos.index[v]] for v in train],
                            dtype=np.int64)
        labels.flags.writeable = False
        shape = (len(train), self.crops, segments, self.dim)
        if not train:
            empty = np.zeros(shape, dtype=self.dtype)
            empty.flags.writeable = False
            return empty, labels

        def rows() -> Iterator[np.ndarray]:
            for i, video in enumerate(train):
                yield resample_segments(self.features(video), segments).astype(self.dtype)
                if progress is not None:
                    progress(i + 1, len(train))

        reader = open_train_view(self.path, self.manifest, self._cache_dirs, shape, rows)
        values = reader.get_batch(0).column(0).flatten().to_numpy(zero_copy_only=True)
        self._train_view = (values.reshape(shape), labels)
        self._train_segments = segments
        self._train_reader = reader  # keeps the map open
        return self._train_view

    # -- internals ----------------------------------------------------------------------------

    def _position(self, video_id: str) -> int:
        try:
            return self._videos.index[video_id]
        except KeyError:
            raise KeyError(f"no video {video_id!r} in the store at {self.path}") from None


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")


def _reload(path: str, cache_dir: Path | None) -> FeatureDataset:
    return load(path, cache_dir=cache_dir)


def load(
    path: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> FeatureDataset:
    """Open a feature store, building its memory-mapped cache on first use.

    Every load checks the manifest and the SHA-256 of ``videos.parquet`` and
    ``frame_labels.parquet``. Building the features cache also checks the SHA-256 of
    ``features.parquet`` and every row (NaN/Inf, dimension, order, counts).

    Args:
        path: Store directory.
        cache_dir: Where to keep cache files (default ``<store>/.cache`` when writable, else
            ``~/.cache/ablate/stores/<hash of the store path>``).
        progress: Called as ``progress(rows_done, rows_total)`` while the cache is built.

    Returns:
        The dataset.

    Raises:
        DataError: the store is missing, corrupt or inconsistent; the message names the file,
            the video and the problem.
    """
    store = Path(path).resolve() if Path(path).exists() else Path(path)
    manifest = read_manifest(store)
    for name in (VIDEOS, FRAME_LABELS):
        verify_file(store, manifest, name)
    check_size(store, manifest, FEATURES)
    videos = read_videos(store, manifest)
    frame_labels = read_frame_labels(store, videos)

    cache_arg = Path(cache_dir) if cache_dir is not None else None
    dirs = cache_dirs(store, cache_arg)
    reader = open_features(store, manifest, videos, dirs, progress)
    return FeatureDataset(store, manifest, videos, frame_labels, reader, dirs, cache_arg)
