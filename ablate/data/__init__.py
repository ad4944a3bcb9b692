"""Feature stores: Parquet files of pre-extracted I3D snippet features, memory-mapped on load.

- :class:`StoreWriter` writes a store (streaming, atomic).
- :func:`load` opens one as a :class:`FeatureDataset` whose arrays are shared across processes.
- :func:`validate_store` checks every file and row.
- :func:`resample_segments` is the field's 32-segment resampling (RTFM's ``process_feat``).

Modules, one concern each: ``layout`` (file names, schemas, manifest, checksums), ``files`` and
``writer`` (writing), ``reader`` and ``scan`` (reading with checks), ``validate`` (the full
check), ``cache`` (the memory-mapped Arrow cache) and ``dataset`` (:func:`load`).

Importing this package loads numpy and pyarrow only.
"""

from __future__ import annotations

from ablate.data.dataset import FeatureDataset, VideoInfo, load, resample_segments
from ablate.data.validate import ValidationReport, validate_store
from ablate.data.writer import StoreWriter

__all__ = [
    "FeatureDataset",
    "StoreWriter",
    "ValidationReport",
    "VideoInfo",
    "load",
    "resample_segments",
    "validate_store",
]
