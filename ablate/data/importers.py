"""Importers for the public I3D feature releases, streaming one video at a time.

Two layouts are in use (DESIGN.md section 3):

- RTFM (Tian et al.): one ``.npy`` per video, shape [T, 10, 2048]
  (``Abuse028_x264_i3d.npy``, ``01_0015_i3d.npy``).
- Wu et al. (XD-Violence and UCF-Crime): one ``.npy`` per crop, shape [T, 1024]
  (``Abuse001_x264__0.npy`` ... ``__9.npy``; XD-Violence has five crops ``__0`` to ``__4``).

List files name the videos; the paths in them are usually absolute paths on the authors'
machines, so with ``feature_root`` every file is found by its base name under that directory.
The frame-level ground truth is one array over all test videos concatenated in list order,
16 frames per snippet; a length mismatch is an error, never trimmed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ablate.data.layout import FRAMES_PER_SNIPPET, Progress
from ablate.data.writer import StoreWriter
from ablate.errors import AblateError, DataError

# XD-Violence encodes the class after "_label_": A is normal, the first code names the event.
XD_CLASSES = {
    "A": "Normal",
    "B1": "Fighting",
    "B2": "Shooting",
    "B4": "Riot",
    "B5": "Abuse",
    "B6": "Car accident",
    "G": "Explosion",
}
_UCF_CLASS = re.compile(r"([A-Za-z]+)(?:_Videos)?_?\d")
_CROP_SUFFIX = re.compile(r"__(\d+)$")


@dataclass(frozen=True)
class _Video:
    video_id: str
    files: tuple[Path, ...]  # one file (RTFM) or one per crop (Wu)
    list_file: Path


def video_label_from_name(video_id: str, xd_style: bool) -> int:
    """Video label from the file name: XD-Violence marks normal videos ``_label_A``;
    UCF-Crime names normal videos ``Normal_Videos...``."""
    if xd_style:
        return 0 if "_label_A" in video_id else 1
    return 0 if "Normal" in video_id else 1


def class_from_name(video_id: str, label: int) -> str:
    """Event class from the name (``Abuse028_x264`` -> ``Abuse``, XD ``_label_B2`` ->
    ``Shooting``); ``normal``/``abnormal`` when the name carries none (ShanghaiTech)."""
    if "_label_" in video_id:
        code = video_id.rsplit("_label_", 1)[1].split("-")[0]
        if code in XD_CLASSES:
            return XD_CLASSES[code]
    else:
        match = _UCF_CLASS.match(video_id)
        if match:
            return match.group(1)
    return "abnormal" if label else "normal"


def _read_list(list_file: Path) -> list[str]:
    if not list_file.is_file():
        raise DataError(str(list_file), "list file not found")
    lines = list_file.read_text(encoding="utf-8").splitlines()
    entries = [line.strip() for line in lines if line.strip()]
    if not entries:
        raise DataError(str(list_file), "list file names no videos")
    return entries


def _index_root(root: Path) -> dict[str, Path | None]:
    """Base name -> path of every ``.npy`` under ``root`` (None when the name is ambiguous)."""
    if not root.is_dir():
        raise DataError(str(root), "feature root is not a directory")
    index: dict[str, Path | None] = {}
    for directory, _, files in os.walk(root):
        for name in files:
            if name.endswith(".npy"):
                index[name] = None if name in index else Path(directory) / name
    return index


class _Finder:
    """Finds a listed feature file: by base name under the feature root, or as listed."""

    def __init__(self, feature_root: Path | None) -> None:
        self.root = feature_root
        self._index = _index_root(feature_root) if feature_root is not None else None

    def locate(self, listed: str, name: str, list_file: Path) -> Path | None:
        """Path of file ``name`` for list entry ``listed``, or None when there is none."""
        if self._index is not None:
            if name in self._index and self._index[name] is None:
                raise DataError(name, f"several files with this name under {self.root}; "
                                "cannot tell which one the list means")
            return self._index.get(name)
        path = self._listed_dir(listed, list_file) / name
        return path if path.is_file() else None

    def find(self, listed: str, name: str, list_file: Path) -> Path:
        """Like :meth:`locate`, but a missing file is an error naming it."""
        path = self.locate(listed, name, list_file)
        if path is not None:
            return path
        if self._index is not None:
            raise DataError(name, f"feature file not found under {self.root} "
                            f"(listed in {list_file})")
        hint = ("; pass --feature-root DIR to find files by base name"
                if Path(listed).is_absolute() else "")
        raise DataError(str(self._listed_dir(listed, list_file) / name),
                        f"feature file not found (listed in {list_file}){hint}")

    @staticmethod
    def _listed_dir(listed: str, list_file: Path) -> Path:
        listed_path = Path(listed)
        if listed_path.is_absolute():
            return listed_path.parent
        return list_file.parent / listed_path.parent


def _strip_npy(name: str) -> str:
    return name[: -len(".npy")] if name.endswith(".npy") else name


def _rtfm_videos(list_file: Path, finder: _Finder) -> list[_Video]:
    videos = []
    for listed in _read_list(list_file):
        name = Path(listed).name
        if not name.endswith(".npy"):
            name += ".npy"
        video_id = _strip_npy(name)
        video_id = video_id[: -len("_i3d")] if video_id.endswith("_i3d") else video_id
        videos.append(_Video(video_id, (finder.find(listed, name, list_file),), list_file))
    return videos


def _wu_videos(list_file: Path, finder: _Finder) -> list[_Video]:
    # Lists name either every crop file or each video once: reduce to videos, keeping order.
    bases: dict[str, str] = {}
    for listed in _read_list(list_file):
        base = _CROP_SUFFIX.sub("", _strip_npy(Path(listed).name))
        bases.setdefault(base, listed)
    videos = []
    crops: int | None = None
    first = ""
    for base, listed in bases.items():
        if crops is None:
            # The first video tells how many crops there are: 10 for UCF-Crime, 5 for XD.
            files = [finder.find(listed, f"{base}__0.npy", list_file)]
            while (path := finder.locate(listed, f"{base}__{len(files)}.npy", list_file)):
                files.append(path)
            crops, first = len(files), base
        else:
            files = [finder.find(listed, f"{base}__{k}.npy", list_file) for k in range(crops)]
            extra = finder.locate(listed, f"{base}__{crops}.npy", list_file)
            if extra is not None:
                raise DataError(str(extra), f"video {base} has more than {crops} crop files, "
                                f"but {first} has {crops}")
        videos.append(_Video(base, tuple(files), list_file))
    return videos


def _open(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DataError(str(path), f"not a readable .npy file ({exc})") from None


def _shape(video: _Video, layout: str) -> tuple[int, int, int]:
    """(T, crops, dim) of a video, read from the .npy headers only."""
    arrays = [_open(path) for path in video.files]
    if layout == "rtfm":
        array = arrays[0]
        if array.ndim != 3:
            raise DataError(str(video.files[0]), f"shape {list(array.shape)}, expected "
                            "[T, crops, dim] (one file per video)")
        return array.shape[0], array.shape[1], array.shape[2]
    snippets = None
    for path, array in zip(video.files, arrays, strict=True):
        if array.ndim != 2:
            raise DataError(str(path), f"shape {list(array.shape)}, expected [T, dim] "
                            "(one file per crop)")
        if snippets is None:
            snippets, dim = array.shape
        elif array.shape != (snippets, dim):
            raise DataError(str(path), f"shape {list(array.shape)}, but crop 0 "
                            f"({video.files[0].name}) has {[snippets, dim]}")
    assert snippets is not None
    return snippets, len(arrays), dim


def _features(video: _Video, layout: str) -> np.ndarray:
    """Features [crops, T, dim] of one video (RTFM: a transposed view on the memory map)."""
    if layout == "rtfm":
        return _open(video.files[0]).transpose(1, 0, 2)
    return np.stack([_open(path) for path in video.files])


def import_features(
    layout: str,
    train_list: str | os.PathLike[str],
    test_list: str | os.PathLike[str],
    gt: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    feature_root: str | os.PathLike[str] | None = None,
    num_abnormal: int | None = None,
    dtype: str = "float16",
    name: str | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Import an RTFM- or Wu-layout feature release into a store.

    Every file is located and its header read before anything is written, so a missing file,
    a crop or dimension mismatch, or a wrong gt length fails in seconds.

    Args:
        layout: ``"rtfm"`` (one [T, crops, D] file per video) or ``"wu"`` (one [T, D] file per
            crop, ``<video>__<k>.npy``).
        train_list: List file of the train videos.
        test_list: List file of the test videos.
        gt: Frame-level ground truth ``.npy`` over the test list, concatenated in list order.
        out: Store directory to write.
        feature_root: Find each listed file by base name under this directory (the lists
            hold the authors' absolute paths); default: paths as listed, relative ones
            relative to the list file.
        num_abnormal: The train list is ordered abnormal-first and its first N videos are
            abnormal (ShanghaiTech: 63). Default: labels from the names (``Normal`` in
            UCF-Crime names, ``_label_A`` in XD-Violence names mark normal videos). Test
            labels always come from the gt (any abnormal frame makes a video abnormal).
        dtype: Storage dtype, ``"float16"`` or ``"float32"``.
        name: Store name (default: the directory name).
        overwrite: Replace an existing, non-empty ``out``.
        progress: Called as ``progress(videos_done, videos_total)``.

    Returns:
        The store directory.

    Raises:
        DataError: a missing or malformed file, inconsistent shapes, or a gt length that
            differs from 16 × the test list's snippets.
    """
    if layout not in ("rtfm", "wu"):
        raise AblateError(f"layout must be 'rtfm' or 'wu', got {layout!r}")
    train_list, test_list, gt = Path(train_list), Path(test_list), Path(gt)
    root = Path(feature_root) if feature_root is not None else None
    finder = _Finder(root)
    collect = _rtfm_videos if layout == "rtfm" else _wu_videos
    train = collect(train_list, finder)
    test = collect(test_list, finder)
    shapes, crops, dim = _headers(train + test, layout)
    frames = _ground_truth(gt, sum(shapes[v.video_id] for v in test))
    train_labels, rule = _train_labels(train, train_list, test, num_abnormal)
    source = {
        "kind": layout,
        "train_list": str(train_list.resolve()),
        "test_list": str(test_list.resolve()),
        "gt": str(gt.resolve()),
        "feature_root": str(root.resolve()) if root is not None else None,
        "train_labels": rule,
        "test_labels": "any abnormal frame in the gt",
    }
    with StoreWriter(out, dim=dim, crops=crops, dtype=dtype, name=name, source=source,
                     overwrite=overwrite) as writer:
        _write_videos(writer, layout, train, train_labels, test, frames, shapes, gt, progress)
    return Path(out)


