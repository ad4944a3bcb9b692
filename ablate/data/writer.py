"""Writing a feature store: :class:`StoreWriter`, streaming and atomic."""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from ablate.data.files import (
    ROW_GROUP_BYTES,
    FeatureRows,
    reorder_features,
    write_frame_labels,
    write_manifest,
    write_videos,
)
from ablate.data.layout import DTYPES, FEATURES, FRAME_LABELS, FRAMES_PER_SNIPPET, SPLITS, VIDEOS
from ablate.data.scan import nonfinite_per_row
from ablate.errors import AblateError, DataError


class StoreWriter:
    """Write a feature store, streaming: one video in memory at a time, one row group buffered.

    Use as a context manager::

        with StoreWriter(out_dir, dim=2048, crops=10, dtype="float16", name="ucf") as w:
            w.add_video("Abuse028_x264", "train", 1, "Abuse", feats)          # [crops, T, D]
            w.add_video("Abuse030_x264", "test", 1, "Abuse", feats, frame_labels=gt)

    Everything is written into a hidden sibling directory that replaces ``out_dir`` only when
    the block finishes without an exception; on an exception it is deleted, so a store is
    either complete or absent. Within each split, videos must be added in list order; train
    and test may be interleaved (the file order is restored at the end, train first).

    Args:
        out_dir: Store directory to create.
        dim: Feature dimension D per crop.
        crops: Number of crops per snippet.
        dtype: Storage dtype, ``"float16"`` or ``"float32"``.
        name: Store name recorded in the manifest (default: the directory name).
        source: Free-form, JSON-serialisable provenance (importer, paths, seed...).
        overwrite: Replace ``out_dir`` if it exists and is not empty (only once the new store
            is complete).
        row_group_bytes: Bound on the feature bytes per Parquet row group.

    Raises:
        AblateError: ``out_dir`` exists and is not empty, and ``overwrite`` is false.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        *,
        dim: int,
        crops: int,
        dtype: str = "float16",
        name: str | None = None,
        source: Mapping[str, Any] | None = None,
        overwrite: bool = False,
        row_group_bytes: int = ROW_GROUP_BYTES,
    ) -> None:
        if dtype not in DTYPES:
            raise AblateError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
        for key, value in (("dim", dim), ("crops", crops)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise AblateError(f"{key} must be a positive integer, got {value!r}")
        self.out_dir = Path(out_dir)
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise AblateError(f"{self.out_dir} exists and is not a directory")
        if self.out_dir.is_dir() and any(self.out_dir.iterdir()) and not overwrite:
            raise AblateError(
                f"{self.out_dir} already exists and is not empty "
                "(--overwrite or overwrite=True replaces it)"
            )
        self.dim, self.crops, self.dtype = int(dim), int(crops), dtype
        self.name = name if name is not None else self.out_dir.name
        self.source = dict(source or {})
        json.dumps(self.source)  # fail now, not after hours of writing, if it cannot be saved
        self.overwrite = overwrite
        self.out_dir.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.out_dir.parent / f".{self.out_dir.name}.tmp-{secrets.token_hex(6)}"
        self._tmp.mkdir()
        try:
            self._rows = FeatureRows(self._tmp / FEATURES, self.crops, self.dim, dtype,
                                     row_group_bytes)
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise
        self._row_group_bytes = row_group_bytes
        self._videos: list[dict[str, Any]] = []
        self._frame_labels: list[tuple[str, np.ndarray]] = []
        self._seen: set[str] = set()
        self._saw_test = False
        self._interleaved = False
        self._done = False

    # -- context manager ----------------------------------------------------------------------

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # -- adding videos ------------------------------------------------------------------------

    def add_video(
        self,
        video_id: str,
        split: str,
        label: int,
        class_name: str,
        features: np.ndarray,
        frame_labels: np.ndarray | None = None,
        *,
        origin: str | None = None,
    ) -> None:
        """Check one video and append it.

        Args:
            video_id: Unique id (for imports, the file's base name).
            split: ``"train"`` or ``"test"``.
            label: Video-level label, 0 normal or 1 abnormal.
            class_name: Event class (``"Abuse"``, ``"Normal"``, or ``"abnormal"``/``"normal"``).
            features: Array [crops, T, dim]; cast to the store dtype.
            frame_labels: 0/1 array of length 16 * T; required for test videos, refused for
                train videos (the store keeps frame labels for test videos only).
            origin: File the video came from, named in error messages instead of the store file.

        Raises:
            DataError: naming the file, the video and the problem.
            AblateError: the writer is already closed.
        """
        if self._done:
            raise AblateError("StoreWriter is closed; no more videos can be added")
        self._check_metadata(video_id, split, label, class_name, origin or VIDEOS)
        rows = self._rows_of(video_id, features, origin or FEATURES)
        snippets = len(rows)
        if split == "test":
            self._frame_labels.append(
                (video_id, _test_frames(video_id, frame_labels, snippets, origin or FRAME_LABELS)))
        elif frame_labels is not None:
            raise DataError(
                origin or FRAME_LABELS, "frame labels given for a train video (the store keeps "
                "them for test videos only)", video_id,
            )

        if split == "test":
            self._saw_test = True
        elif self._saw_test:
            self._interleaved = True
        self._rows.append(video_id, 0, rows)
        self._seen.add(video_id)
        self._videos.append(
            {
                "video_id": video_id,
                "split": split,
                "label": int(label),
                "class_name": class_name,
                "num_snippets": snippets,
                "num_frames": FRAMES_PER_SNIPPET * snippets,
                "crops": self.crops,
            }
        )

    def _check_metadata(self, video_id: str, split: str, label: int, class_name: str,
                        meta_file: str) -> None:
        if not isinstance(video_id, str) or not video_id or "\n" in video_id:
            raise DataError(meta_file, f"video id must be a non-empty one-line string, got "
                            f"{video_id!r}")
        if video_id in self._seen:
            raise DataError(meta_file, "added twice (video ids must be unique)", video_id)
        if split not in SPLITS:
            raise DataError(meta_file, f"split {split!r}, expected 'train' or 'test'", video_id)
        if label not in (0, 1):
            raise DataError(meta_file, f"label {label!r}, expected 0 (normal) or 1 (abnormal)",
                            video_id)
        if not isinstance(class_name, str) or not class_name:
            raise DataError(meta_file, f"class_name must be a non-empty string, got "
                            f"{class_name!r}", video_id)

    def _rows_of(self, video_id: str, features: np.ndarray, feat_file: str) -> np.ndarray:
        """The video's features [crops, T, dim] as store rows [T, crops * dim], checked."""
        features = np.asarray(features)
        if features.ndim != 3 or features.shape[0] != self.crops or features.shape[2] != self.dim:
            raise DataError(
                feat_file,
                f"features have shape {list(features.shape)}, expected "
                f"[crops={self.crops}, T, dim={self.dim}]",
                video_id,
            )
        if not np.issubdtype(features.dtype, np.floating):
            raise DataError(feat_file, f"features are {features.dtype}, expected floats", video_id)
        snippets = features.shape[1]
        if snippets < 1:
            raise DataError(feat_file, "video has no snippets (T = 0)", video_id)
        # One copy: [crops, T, D] -> rows [T, crops * D] in the store dtype. Copying also
        # detaches the buffered rows from the caller's array (which may be a memory map).
        rows = np.empty((snippets, self.crops * self.dim), dtype=self.dtype)
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported just below
            rows.reshape(snippets, self.crops, self.dim)[...] = features.transpose(1, 0, 2)
        bad = nonfinite_per_row(rows)
        if bad is not None:
            after = "" if features.dtype == rows.dtype else f" (after conversion to {self.dtype})"
            raise DataError(feat_file, f"{int(bad.sum())} NaN/Inf values in features{after}",
                            video_id)
        return rows

    # -- finishing ----------------------------------------------------------------------------

    def close(self) -> Path:
        """Finish the files, write the manifest and move the store into place.

        Returns:
            The store directory.

        Raises:
            AblateError: no video was added.
        """
        if self._done:
            return self.out_dir
        try:
            if not self._videos:
                raise AblateError(f"no videos were added; {self.out_dir} was not written")
            self._rows.close()
            if self._interleaved:
                split_of = {v["video_id"]: v["split"] for v in self._videos}
                reorder_features(self._tmp, self.crops, self.dim, self.dtype,
                                 self._row_group_bytes, split_of)
            ordered = [v for s in SPLITS for v in self._videos if v["split"] == s]
            write_videos(self._tmp, ordered)
            write_frame_labels(self._tmp, self._frame_labels)
            write_manifest(self._tmp, ordered, name=self.name, dim=self.dim, crops=self.crops,
                           dtype=self.dtype, source=self.source)
            self._publish()
        except BaseException:
            self.abort()
            raise
        self._done = True
        return self.out_dir

    def abort(self) -> None:
        """Discard everything written so far; ``out_dir`` is left as it was."""
        if self._done:
            return
        self._done = True
        self._rows.abort()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def _publish(self) -> None:
        old = None
        if self.out_dir.exists():
            if any(self.out_dir.iterdir()) and not self.overwrite:
                raise AblateError(
                    f"{self.out_dir} appeared while the store was being written; "
                    "it was left untouched"
                )
            # Move the old store aside first so the new one appears in one rename.
            old = self.out_dir.parent / f".{self.out_dir.name}.old-{secrets.token_hex(6)}"
            os.replace(self.out_dir, old)
        os.replace(self._tmp, self.out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _test_frames(video_id: str, frame_labels: np.ndarray | None, snippets: int,
                 labels_file: str) -> np.ndarray:
    """A test video's frame labels, checked: 0/1, 16 per snippet."""
    if frame_labels is None:
        raise DataError(labels_file, "test video has no frame labels", video_id)
    frames = np.asarray(frame_labels).reshape(-1)
    expected = FRAMES_PER_SNIPPET * snippets
    if frames.size != expected:
        raise DataError(
            labels_file,
            f"{frames.size} frame labels, expected {FRAMES_PER_SNIPPET} × {snippets} "
            f"snippets = {expected}",
            video_id,
        )
    if frames.size and not np.isin(frames, (0, 1)).all():
        raise DataError(labels_file, "frame labels must be 0 or 1", video_id)
    return frames.astype(np.uint8)
