"""Streaming checks of ``features.parquet``, shared by the loader and ``ablate data validate``.

The loader builds its cache from the rows :func:`scan_features` has checked; the writer checks
each video's values with :func:`nonfinite_per_row` before writing them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ablate.data.layout import FEATURES, Progress
from ablate.data.reader import VideoTable, one_line, required_column
from ablate.errors import DataError

# Elements per step of the NaN/Inf scan: small enough that the temporaries stay in cache.
_SCAN_CHUNK = 1 << 16


def _nonfinite(values: np.ndarray) -> np.ndarray:
    if values.dtype == np.float16:
        # Exponent bits all ones means NaN or Inf; integer ops beat np.isfinite on float16.
        return (values.view(np.uint16) & 0x7C00) == 0x7C00
    return ~np.isfinite(values)


def nonfinite_per_row(rows: np.ndarray) -> np.ndarray | None:
    """Count NaN/Inf values in each row of a 2-D float array; None when every value is finite.

    The common case (all finite) is checked in cache-sized chunks without allocating
    row-group-sized temporaries; rows are counted only once something was found.
    """
    flat = rows.reshape(-1)
    if rows.dtype == np.float16:
        words = flat.view(np.uint16)
        scratch = np.empty(min(len(words), _SCAN_CHUNK), dtype=np.uint16)
        hit = np.empty(len(scratch), dtype=bool)
        for start in range(0, len(words), _SCAN_CHUNK):
            chunk = words[start : start + _SCAN_CHUNK]
            np.bitwise_and(chunk, 0x7C00, out=scratch[: len(chunk)])
            if np.equal(scratch[: len(chunk)], 0x7C00, out=hit[: len(chunk)]).any():
                break
        else:
            return None
    else:
        hit = np.empty(min(len(flat), _SCAN_CHUNK), dtype=bool)
        for start in range(0, len(flat), _SCAN_CHUNK):
            chunk = flat[start : start + _SCAN_CHUNK]
            if not np.isfinite(chunk, out=hit[: len(chunk)]).all():
                break
        else:
            return None
    return np.count_nonzero(_nonfinite(rows), axis=-1)


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
        manifest: Its manifest (from :func:`~ablate.data.layout.read_manifest`).
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
        raise DataError(FEATURES, f"not a readable Parquet file ({one_line(exc)})") from None
    rows = _Rows(videos, width)
    with contextlib.ExitStack() as stack:
        stack.enter_context(parquet)
        _check_schema(parquet.schema_arrow, crops, dim, dtype)
        prefetch = ThreadPoolExecutor(1, thread_name_prefix="ablate-parquet")
        stack.callback(prefetch.shutdown, cancel_futures=True)
        if parquet.num_row_groups:
            upcoming = prefetch.submit(parquet.read_row_group, 0)
        for group in range(parquet.num_row_groups):
            try:
                table = upcoming.result()
            except (OSError, pa.ArrowException) as exc:
                raise DataError(FEATURES, f"row group {group} cannot be decoded "
                                f"({one_line(exc)})") from None
            if group + 1 < parquet.num_row_groups:
                # Decode the next row group (pyarrow releases the GIL) while this one is checked.
                upcoming = prefetch.submit(parquet.read_row_group, group + 1)
            feature = rows.check(table)
            if sink is not None:
                sink(feature)
            if progress is not None:
                progress(rows.row, videos.total_snippets)
        rows.check_values_end()
    rows.check_order()
    return rows.row


def _check_schema(schema: pa.Schema, crops: int, dim: int, dtype: np.dtype) -> None:
    """The columns of ``features.parquet`` and the type of its feature lists."""
    width = crops * dim
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


class _Rows:
    """What a scan has seen of ``features.parquet``'s rows, one row group at a time: feature
    rows per video, the first row out of order, and the first video with NaN/Inf values (its
    count spans the row groups it continues into)."""

    def __init__(self, videos: VideoTable, width: int) -> None:
        self.videos = videos
        self.width = width
        self.ends = videos.starts + videos.num_snippets
        self.counts = np.zeros(len(videos.ids), dtype=np.int64)
        self.mismatch: tuple[int, int, int] | None = None  # (row, video, snippet) of the first
        self.bad_video, self.bad_count = -1, 0
        self.row = 0

    def check(self, table: pa.Table) -> pa.FixedSizeListArray:
        """Checks one row group; returns its feature column."""
        videos, n = self.videos, len(table)
        video = _video_positions(required_column(table, FEATURES, "video_id"), videos)
        snippet = np.asarray(required_column(table, FEATURES, "snippet").to_numpy(),
                             dtype=np.int64)
        feature = _checked_feature(table.column("feature"), self.width, videos, video)
        values = feature.flatten().to_numpy(zero_copy_only=True).reshape(n, self.width)

        bad = nonfinite_per_row(values)
        if bad is not None and self.bad_video < 0:
            self.bad_video = int(video[np.flatnonzero(bad)[0]])
        if self.bad_video >= 0:
            # Count over the whole video, which may continue in the next row group.
            if bad is not None:
                self.bad_count += int(bad[video == self.bad_video].sum())
            if n == 0 or video[-1] != self.bad_video:
                self.check_values_end()

        self.counts += np.bincount(video, minlength=len(self.counts))
        if self.mismatch is None:
            positions = np.arange(self.row, self.row + n)
            expected = np.searchsorted(self.ends, positions, side="right")
            in_range = expected < len(self.counts)
            expected_snippet = positions - videos.starts[np.minimum(expected,
                                                                    len(self.counts) - 1)]
            wrong = ~in_range | (expected != video) | (expected_snippet != snippet)
            if wrong.any():
                first = int(np.flatnonzero(wrong)[0])
                self.mismatch = (self.row + first, int(video[first]), int(snippet[first]))
        self.row += n
        return feature

    def check_values_end(self) -> None:
        """Fails on the video with NaN/Inf values, once its rows are all counted."""
        if self.bad_video >= 0:
            raise DataError(FEATURES, f"{self.bad_count} NaN/Inf values in features",
                            self.videos.ids[self.bad_video])

    def check_order(self) -> None:
        """Every video has exactly its rows, in ``videos.parquet`` order, snippets 0..T-1."""
        videos, counts = self.videos, self.counts
        for position, video in enumerate(videos.ids):
            if counts[position] == 0:
                raise DataError(FEATURES, "listed in videos.parquet but has no feature rows",
                                video)
        for position, video in enumerate(videos.ids):
            if counts[position] != videos.num_snippets[position]:
                raise DataError(FEATURES, f"{counts[position]} feature rows, but videos.parquet "
                                f"says num_snippets = {videos.num_snippets[position]}", video)
        if self.mismatch is not None:
            at, video, snippet = self.mismatch
            expected = int(np.searchsorted(self.ends, at, side="right"))
            raise DataError(
                FEATURES,
                f"row {at} holds snippet {snippet}, expected snippet "
                f"{at - videos.starts[expected]} of video {videos.ids[expected]} "
                "(rows must follow videos.parquet order, snippets 0..T-1)",
                videos.ids[video],
            )


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
