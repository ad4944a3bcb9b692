"""Reading a store's small files, checked: ``videos.parquet`` and ``frame_labels.parquet``.

Every problem is a :class:`~ablate.errors.DataError` whose one-line message names the file, the
video when one is involved, and the problem::

    videos.parquet: video test_0003: listed twice
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ablate.data.layout import (
    FRAME_LABELS,
    FRAMES_PER_SNIPPET,
    MANIFEST,
    SPLITS,
    VIDEOS,
    count_videos,
)
from ablate.errors import DataError


@dataclass(frozen=True)
class VideoTable:
    """The checked content of ``videos.parquet``, in file order (train, then test).

    Attributes:
        ids: Video ids.
        split: ``"train"`` or ``"test"`` per video.
        label: Video-level labels (0/1).
        class_name: Event class per video.
        num_snippets: T per video.
        starts: Index of each video's first row in ``features.parquet``.
        index: Video id -> position.
    """

    ids: list[str]
    split: list[str]
    label: np.ndarray
    class_name: list[str]
    num_snippets: np.ndarray
    starts: np.ndarray
    index: dict[str, int]

    @property
    def total_snippets(self) -> int:
        """Rows expected in ``features.parquet``."""
        return int(self.num_snippets.sum())

    def ids_of(self, split: str) -> list[str]:
        """Ids of one split, in list order."""
        return [v for v, s in zip(self.ids, self.split, strict=True) if s == split]


def required_column(table: pa.Table, file: str, name: str) -> pa.ChunkedArray:
    """Column ``name`` of a table read from ``file``; missing or null values are errors."""
    if name not in table.column_names:
        raise DataError(file, f"missing column {name!r}")
    column = table.column(name)
    if column.null_count:
        raise DataError(file, f"column {name!r} has {column.null_count} missing values")
    return column


def _read_table(store: Path, name: str) -> pa.Table:
    try:
        # ParquetFile, not pq.read_table: the latter imports pyarrow.dataset and pandas
        # (~140 ms), which would dominate a warm load.
        with pq.ParquetFile(Path(store) / name) as parquet:
            return parquet.read()
    except (OSError, pa.ArrowException) as exc:
        raise DataError(name, f"not a readable Parquet file ({one_line(exc)})") from None


def one_line(exc: BaseException) -> str:
    """An exception's message on one line, for a :class:`~ablate.errors.DataError`."""
    return " ".join(str(exc).split())


def read_videos(store: Path, manifest: Mapping[str, Any]) -> VideoTable:
    """Read and check ``videos.parquet`` against the manifest.

    Raises:
        DataError: naming ``videos.parquet`` (and the video) and the problem.
    """
    table = _read_table(store, VIDEOS)
    ids = [str(v) for v in required_column(table, VIDEOS, "video_id").to_pylist()]
    split = [str(v) for v in required_column(table, VIDEOS, "split").to_pylist()]
    label = np.asarray(required_column(table, VIDEOS, "label").to_numpy(), dtype=np.int64)
    class_name = [str(v) for v in required_column(table, VIDEOS, "class_name").to_pylist()]
    snippets = np.asarray(required_column(table, VIDEOS, "num_snippets").to_numpy(), dtype=np.int64)
    frames = np.asarray(required_column(table, VIDEOS, "num_frames").to_numpy(), dtype=np.int64)
    crops = np.asarray(required_column(table, VIDEOS, "crops").to_numpy(), dtype=np.int64)
    list_index = np.asarray(required_column(table, VIDEOS, "list_index").to_numpy(), dtype=np.int64)

    if not ids:
        raise DataError(VIDEOS, "no videos")
    index: dict[str, int] = {}
    position = dict.fromkeys(SPLITS, 0)
    seen_test = False
    for i, video in enumerate(ids):
        if video in index:
            raise DataError(VIDEOS, "listed twice", video)
        index[video] = i
        if split[i] not in SPLITS:
            raise DataError(VIDEOS, f"split {split[i]!r}, expected 'train' or 'test'", video)
        if split[i] == "test":
            seen_test = True
        elif seen_test:
            raise DataError(VIDEOS, "train video listed after test videos "
                            "(rows must be train first, then test)", video)
        if list_index[i] != position[split[i]]:
            raise DataError(VIDEOS, f"list_index {list_index[i]}, expected "
                            f"{position[split[i]]} (rows must be in list order)", video)
        position[split[i]] += 1
        if label[i] not in (0, 1):
            raise DataError(VIDEOS, f"label {label[i]}, expected 0 or 1", video)
        if snippets[i] < 1:
            raise DataError(VIDEOS, f"num_snippets {snippets[i]}, expected at least 1", video)
        if frames[i] != FRAMES_PER_SNIPPET * snippets[i]:
            raise DataError(VIDEOS, f"num_frames {frames[i]}, expected {FRAMES_PER_SNIPPET} × "
                            f"{snippets[i]} = {FRAMES_PER_SNIPPET * snippets[i]}", video)
        if crops[i] != manifest["crops"]:
            raise DataError(VIDEOS, f"crops {crops[i]}, the manifest says {manifest['crops']}",
                            video)
    counts = count_videos(split, label, snippets)
    if counts != manifest["counts"]:
        raise DataError(MANIFEST, f"counts {manifest['counts']} disagree with {VIDEOS} "
                        f"({counts})")
    starts = np.concatenate([[0], np.cumsum(snippets)[:-1]]).astype(np.int64)
    return VideoTable(ids, split, label, class_name, snippets, starts, index)


