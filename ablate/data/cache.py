"""The memory-mapped Arrow IPC cache of a store.

Parquet decoding always copies, so N training processes reading ``features.parquet`` would hold
N copies. Instead, the first load converts it (streaming, one row group at a time, checking
every row) into an uncompressed Arrow IPC file, and every load memory-maps that file: all
processes on a node then share the same page-cache pages. The training view (every train
video resampled to 32 segments) is cached and mapped the same way.

Cache files live in ``<store>/.cache/`` when that is writable, else in
``~/.cache/ablate/stores/<hash of the store path>/`` (``$ABLATE_CACHE`` replaces
``~/.cache/ablate``). Their names carry the SHA-256 of
``features.parquet``; a file lock makes concurrent first loads build each cache once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ablate.data.layout import (
    CACHE_DIR,
    FEATURES,
    VIDEOS,
    Progress,
    check_size,
    sha256_file,
    verify_file,
)
from ablate.data.reader import VideoTable
from ablate.data.scan import scan_features
from ablate.errors import DataError
from ablate.locks import FileLock, is_writable

log = logging.getLogger(__name__)

CACHE_VERSION = "1"
# Target size of one record batch in the features cache. Batches hold whole videos (so every
# video is one contiguous slice of the map); a video larger than this is a batch of its own.
CACHE_BATCH_BYTES = 64 << 20

Reader = pa.ipc.RecordBatchFileReader
"""An open, memory-mapped cache file."""


def cache_dirs(store: Path, cache_dir: Path | None) -> list[Path]:
    """Where a store's cache files are looked for, in order; built in the first writable one.

    Args:
        store: Store directory.
        cache_dir: The caller's choice, which replaces the defaults when given.
    """
    if cache_dir is not None:
        return [cache_dir]
    # ABLATE_CACHE is the package-wide cache root (the synthetic stores live there too).
    root = os.environ.get("ABLATE_CACHE")
    if root:
        base = Path(root)
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ablate"
    key = hashlib.sha256(str(store.resolve()).encode()).hexdigest()[:16]
    return [store / CACHE_DIR, base / "stores" / key]


def open_features(
    store: Path, manifest: Mapping[str, Any], videos: VideoTable, dirs: list[Path],
    progress: Progress | None = None,
) -> Reader:
    """Map the features cache, building it from ``features.parquet`` on first use.

    Building checks the SHA-256 of ``features.parquet`` and every row (see
    :func:`~ablate.data.scan.scan_features`).

    Args:
        store: Store directory.
        manifest: Its manifest.
        videos: Its checked video table.
        dirs: Cache directories (:func:`cache_dirs`).
        progress: Called as ``progress(rows_done, rows_total)`` while the cache is built.

    Returns:
        The open IPC file: one fixed-size-list column, each batch a run of whole videos.

    Raises:
        DataError: ``features.parquet`` is corrupt or differs from the manifest.
    """
    meta = _meta(store, manifest, "features", rows=videos.total_snippets)
    width = manifest["crops"] * manifest["dim"]
    dtype = np.dtype(manifest["dtype"])

    def build(target: Path) -> None:
        log.info("building the feature cache of %s in %s", store, target.parent)
        check_size(store, manifest, FEATURES)  # the hash is computed below, concurrently
        schema = pa.schema([("feature", pa.list_(pa.from_numpy_dtype(dtype), width))],
                           metadata=meta)
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
        # The checksum is computed in a thread while the rows are checked (hashlib releases
        # the GIL). A mismatch is reported in preference to any content error: a file that
        # changed explains whatever else looks wrong in it.
        with ThreadPoolExecutor(1, thread_name_prefix="ablate-sha256") as pool:
            digest = pool.submit(sha256_file, store / FEATURES)
            try:
                with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
                    rows_per_batch = max(1, CACHE_BATCH_BYTES // (width * dtype.itemsize))
                    batcher = _VideoBatcher(writer, schema, videos, rows_per_batch)
                    scan_features(store, manifest, videos, sink=batcher.add,
                                  progress=progress)
                    batcher.finish()
                verify_file(store, manifest, FEATURES, digest=digest.result())
                os.replace(tmp, target)
            except DataError:
                verify_file(store, manifest, FEATURES, digest=digest.result())
                raise
            finally:
                tmp.unlink(missing_ok=True)

    def check(reader: Reader) -> bool:
        return _batches_align(reader, videos)

    name = f"features-{manifest['files'][FEATURES]['sha256']}.arrow"
    return _cached(dirs, name, meta, build, check)


def open_train_view(
    store: Path, manifest: Mapping[str, Any], dirs: list[Path],
    shape: tuple[int, int, int, int], rows: Callable[[], Iterable[np.ndarray]],
) -> Reader:
    """Map the cached training view, building it on first use.

    Args:
        store: Store directory.
        manifest: Its manifest.
        dirs: Cache directories (:func:`cache_dirs`).
        shape: ``(train videos, crops, segments, dim)``.
        rows: Called once if the view must be built; yields each train video's resampled
            features [crops, segments, dim] in the store dtype, in list order.

    Returns:
        The open IPC file: one batch of one row per train video.
    """
    videos, crops, segments, dim = shape
    meta = _meta(store, manifest, "train_view", rows=videos, segments=segments)
    name = f"train-{manifest['files'][FEATURES]['sha256']}-s{segments}.arrow"
    dtype = np.dtype(manifest["dtype"])

    def build(target: Path) -> None:
        log.info("building the %d-segment training view of %s", segments, store)
        raw = target.with_name(f".{target.name}.{secrets.token_hex(6)}.raw")
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
        try:
            # The view is written to a raw file first, one video at a time, then mapped and
            # written as one zero-copy record batch: building never holds more than one video
            # in process memory, and a single batch makes the view one contiguous array.
            with open(raw, "wb") as out:
                for video in rows():
                    out.write(video.tobytes())
            with pa.memory_map(str(raw), "r") as source:
                buffer = source.read_buffer()
                values = pa.Array.from_buffers(pa.from_numpy_dtype(dtype),
                                               int(np.prod(shape)), [None, buffer])
                column = pa.FixedSizeListArray.from_arrays(values, crops * segments * dim)
                schema = pa.schema([("feature", column.type)], metadata=meta)
                with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
                    writer.write_batch(pa.record_batch([column], schema=schema))
                del values, column, buffer
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
            raw.unlink(missing_ok=True)

    def check(reader: Reader) -> bool:
        return reader.num_record_batches == 1

    return _cached(dirs, name, meta, build, check)


class _VideoBatcher:
    """Regroups Parquet row groups (which cut through videos) into record batches of whole
    videos, at most about ``rows_per_batch`` rows each (a longer video is a batch of its own).

    Whole videos inside one row group are written as zero-copy slices; only a video that spans
    two row groups is copied, to make it contiguous.
    """

    def __init__(self, writer: pa.ipc.RecordBatchFileWriter, schema: pa.Schema,
                 videos: VideoTable, rows_per_batch: int) -> None:
        self._writer = writer
        self._schema = schema
        self._ends = videos.starts + videos.num_snippets
        self._rows_per_batch = rows_per_batch
        self._chunks: list[pa.Array] = []  # pending rows; the first starts at self._written
        self._written = 0
        self._available = 0

    def add(self, feature: pa.FixedSizeListArray) -> None:
        """Queue one row group's features; write every batch that is complete."""
        if len(feature):
            self._chunks.append(feature)
            self._available += len(feature)
            self._drain(final=False)

    def finish(self) -> None:
        """Write what is left."""
        self._drain(final=True)

    def _drain(self, final: bool) -> None:
        ends = self._ends
        while self._written < self._available:
            chunk_end = self._written + len(self._chunks[0])
            first = int(np.searchsorted(ends, self._written, side="right"))  # current video
            inside = int(np.searchsorted(ends, chunk_end, side="right"))  # videos ending in it
            if inside > first:
                # Whole videos end inside the first chunk: as many as fit the target, >= 1.
                fit = int(np.searchsorted(ends, self._written + self._rows_per_batch,
                                          side="right"))
                cut = int(ends[min(max(fit, first + 1), inside) - 1])
            else:
                # The current video continues past the first chunk (or, in a corrupt file, rows
                # run past the last video): wait for its end unless this is the last call.
                cut = int(ends[first]) if first < len(ends) else self._available
                if cut > self._available:
                    if not final:
                        return
                    cut = self._available
            self._write(cut)

    def _write(self, cut: int) -> None:
        need, pieces = cut - self._written, []
        while need:
            chunk = self._chunks[0]
            if len(chunk) <= need:
                pieces.append(self._chunks.pop(0))
                need -= len(chunk)
            else:
                pieces.append(chunk.slice(0, need))
                self._chunks[0] = chunk.slice(need)
                need = 0
        array = pieces[0] if len(pieces) == 1 else pa.concat_arrays(pieces)
        self._writer.write_batch(pa.record_batch([array], schema=self._schema))
        self._written = cut


