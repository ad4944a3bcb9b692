"""Checks of a feature store, shared by the loader and ``ablate data validate``.

Every problem is a :class:`~ablate.errors.DataError` whose one-line message names the file, the
video when one is involved, and the problem::

    features.parquet: video test_0003: 12 NaN/Inf values in features
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ablate.data.store import (
    DATA_FILES,
    FEATURES,
    FRAME_LABELS,
    FRAMES_PER_SNIPPET,
    MANIFEST,
    SPLITS,
    VIDEOS,
    count_videos,
    nonfinite_per_row,
    read_manifest,
    verify_file,
)
from ablate.errors import DataError

Progress = Callable[[int, int], None]
"""Called as ``progress(done, total)`` while a long step runs."""


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


def _column(table: pa.Table, file: str, name: str) -> pa.ChunkedArray:
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
        raise DataError(name, f"not a readable Parquet file ({_one_line(exc)})") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def read_videos(store: Path, manifest: Mapping[str, Any]) -> VideoTable:
    """Read and check ``videos.parquet`` against the manifest.

    Raises:
        DataError: naming ``videos.parquet`` (and the video) and the problem.
    """
    table = _read_table(store, VIDEOS)
    ids = [str(v) for v in _column(table, VIDEOS, "video_id").to_pylist()]
    split = [str(v) for v in _column(table, VIDEOS, "split").to_pylist()]
    label = np.asarray(_column(table, VIDEOS, "label").to_numpy(), dtype=np.int64)
    class_name = [str(v) for v in _column(table, VIDEOS, "class_name").to_pylist()]
    snippets = np.asarray(_column(table, VIDEOS, "num_snippets").to_numpy(), dtype=np.int64)
    frames = np.asarray(_column(table, VIDEOS, "num_frames").to_numpy(), dtype=np.int64)
    crops = np.asarray(_column(table, VIDEOS, "crops").to_numpy(), dtype=np.int64)
    list_index = np.asarray(_column(table, VIDEOS, "list_index").to_numpy(), dtype=np.int64)

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
    ids = [str(v) for v in _column(table, FRAME_LABELS, "video_id").to_pylist()]
    column = _column(table, FRAME_LABELS, "labels").combine_chunks()
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


def scan_features(
    store: Path,
    manifest: Mapping[str, Any],
    videos: VideoTable,
    *,
    sink: Callable[[pa.FixedSizeListArray], None] | None = None,
    progress: Progress | None = None,
) -> int:
    """Stream ``features.parquet`` row group by row group and check every row.

    Checks the schema (list size = crops × dim, the manifest's dtype), that no value is NaN/Inf,
    that every video id is in ``videos.parquet``, that each video has exactly ``num_snippets``
    rows, and that rows follow ``videos.parquet`` order with snippets 0..T-1.

    Args:
        store: Store directory.
        manifest: Its manifest (from :func:`~ablate.data.store.read_manifest`).
        videos: Its checked video table.
        sink: Receives each row group's checked feature column, in file order (the loader
            builds its cache with it). On a problem the scan raises after the sink has seen
            some rows, so the sink's output must be discarded then.
        progress: Called as ``progress(rows_done, rows_total)``.

    Returns:
        The number of rows.

    Raises:
        DataError: naming ``features.parquet``, the video and the problem.
    """
    crops, dim, dtype = manifest["crops"], manifest["dim"], np.dtype(manifest["dtype"])
    width = crops * dim
    try:
        parquet = pq.ParquetFile(Path(store) / FEATURES)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(FEATURES, f"not a readable Parquet file ({_one_line(exc)})") from None
    with contextlib.ExitStack() as stack:
        stack.enter_context(parquet)
        schema = parquet.schema_arrow
        for name in ("video_id", "snippet", "feature"):
            if name not in schema.names:
                raise DataError(FEATURES, f"missing column {name!r}")
        feature_type = schema.field("feature").type
        if pa.types.is_fixed_size_list(feature_type) and feature_type.list_size != width:
            raise DataError(FEATURES, f"feature list size {feature_type.list_size}, expected "
                            f"crops × dim = {crops} × {dim} = {width}")
        if not (pa.types.is_fixed_size_list(feature_type) or pa.types.is_list(feature_type)
                or pa.types.is_large_list(feature_type)):
            raise DataError(FEATURES, f"column 'feature' is {feature_type}, expected a list of "
                            f"{dtype}")
        if feature_type.value_type != pa.from_numpy_dtype(dtype):
            raise DataError(FEATURES, f"feature values are {feature_type.value_type}, the "
                            f"manifest says {dtype}")

        total = videos.total_snippets
        ends = videos.starts + videos.num_snippets
        counts = np.zeros(len(videos.ids), dtype=np.int64)
        mismatch: tuple[int, int, int] | None = None  # (row, video, snippet) of the first
        bad_video, bad_count = -1, 0
        row = 0
        prefetch = ThreadPoolExecutor(1, thread_name_prefix="ablate-parquet")
        stack.callback(prefetch.shutdown, cancel_futures=True)
        if parquet.num_row_groups:
            upcoming = prefetch.submit(parquet.read_row_group, 0)
        for group in range(parquet.num_row_groups):
            try:
                table = upcoming.result()
            except (OSError, pa.ArrowException) as exc:
                raise DataError(FEATURES, f"row group {group} cannot be decoded "
                                f"({_one_line(exc)})") from None
            if group + 1 < parquet.num_row_groups:
                # Decode the next row group (pyarrow releases the GIL) while this one is checked.
                upcoming = prefetch.submit(parquet.read_row_group, group + 1)
            n = len(table)
            video = _video_positions(_column(table, FEATURES, "video_id"), videos)
            snippet = np.asarray(_column(table, FEATURES, "snippet").to_numpy(), dtype=np.int64)
            feature = _checked_feature(table.column("feature"), width, videos, video)
            values = feature.flatten().to_numpy(zero_copy_only=True).reshape(n, width)

            bad = nonfinite_per_row(values)
            if bad is not None and bad_video < 0:
                bad_video = int(video[np.flatnonzero(bad)[0]])
            if bad_video >= 0:
                # Count over the whole video, which may continue in the next row group.
                if bad is not None:
                    bad_count += int(bad[video == bad_video].sum())
                if n == 0 or video[-1] != bad_video:
                    raise DataError(FEATURES, f"{bad_count} NaN/Inf values in features",
                                    videos.ids[bad_video])

            counts += np.bincount(video, minlength=len(counts))
            if mismatch is None:
                positions = np.arange(row, row + n)
                expected = np.searchsorted(ends, positions, side="right")
                in_range = expected < len(counts)
                expected_snippet = positions - videos.starts[np.minimum(expected,
                                                                        len(counts) - 1)]
                wrong = ~in_range | (expected != video) | (expected_snippet != snippet)
                if wrong.any():
                    first = int(np.flatnonzero(wrong)[0])
                    mismatch = (row + first, int(video[first]), int(snippet[first]))
            if sink is not None:
                sink(feature)
            row += n
            if progress is not None:
                progress(row, total)
        if bad_video >= 0:
            raise DataError(FEATURES, f"{bad_count} NaN/Inf values in features",
                            videos.ids[bad_video])

    for position, video in enumerate(videos.ids):
        if counts[position] == 0:
            raise DataError(FEATURES, "listed in videos.parquet but has no feature rows", video)
    for position, video in enumerate(videos.ids):
        if counts[position] != videos.num_snippets[position]:
            raise DataError(FEATURES, f"{counts[position]} feature rows, but videos.parquet "
                            f"says num_snippets = {videos.num_snippets[position]}", video)
    if mismatch is not None:
        at, video, snippet = mismatch
        expected = int(np.searchsorted(ends, at, side="right"))
        raise DataError(
            FEATURES,
            f"row {at} holds snippet {snippet}, expected snippet "
            f"{at - videos.starts[expected]} of video {videos.ids[expected]} "
            "(rows must follow videos.parquet order, snippets 0..T-1)",
            videos.ids[video],
        )
    return row


def _video_positions(column: pa.ChunkedArray, videos: VideoTable) -> np.ndarray:
    """Map a row group's video ids to positions in ``videos``; unknown ids are errors."""
    column = column.combine_chunks()
    if not pa.types.is_dictionary(column.type):
        column = pc.dictionary_encode(column)
    names = [str(v) for v in column.dictionary.to_pylist()]
    codes = np.asarray(column.indices.to_numpy(), dtype=np.int64)
    lookup = np.full(len(names), -1, dtype=np.int64)
    for code in np.unique(codes):
        position = videos.index.get(names[code])
        if position is None:
            raise DataError(FEATURES, "not listed in videos.parquet", names[code])
        lookup[code] = position
    return lookup[codes]


