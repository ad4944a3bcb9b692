"""Loading a feature store: checked metadata plus memory-mapped, shareable features.

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

import contextlib
import fcntl
import hashlib
import logging
import os
import secrets
import tempfile
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ablate.data.store import (
    CACHE_DIR,
    FEATURES,
    FRAME_LABELS,
    FRAMES_PER_SNIPPET,
    SEGMENTS,
    SPLITS,
    VIDEOS,
    check_size,
    read_manifest,
    sha256_file,
    verify_file,
)
from ablate.data.validate import (
    Progress,
    VideoTable,
    read_frame_labels,
    read_videos,
    scan_features,
)
from ablate.errors import DataError

log = logging.getLogger(__name__)

CACHE_VERSION = "1"
# Target size of one record batch in the features cache. Batches hold whole videos (so every
# video is one contiguous slice of the map); a video larger than this is a batch of its own.
CACHE_BATCH_BYTES = 64 << 20


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
        meta = self._cache_meta("train_view", rows=len(train), segments=segments)
        name = f"train-{self.manifest['files'][FEATURES]['sha256']}-s{segments}.arrow"

        def build(target: Path) -> None:
            self._build_train_view(target, meta, train, segments, progress)

        def check(reader: pa.ipc.RecordBatchFileReader) -> bool:
            return reader.num_record_batches == 1

        reader = _cached(self._cache_dirs, name, meta, build, check)
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

    def _cache_meta(self, kind: str, **extra: int) -> dict[str, str]:
        return _cache_meta(self.path, self.manifest, kind, **extra)

    def _build_train_view(
        self, target: Path, meta: dict[str, str], train: list[str], segments: int,
        progress: Progress | None,
    ) -> None:
        log.info("building the %d-segment training view of %s", segments, self.path)
        shape = (len(train), self.crops, segments, self.dim)
        raw = target.with_name(f".{target.name}.{secrets.token_hex(6)}.raw")
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
        try:
            # The view is written to a raw file first, one video at a time, then mapped and
            # written as one zero-copy record batch: building never holds more than one video
            # in process memory, and a single batch makes the view one contiguous array.
            with open(raw, "wb") as out:
                for i, video in enumerate(train):
                    out.write(resample_segments(self.features(video), segments)
                              .astype(self.dtype).tobytes())
                    if progress is not None:
                        progress(i + 1, len(train))
            with pa.memory_map(str(raw), "r") as source:
                buffer = source.read_buffer()
                values = pa.Array.from_buffers(pa.from_numpy_dtype(self.dtype),
                                               int(np.prod(shape)), [None, buffer])
                column = pa.FixedSizeListArray.from_arrays(values,
                                                           self.crops * segments * self.dim)
                schema = pa.schema([("feature", column.type)], metadata=meta)
                with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
                    writer.write_batch(pa.record_batch([column], schema=schema))
                del values, column, buffer
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
            raw.unlink(missing_ok=True)


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
    dirs = [cache_arg] if cache_arg is not None else _default_cache_dirs(store)
    meta = _cache_meta(store, manifest, "features", rows=videos.total_snippets)
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

    def check(reader: pa.ipc.RecordBatchFileReader) -> bool:
        return _batches_align(reader, videos)

    name = f"features-{manifest['files'][FEATURES]['sha256']}.arrow"
    reader = _cached(dirs, name, meta, build, check)
    return FeatureDataset(store, manifest, videos, frame_labels, reader, dirs, cache_arg)


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


def _batches_align(reader: pa.ipc.RecordBatchFileReader, videos: VideoTable) -> bool:
    """Whether every batch boundary of a features cache falls on a video boundary."""
    ends = set((videos.starts + videos.num_snippets).tolist())
    row = 0
    for i in range(reader.num_record_batches):
        row += reader.get_batch(i).num_rows
        if row not in ends:
            return False
    return row == videos.total_snippets


def _cache_meta(store: Path, manifest: Mapping[str, Any], kind: str, **extra: int
                ) -> dict[str, str]:
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


def _default_cache_dirs(store: Path) -> list[Path]:
    # ABLATE_CACHE is the package-wide cache root (the synthetic stores live there too).
    root = os.environ.get("ABLATE_CACHE")
    if root:
        base = Path(root)
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ablate"
    key = hashlib.sha256(str(store.resolve()).encode()).hexdigest()[:16]
    return [store / CACHE_DIR, base / "stores" / key]


def _writable(directory: Path) -> bool:
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            return True
    except OSError:
        return False


def _open_valid(path: Path, meta: Mapping[str, str],
                check: Callable[[pa.ipc.RecordBatchFileReader], bool]
                ) -> pa.ipc.RecordBatchFileReader | None:
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


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _cached(
    dirs: list[Path],
    name: str,
    meta: Mapping[str, str],
    build: Callable[[Path], None],
    check: Callable[[pa.ipc.RecordBatchFileReader], bool],
) -> pa.ipc.RecordBatchFileReader:
    """Map cache file ``name`` from the first directory that has a valid one, building it in
    the first writable directory otherwise (once, under a lock, even across processes)."""
    for directory in dirs:
        reader = _open_valid(directory / name, meta, check)
        if reader is not None:
            return reader
    directory = next((d for d in dirs if _writable(d)), None)
    if directory is None:
        raise DataError(name, "no writable cache directory (tried "
                        f"{', '.join(str(d) for d in dirs)}); pass cache_dir")
    target = directory / name
    with _locked(directory / f".{name}.lock"):
        # Another process may have built it while this one waited for the lock.
        reader = _open_valid(target, meta, check)
        if reader is None:
            build(target)
            reader = _open_valid(target, meta, check)
    if reader is None:
        raise DataError(str(target), "cache file is unreadable right after it was written")
    return reader
