"""The on-disk feature store: layout, manifest, and the streaming writer.

A store is a directory::

    videos.parquet        one row per video, train first then test, each in list order
    features.parquet      one row per snippet, same video order; all crops of a snippet
                          flattened crop-major into one fixed-size list of crops * dim values
    frame_labels.parquet  one row per test video: 16 * T frame labels (0 normal, 1 abnormal)
    manifest.json         format, schema version, shapes, counts, checksums, provenance

Every Parquet file is written with fixed options and no timestamps, so identical content gives
identical bytes and identical checksums; only the manifest's ``created`` field differs.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ablate.errors import AblateError, DataError

FORMAT = "ablate-feature-store"
SCHEMA_VERSION = 1
FRAMES_PER_SNIPPET = 16
SEGMENTS = 32
SPLITS = ("train", "test")
DTYPES = ("float16", "float32")

MANIFEST = "manifest.json"
VIDEOS = "videos.parquet"
FEATURES = "features.parquet"
FRAME_LABELS = "frame_labels.parquet"
DATA_FILES = (VIDEOS, FEATURES, FRAME_LABELS)
CACHE_DIR = ".cache"

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

VIDEOS_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("split", pa.string()),
        ("label", pa.int8()),
        ("class_name", pa.string()),
        ("num_snippets", pa.int32()),
        ("num_frames", pa.int64()),
        ("crops", pa.int16()),
        ("list_index", pa.int32()),
    ]
)
FRAME_LABELS_SCHEMA = pa.schema([("video_id", pa.string()), ("labels", pa.list_(pa.uint8()))])


def features_schema(crops: int, dim: int, dtype: str) -> pa.Schema:
    """Arrow schema of ``features.parquet`` for a store of this shape.

    Every field is non-nullable: Parquet then stores no definition levels for the feature
    values, which makes decoding about 1.5 times faster (measured on 20480-value rows).
    """
    value = pa.field("item", pa.from_numpy_dtype(np.dtype(dtype)), nullable=False)
    return pa.schema(
        [
            pa.field("video_id", pa.dictionary(pa.int32(), pa.string()), nullable=False),
            pa.field("snippet", pa.int32(), nullable=False),
            pa.field("feature", pa.list_(value, crops * dim), nullable=False),
        ]
    )


def sha256_file(path: Path, chunk: int = 8 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


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


def count_videos(
    splits: list[str], labels: list[int] | np.ndarray, num_snippets: list[int] | np.ndarray
) -> dict[str, dict[str, int]]:
    """The manifest's ``counts``: videos, normal, abnormal, snippets and frames per split."""
    counts: dict[str, dict[str, int]] = {}
    for split in SPLITS:
        rows = [i for i, s in enumerate(splits) if s == split]
        abnormal = sum(int(labels[i]) for i in rows)
        snippets = sum(int(num_snippets[i]) for i in rows)
        counts[split] = {
            "videos": len(rows),
            "normal": len(rows) - abnormal,
            "abnormal": abnormal,
            "snippets": snippets,
            "frames": FRAMES_PER_SNIPPET * snippets,
        }
    return counts