def _write_videos(writer: StoreWriter, layout: str, train: list[_Video], train_labels: list[int],
                  test: list[_Video], frames: np.ndarray, shapes: dict[str, int], gt: Path,
                  progress: Progress | None) -> None:
    """Adds the train videos, then the test videos with their slices of the ground truth."""
    total = len(train) + len(test)
    done = 0
    for video, label in zip(train, train_labels, strict=True):
        writer.add_video(video.video_id, "train", label, class_from_name(video.video_id, label),
                         _features(video, layout), origin=str(video.files[0]))
        done += 1
        if progress is not None:
            progress(done, total)
    offset = 0
    for video in test:
        length = FRAMES_PER_SNIPPET * shapes[video.video_id]
        labels = np.asarray(frames[offset : offset + length])
        offset += length
        if not np.isin(labels, (0, 1)).all():
            wrong = labels[~np.isin(labels, (0, 1))][0]
            raise DataError(str(gt), f"frame labels must be 0 or 1, found {wrong}",
                            video.video_id)
        label = int(labels.any())
        writer.add_video(video.video_id, "test", label, class_from_name(video.video_id, label),
                         _features(video, layout), labels.astype(np.uint8),
                         origin=str(video.files[0]))
        done += 1
        if progress is not None:
            progress(done, total)


