"""The files of a store, written so that identical content gives identical bytes.

Parquet files are written with fixed options and no timestamps, and ``features.parquet`` in row
groups of a fixed number of rows, so the bytes and checksums depend only on the content; only
the manifest's ``created`` field differs (``SOURCE_DATE_EPOCH`` fixes it too).
:class:`~ablate.data.writer.StoreWriter` calls these on its temporary directory.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ablate.data.layout import (
    DATA_FILES,
    FEATURES,
    FORMAT,
    FRAME_LABELS,
    FRAME_LABELS_SCHEMA,
    FRAMES_PER_SNIPPET,
    MANIFEST,
    SCHEMA_VERSION,
    SEGMENTS,
    SPLITS,
    VIDEOS,
    VIDEOS_SCHEMA,
    count_videos,
    features_schema,
    sha256_file,
)

# Bound on the feature bytes of one Parquet row group: the writer holds at most one row group
# in memory, and the reader decodes one at a time.
ROW_GROUP_BYTES = 64 << 20

# Features are stored uncompressed. Measured on half-normal I3D-like values (20480 per row):
# lz4 and snappy save under 1 %; zstd saves 10-13 % but halves the decoding speed, and the
# file is decoded only once per node anyway (into the memory-mapped cache). The small files
# compress well and are read on every load, so they use zstd.
_FEATURE_WRITE_OPTIONS: dict[str, Any] = {
    "compression": "none",
    "use_dictionary": ["video_id"],
    "write_statistics": ["video_id", "snippet"],
    "data_page_size": 1 << 20,
    "version": "2.6",
}
_SMALL_WRITE_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "compression_level": 3,
    "write_statistics": False,
    "version": "2.6",
}


class FeatureRows:
    """Buffers snippet rows and writes them to ``features.parquet`` in fixed-size row groups.

    Row groups hold a fixed number of rows (derived from ``row_group_bytes``), so the bytes on
    disk depend only on the content, never on how videos were handed in.
    """

    def __init__(
        self, path: Path, crops: int, dim: int, dtype: str, row_group_bytes: int
    ) -> None:
        self._schema = features_schema(crops, dim, dtype)
        self._width = crops * dim
        self._dtype = np.dtype(dtype)
        self._writer = pq.ParquetWriter(str(path), self._schema, **_FEATURE_WRITE_OPTIONS)
        self._rows_per_group = max(1, row_group_bytes // (self._width * self._dtype.itemsize))
        self._chunks: list[np.ndarray] = []
        self._spans: list[tuple[str, int, int]] = []  # (video_id, first snippet, rows)
        self._buffered = 0

    def append(self, video_id: str, first_snippet: int, rows: np.ndarray) -> None:
        """Queue rows [n, crops * dim] of one video, starting at ``first_snippet``."""
        start = 0
        while start < len(rows):
            take = min(len(rows) - start, self._rows_per_group - self._buffered)
            self._chunks.append(rows[start : start + take])
            self._spans.append((video_id, first_snippet + start, take))
            self._buffered += take
            start += take
            if self._buffered == self._rows_per_group:
                self._flush()

    def _flush(self) -> None:
        if not self._buffered:
            return
        values = np.concatenate(self._chunks) if len(self._chunks) > 1 else self._chunks[0]
        codes: dict[str, int] = {}
        for video_id, _, _ in self._spans:
            codes.setdefault(video_id, len(codes))
        indices = np.repeat(
            np.array([codes[v] for v, _, _ in self._spans], dtype=np.int32),
            [n for _, _, n in self._spans],
        )
        snippets = np.concatenate(
            [np.arange(first, first + n, dtype=np.int32) for _, first, n in self._spans]
        )
        feature = pa.FixedSizeListArray.from_arrays(
            pa.array(np.ascontiguousarray(values).reshape(-1)),
            type=self._schema.field("feature").type,
        )
        table = pa.Table.from_arrays(
            [
                pa.DictionaryArray.from_arrays(pa.array(indices), pa.array(list(codes))),
                pa.array(snippets),
                feature,
            ],
            schema=self._schema,
        )
        self._writer.write_table(table, row_group_size=len(table))
        self._chunks, self._spans, self._buffered = [], [], 0

    def close(self) -> None:
        """Write the last, partial row group and close the file."""
        self._flush()
        self._writer.close()

    def abort(self) -> None:
        """Close the file without flushing; the caller deletes it."""
        try:
            self._writer.close()
        except Exception:  # noqa: BLE001 - already failing; the temp dir is removed anyway
            pass


def _segments(split_of: dict[str, str], ids: np.ndarray, split: str) -> list[tuple[int, int]]:
    """Runs [start, stop) of consecutive equal ids whose video belongs to ``split``."""
    if len(ids) == 0:
        return []
    change = np.flatnonzero(ids[1:] != ids[:-1]) + 1
    starts = np.concatenate([[0], change])
    stops = np.concatenate([change, [len(ids)]])
    pairs = zip(starts, stops, strict=True)
    return [(int(a), int(b)) for a, b in pairs if split_of[ids[a]] == split]


def reorder_features(
    directory: Path, crops: int, dim: int, dtype: str, row_group_bytes: int,
    split_of: Mapping[str, str],
) -> None:
    """Rewrite ``features.parquet`` in ``directory`` train first, then test.

    For a writer that was handed train and test videos interleaved: the rows are copied one row
    group at a time. Within a split the call order already is the list order.

    Args:
        directory: The store being written.
        crops: Crops per snippet.
        dim: Feature dimension per crop.
        dtype: Storage dtype.
        row_group_bytes: Bound on the feature bytes per row group, as for the first write.
        split_of: Video id -> split.
    """
    unordered = directory / "features.unordered.parquet"
    os.replace(directory / FEATURES, unordered)
    rows = FeatureRows(directory / FEATURES, crops, dim, dtype, row_group_bytes)
    source = pq.ParquetFile(unordered)
    try:
        for split in SPLITS:
            for group in range(source.num_row_groups):
                table = source.read_row_group(group)
                ids = np.asarray(table.column("video_id").to_pylist(), dtype=object)
                first = table.column("snippet").to_numpy()
                values = table.column("feature").combine_chunks().flatten().to_numpy()
                values = values.reshape(len(table), crops * dim)
                for start, stop in _segments(split_of, ids, split):
                    rows.append(ids[start], int(first[start]), values[start:stop])
        rows.close()
    except BaseException:
        rows.abort()
        raise
    finally:
        source.close()
    unordered.unlink()


def write_videos(directory: Path, ordered: list[dict[str, Any]]) -> None:
    """Write ``videos.parquet`` from video rows in file order, numbering each split's rows
    (``list_index``, set on the rows in place)."""
    index = {split: 0 for split in SPLITS}
    for video in ordered:
        video["list_index"] = index[video["split"]]
        index[video["split"]] += 1
    table = pa.Table.from_pylist(ordered, schema=VIDEOS_SCHEMA)
    pq.write_table(table, directory / VIDEOS, **_SMALL_WRITE_OPTIONS)


def write_frame_labels(directory: Path, frame_labels: list[tuple[str, np.ndarray]]) -> None:
    """Write ``frame_labels.parquet`` from (video id, uint8 labels) pairs in list order."""
    ids = [video_id for video_id, _ in frame_labels]
    lengths = [len(labels) for _, labels in frame_labels]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    values = (
        np.concatenate([labels for _, labels in frame_labels])
        if frame_labels
        else np.zeros(0, dtype=np.uint8)
    )
    table = pa.Table.from_arrays(
        [pa.array(ids, pa.string()), pa.ListArray.from_arrays(pa.array(offsets),
                                                              pa.array(values))],
        schema=FRAME_LABELS_SCHEMA,
    )
    pq.write_table(table, directory / FRAME_LABELS, **_SMALL_WRITE_OPTIONS)


def write_manifest(
    directory: Path, ordered: list[dict[str, Any]], *, name: str, dim: int, crops: int,
    dtype: str, source: Mapping[str, Any],
) -> None:
    """Write ``manifest.json``, with the checksums of the data files already in ``directory``.

    Args:
        directory: The store being written.
        ordered: Video rows in file order.
        name: Store name.
        dim: Feature dimension per crop.
        crops: Crops per snippet.
        dtype: Storage dtype.
        source: JSON-serialisable provenance.
    """
    files = {}
    for file in DATA_FILES:
        path = directory / file
        files[file] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    counts = count_videos(
        [v["split"] for v in ordered],
        [v["label"] for v in ordered],
        [v["num_snippets"] for v in ordered],
    )
    manifest = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "created": _created(),
        "dim": dim,
        "crops": crops,
        "dtype": dtype,
        "frames_per_snippet": FRAMES_PER_SNIPPET,
        "segments": SEGMENTS,
        "counts": counts,
        "files": files,
        "source": source,
    }
    text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
    (directory / MANIFEST).write_text(text, encoding="utf-8")


def _created() -> str:
    # SOURCE_DATE_EPOCH is the reproducible-builds convention for a fixed timestamp.
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    moment = datetime.fromtimestamp(int(epoch) if epoch else time.time(), tz=timezone.utc)
    return moment.isoformat(timespec="seconds")
