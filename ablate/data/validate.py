"""``ablate data validate``: every check of a store, from the manifest to the last row.

Every problem is a :class:`~ablate.errors.DataError` whose one-line message names the file, the
video when one is involved, and the problem::

    features.parquet: video test_0003: 12 NaN/Inf values in features
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ablate.data.layout import DATA_FILES, MANIFEST, SPLITS, Progress, read_manifest, verify_file
from ablate.data.reader import read_frame_labels, read_videos
from ablate.data.scan import scan_features


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