def _headers(videos: list[_Video], layout: str) -> tuple[dict[str, int], int, int]:
    """Every video's snippet count from its file headers, checked to agree on crops and
    dimension: ``(snippets by video id, crops, dim)``."""
    shapes: dict[str, int] = {}
    crops = dim = None
    first: Path | None = None
    for video in videos:
        snippets, video_crops, video_dim = _shape(video, layout)
        if crops is None:
            crops, dim, first = video_crops, video_dim, video.files[0]
        elif video_crops != crops:
            raise DataError(str(video.files[0]), f"{video_crops} crops, but {first} has {crops}")
        elif video_dim != dim:
            raise DataError(str(video.files[0]), f"feature dimension {video_dim}, but {first} "
                            f"has {dim}")
        if snippets < 1:
            raise DataError(str(video.files[0]), "no snippets (T = 0)")
        shapes[video.video_id] = snippets
    assert crops is not None and dim is not None
    return shapes, crops, dim


def _ground_truth(gt: Path, test_snippets: int) -> np.ndarray:
    """The frame-level ground truth, checked to cover 16 frames per test snippet."""
    if not gt.is_file():
        raise DataError(str(gt), "ground-truth file not found")
    frames = _open(gt).reshape(-1)
    needed = FRAMES_PER_SNIPPET * test_snippets
    if len(frames) != needed:
        raise DataError(str(gt), f"gt has {len(frames)} frames, test list needs "
                        f"{FRAMES_PER_SNIPPET} × {test_snippets} snippets = {needed}")
    return frames


def _train_labels(train: list[_Video], train_list: Path, test: list[_Video],
                  num_abnormal: int | None) -> tuple[list[int], str]:
    """The train videos' labels and the rule that gave them (an abnormal-first count, else
    the videos' names)."""
    if num_abnormal is not None:
        if not 0 <= num_abnormal <= len(train):
            raise AblateError(f"--num-abnormal {num_abnormal} is outside 0..{len(train)} "
                              "(the train list's length)")
        return ([int(i < num_abnormal) for i in range(len(train))],
                f"first {num_abnormal} train videos abnormal")
    xd_style = any("_label_" in v.video_id for v in train + test)
    labels = [video_label_from_name(v.video_id, xd_style) for v in train]
    rule = "'_label_A' marks normal" if xd_style else "'Normal' in the name marks normal"
    if train and len(set(labels)) == 1:
        kind = "abnormal" if labels[0] else "normal"
        raise AblateError(
            f"every train video in {train_list} is {kind} by its name ({rule}); for a "
            "list ordered abnormal-first pass --num-abnormal N (ShanghaiTech: 63)"
        )
    return labels, rule