def read_manifest(store: Path) -> dict[str, Any]:
    """Read and check ``manifest.json``: present, known format and schema version, sane shapes.

    Raises:
        DataError: naming ``manifest.json`` and the problem.
    """
    store = Path(store)
    if not store.is_dir():
        raise DataError(str(store), "no such store directory")
    path = store / MANIFEST
    if not path.is_file():
        raise DataError(
            MANIFEST,
            f"not found in {store}: not an ablate feature store "
            "(create one with 'ablate data synth' or 'ablate data import')",
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(MANIFEST, f"not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(manifest, dict):
        raise DataError(MANIFEST, "not a JSON object")
    if manifest.get("format") != FORMAT:
        raise DataError(MANIFEST, f"format is {manifest.get('format')!r}, expected {FORMAT!r}")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise DataError(
            MANIFEST,
            f"unknown schema_version {version!r} "
            f"(this version of ablate reads schema_version {SCHEMA_VERSION})",
        )
    for key in ("dim", "crops", "dtype", "frames_per_snippet", "segments", "counts", "files"):
        if key not in manifest:
            raise DataError(MANIFEST, f"missing key {key!r}")
    for key in ("dim", "crops"):
        value = manifest[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise DataError(MANIFEST, f"{key} must be a positive integer, got {value!r}")
    if manifest["dtype"] not in DTYPES:
        raise DataError(MANIFEST, f"dtype {manifest['dtype']!r} is not one of {list(DTYPES)}")
    if manifest["frames_per_snippet"] != FRAMES_PER_SNIPPET:
        raise DataError(
            MANIFEST,
            f"frames_per_snippet {manifest['frames_per_snippet']!r} is not supported "
            f"(the I3D convention is {FRAMES_PER_SNIPPET})",
        )
    files = manifest["files"]
    for name in DATA_FILES:
        entry = files.get(name) if isinstance(files, dict) else None
        if not isinstance(entry, dict) or not {"sha256", "bytes"} <= entry.keys():
            raise DataError(MANIFEST, f"files.{name} must give sha256 and bytes")
    return manifest


def check_size(store: Path, manifest: Mapping[str, Any], name: str) -> int:
    """Check that a data file exists and has the size the manifest recorded; returns it.

    Raises:
        DataError: the file is missing or its size differs.
    """
    path = Path(store) / name
    if not path.is_file():
        raise DataError(name, f"missing from {store} (the manifest lists it)")
    size = path.stat().st_size
    expected = manifest["files"][name]["bytes"]
    if size != expected:
        raise DataError(
            name,
            f"{size} bytes, the manifest says {expected}: "
            "the file changed after the store was written",
        )
    return size


def verify_file(
    store: Path, manifest: Mapping[str, Any], name: str, *, digest: str | None = None
) -> int:
    """Check one data file's size and SHA-256 against the manifest; returns its size in bytes.

    Args:
        store: Store directory.
        manifest: Its manifest.
        name: Data file name.
        digest: The file's SHA-256 if already computed (skips reading the file again).

    Raises:
        DataError: the file is missing or differs from what the manifest recorded.
    """
    entry = manifest["files"][name]
    size = check_size(store, manifest, name)
    digest = digest if digest is not None else sha256_file(Path(store) / name)
    if digest != entry["sha256"]:
        raise DataError(
            name,
            f"sha256 {digest[:12]} does not match the manifest's {str(entry['sha256'])[:12]}: "
            "the file changed after the store was written",
        )
    return size


class _FeatureRows:
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
            self._rows = _FeatureRows(self._tmp / FEATURES, self.crops, self.dim, dtype,
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
        feat_file = origin or FEATURES
        labels_file = origin or FRAME_LABELS
        meta_file = origin or VIDEOS
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

        if split == "test":
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
            self._frame_labels.append((video_id, frames.astype(np.uint8)))
        elif frame_labels is not None:
            raise DataError(
                labels_file, "frame labels given for a train video (the store keeps them for "
                "test videos only)", video_id,
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
                self._reorder_features()
            ordered = [v for s in SPLITS for v in self._videos if v["split"] == s]
            self._write_videos(ordered)
            self._write_frame_labels()
            self._write_manifest(ordered)
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

    def _reorder_features(self) -> None:
        # Train and test were interleaved: copy the rows train first, then test, streaming
        # one row group at a time. Within a split the call order already is the list order.
        unordered = self._tmp / "features.unordered.parquet"
        os.replace(self._tmp / FEATURES, unordered)
        rows = _FeatureRows(self._tmp / FEATURES, self.crops, self.dim, self.dtype,
                            self._row_group_bytes)
        split_of = {v["video_id"]: v["split"] for v in self._videos}
        source = pq.ParquetFile(unordered)
        try:
            for split in SPLITS:
                for group in range(source.num_row_groups):
                    table = source.read_row_group(group)
                    ids = np.asarray(table.column("video_id").to_pylist(), dtype=object)
                    first = table.column("snippet").to_numpy()
                    values = table.column("feature").combine_chunks().flatten().to_numpy()
                    values = values.reshape(len(table), self.crops * self.dim)
                    for start, stop in _segments(split_of, ids, split):
                        rows.append(ids[start], int(first[start]), values[start:stop])
            rows.close()
        except BaseException:
            rows.abort()
            raise
        finally:
            source.close()
        unordered.unlink()

    def _write_videos(self, ordered: list[dict[str, Any]]) -> None:
        index = {split: 0 for split in SPLITS}
        for video in ordered:
            video["list_index"] = index[video["split"]]
            index[video["split"]] += 1
        table = pa.Table.from_pylist(ordered, schema=VIDEOS_SCHEMA)
        pq.write_table(table, self._tmp / VIDEOS, **_SMALL_WRITE_OPTIONS)

    def _write_frame_labels(self) -> None:
        ids = [video_id for video_id, _ in self._frame_labels]
        lengths = [len(labels) for _, labels in self._frame_labels]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        values = (
            np.concatenate([labels for _, labels in self._frame_labels])
            if self._frame_labels
            else np.zeros(0, dtype=np.uint8)
        )
        table = pa.Table.from_arrays(
            [pa.array(ids, pa.string()), pa.ListArray.from_arrays(pa.array(offsets),
                                                                  pa.array(values))],
            schema=FRAME_LABELS_SCHEMA,
        )
        pq.write_table(table, self._tmp / FRAME_LABELS, **_SMALL_WRITE_OPTIONS)

    def _write_manifest(self, ordered: list[dict[str, Any]]) -> None:
        files = {}
        for name in DATA_FILES:
            path = self._tmp / name
            files[name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
        counts = count_videos(
            [v["split"] for v in ordered],
            [v["label"] for v in ordered],
            [v["num_snippets"] for v in ordered],
        )
        manifest = {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "name": self.name,
            "created": _created(),
            "dim": self.dim,
            "crops": self.crops,
            "dtype": self.dtype,
            "frames_per_snippet": FRAMES_PER_SNIPPET,
            "segments": SEGMENTS,
            "counts": counts,
            "files": files,
            "source": self.source,
        }
        text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
        (self._tmp / MANIFEST).write_text(text, encoding="utf-8")

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


def _created() -> str:
    # SOURCE_DATE_EPOCH is the reproducible-builds convention for a fixed timestamp.
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    moment = datetime.fromtimestamp(int(epoch) if epoch else time.time(), tz=timezone.utc)
    return moment.isoformat(timespec="seconds")