def read_frame_labels(store: Path, videos: VideoTable) -> tuple[np.ndarray, np.ndarray]:
    """Read and check ``frame_labels.parquet``.

    Returns:
        ``(labels, offsets)``: all test videos' frame labels concatenated in list order
        (uint8), and for each test video in list order its start in ``labels`` (plus a final
        end offset).

    Raises:
        DataError: naming ``frame_labels.parquet``, the video and the problem.
    """
    table = _read_table(store, FRAME_LABELS)
    ids = [str(v) for v in required_column(table, FRAME_LABELS, "video_id").to_pylist()]
    column = required_column(table, FRAME_LABELS, "labels").combine_chunks()
    if not pa.types.is_list(column.type) and not pa.types.is_large_list(column.type):
        raise DataError(FRAME_LABELS, f"column 'labels' is {column.type}, expected list<uint8>")
    values = column.flatten()
    if values.null_count:
        raise DataError(FRAME_LABELS, f"{values.null_count} missing frame labels")
    offsets = np.asarray(column.offsets.to_numpy(), dtype=np.int64)
    values_np = np.asarray(values.to_numpy(zero_copy_only=False))
    base = offsets[0]

    row_of: dict[str, int] = {}
    for row, video in enumerate(ids):
        position = videos.index.get(video)
        if position is None:
            raise DataError(FRAME_LABELS, "not listed in videos.parquet", video)
        if videos.split[position] != "test":
            raise DataError(FRAME_LABELS, "frame labels for a train video "
                            "(only test videos have them)", video)
        if video in row_of:
            raise DataError(FRAME_LABELS, "listed twice", video)
        row_of[video] = row

    pieces = []
    for video in videos.ids_of("test"):
        row = row_of.get(video)
        if row is None:
            raise DataError(FRAME_LABELS, "test video has no frame labels", video)
        piece = values_np[offsets[row] - base : offsets[row + 1] - base]
        snippets = int(videos.num_snippets[videos.index[video]])
        expected = FRAMES_PER_SNIPPET * snippets
        if len(piece) != expected:
            raise DataError(FRAME_LABELS, f"{len(piece)} frame labels, expected "
                            f"{FRAMES_PER_SNIPPET} × {snippets} snippets = {expected}", video)
        if piece.size and (piece.max() > 1 or piece.min() < 0):
            raise DataError(FRAME_LABELS, f"frame labels must be 0 or 1, found {piece.max()}",
                            video)
        pieces.append(piece)
    labels = np.concatenate(pieces).astype(np.uint8) if pieces else np.zeros(0, np.uint8)
    ends = np.cumsum([len(p) for p in pieces], dtype=np.int64)
    return labels, np.concatenate([[0], ends]).astype(np.int64)