def _checked_feature(
    column: pa.ChunkedArray, width: int, videos: VideoTable, video: np.ndarray
) -> pa.FixedSizeListArray:
    """The feature column as one fixed-size list array, with nulls and row lengths checked."""
    array = column.combine_chunks()
    if array.null_count:
        first = int(np.flatnonzero(array.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataError(FEATURES, f"{array.null_count} missing feature rows",
                        videos.ids[video[first]])
    if not pa.types.is_fixed_size_list(array.type):
        # A plain list column (e.g. rewritten by another tool): every row must still hold
        # exactly crops * dim values.
        lengths = np.diff(np.asarray(array.offsets.to_numpy(), dtype=np.int64))
        wrong = np.flatnonzero(lengths != width)
        if len(wrong):
            raise DataError(FEATURES, f"feature has {lengths[wrong[0]]} values, expected "
                            f"{width} (crops × dim)", videos.ids[video[wrong[0]]])
        array = pa.FixedSizeListArray.from_arrays(array.flatten(), width)
    values = array.flatten()
    if values.null_count:
        raise DataError(FEATURES, f"{values.null_count} missing feature values",
                        videos.ids[video[0]])
    # One canonical type (nullable items) whatever the file declared; zero-copy.
    return pa.FixedSizeListArray.from_arrays(values, width)


@dataclass(frozen=True)
class ValidationReport:
    """What :func:`validate_store` checked.

    Attributes:
        path: Store directory.
        videos: Videos per split.
        snippets: Feature rows.
        test_frames: Frame labels over all test videos.
        crops: Crops per snippet.
        dim: Feature dimension per crop.
        dtype: Storage dtype.
        bytes: Size of the data files and manifest.
    """

    path: Path
    videos: dict[str, int]
    snippets: int
    test_frames: int
    crops: int
    dim: int
    dtype: str
    bytes: int

    def summary(self) -> str:
        """One line for the CLI."""
        return (
            f"{self.path}: valid: {sum(self.videos.values())} videos (train "
            f"{self.videos['train']}, test {self.videos['test']}), {self.snippets:,} snippets, "
            f"{self.crops} crops × {self.dim} {self.dtype}, {self.test_frames:,} test frame "
            f"labels; all {len(DATA_FILES)} files match the manifest's checksums"
        )


def validate_store(path: str | os.PathLike[str], progress: Progress | None = None
                   ) -> ValidationReport:
    """Check a whole store: manifest, every file's size and SHA-256, and every row.

    Args:
        path: Store directory.
        progress: Called as ``progress(rows_done, rows_total)`` while features are scanned.

    Returns:
        A report of what was checked.

    Raises:
        DataError: on the first problem, naming the file, the video and the problem.
    """
    store = Path(path)
    manifest = read_manifest(store)
    size = (store / MANIFEST).stat().st_size
    for name in DATA_FILES:
        size += verify_file(store, manifest, name)
    videos = read_videos(store, manifest)
    labels, _ = read_frame_labels(store, videos)
    rows = scan_features(store, manifest, videos, progress=progress)
    per_split = {s: sum(1 for v in videos.split if v == s) for s in SPLITS}
    return ValidationReport(store, per_split, rows, len(labels), manifest["crops"],
                            manifest["dim"], manifest["dtype"], size)
