"""The on-disk layout of a feature store: file names, schemas, the manifest and its checksums.

A store is a directory::

    videos.parquet        one row per video, train first then test, each in list order
    features.parquet      one row per snippet, same video order; all crops of a snippet
                          flattened crop-major into one fixed-size list of crops * dim values
    frame_labels.parquet  one row per test video: 16 * T frame labels (0 normal, 1 abnormal)
    manifest.json         format, schema version, shapes, counts, checksums, provenance

:mod:`~ablate.data.writer` writes a store; :mod:`~ablate.data.reader` and
:mod:`~ablate.data.scan` read and check one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ablate.bounded import TooLarge, load_json
from ablate.errors import DataError

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

Progress = Callable[[int, int], None]
"""Called as ``progress(done, total)`` while a long step runs."""

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
        manifest = load_json(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(MANIFEST, f"not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except TooLarge as exc:
        raise DataError(MANIFEST, f"not a manifest: {exc}") from None
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


def fingerprint(manifest: Mapping[str, Any]) -> str:
    """What identifies the data a trial trains on: the SHA-256 of the store's features, as its
    (checked, :func:`read_manifest`) manifest records it. Studies, checkpoints and tracked runs
    record it; a trial is never continued or adopted on another."""
    return str(manifest["files"][FEATURES]["sha256"])


def short_fingerprint(value: str | None) -> str:
    """A fingerprint as error messages show it: its first 12 hex digits (``none``: unrecorded)."""
    return value[:12] if value else "none"


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