def _batches_align(reader: Reader, videos: VideoTable) -> bool:
    """Whether every batch boundary of a features cache falls on a video boundary."""
    ends = set((videos.starts + videos.num_snippets).tolist())
    row = 0
    for i in range(reader.num_record_batches):
        row += reader.get_batch(i).num_rows
        if row not in ends:
            return False
    return row == videos.total_snippets


def _meta(store: Path, manifest: Mapping[str, Any], kind: str, **extra: int) -> dict[str, str]:
    # The stamp (size and mtime of features.parquet) makes a cache stale as soon as the file
    # is touched, so a store edited after its cache was built is re-verified on the next load.
    stat = (store / FEATURES).stat()
    meta = {
        "ablate.cache": kind,
        "ablate.cache_version": CACHE_VERSION,
        "ablate.features_sha256": manifest["files"][FEATURES]["sha256"],
        "ablate.videos_sha256": manifest["files"][VIDEOS]["sha256"],
        "ablate.features_stamp": f"{stat.st_size}:{stat.st_mtime_ns}",
        "ablate.shape": f"{manifest['crops']}x{manifest['dim']}:{manifest['dtype']}",
    }
    meta.update({f"ablate.{key}": str(value) for key, value in extra.items()})
    return meta


def _open_valid(path: Path, meta: Mapping[str, str], check: Callable[[Reader], bool]
                ) -> Reader | None:
    """Map a cache file if it exists and matches ``meta``; None when it must be (re)built."""
    if not path.is_file():
        return None
    try:
        reader = pa.ipc.open_file(pa.memory_map(str(path), "r"))
    except (OSError, pa.ArrowException):
        return None
    found = {k.decode(): v.decode() for k, v in (reader.schema.metadata or {}).items()}
    if any(found.get(k) != v for k, v in meta.items()) or not check(reader):
        return None
    return reader


def _cached(
    dirs: list[Path],
    name: str,
    meta: Mapping[str, str],
    build: Callable[[Path], None],
    check: Callable[[Reader], bool],
) -> Reader:
    """Map cache file ``name`` from the first directory that has a valid one, building it in
    the first writable directory otherwise (once, under a lock, even across processes)."""
    for directory in dirs:
        reader = _open_valid(directory / name, meta, check)
        if reader is not None:
            return reader
    directory = next((d for d in dirs if is_writable(d, create=True)), None)
    if directory is None:
        raise DataError(name, "no writable cache directory (tried "
                        f"{', '.join(str(d) for d in dirs)}); pass cache_dir")
    target = directory / name
    with FileLock(directory / f".{name}.lock"):
        # Another process may have built it while this one waited for the lock.
        reader = _open_valid(target, meta, check)
        if reader is None:
            build(target)
            reader = _open_valid(target, meta, check)
    if reader is None:
        raise DataError(str(target), "cache file is unreadable right after it was written")
    return reader
