"""A store's summary for ``ablate data info``: read from the manifest and file sizes only, so it
is instant on any size (``ablate data validate`` is the full check)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ablate.data.layout import CACHE_DIR, DATA_FILES, MANIFEST, SPLITS, read_manifest
from ablate.errors import DataError


def store_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Counts, shapes and sizes of a store.

    Returns:
        A JSON-serialisable dict: ``path``, ``name``, ``created``, ``crops``, ``dim``,
        ``dtype``, ``frames_per_snippet``, ``videos`` / ``snippets`` / ``frames`` per split
        (videos also per label) with totals, ``bytes`` (``total`` of the store's files,
        per-file ``files``, and ``cache``), and ``source``.

    Raises:
        DataError: the manifest is missing or unreadable, or a data file is missing.
    """
    store = Path(path)
    manifest = read_manifest(store)
    counts = manifest["counts"]
    files = {}
    for name in (*DATA_FILES, MANIFEST):
        if not (store / name).is_file():
            raise DataError(name, f"missing from {store}")
        files[name] = (store / name).stat().st_size
    cache = store / CACHE_DIR
    cache_bytes = (
        sum(p.stat().st_size for p in cache.iterdir() if p.is_file()) if cache.is_dir() else 0
    )
    videos: dict[str, Any] = {
        split: {key: counts[split][key] for key in ("videos", "normal", "abnormal")}
        for split in SPLITS
    }
    videos["total"] = sum(counts[split]["videos"] for split in SPLITS)
    per_split = {
        key: {**{split: counts[split][key] for split in SPLITS},
              "total": sum(counts[split][key] for split in SPLITS)}
        for key in ("snippets", "frames")
    }
    return {
        "path": str(store.resolve()),
        "name": manifest.get("name"),
        "created": manifest.get("created"),
        "crops": manifest["crops"],
        "dim": manifest["dim"],
        "dtype": manifest["dtype"],
        "frames_per_snippet": manifest["frames_per_snippet"],
        "videos": videos,
        "snippets": per_split["snippets"],
        "frames": per_split["frames"],
        "bytes": {"total": sum(files.values()), "files": files, "cache": cache_bytes},
        "source": manifest.get("source", {}),
    }


def human_bytes(size: float) -> str:
    """``1536`` -> ``1.5 KiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def format_info(info: dict[str, Any]) -> str:
    """The text form of :func:`store_info`, one fact per line."""
    v, s, f, b = info["videos"], info["snippets"], info["frames"], info["bytes"]

    def split_videos(split: str) -> str:
        return (f"{split} {v[split]['videos']} ({v[split]['normal']} normal, "
                f"{v[split]['abnormal']} abnormal)")

    files = ", ".join(f"{name} {human_bytes(size)}" for name, size in b["files"].items()
                      if name != MANIFEST)
    source = info["source"] or {}
    details = ", ".join(f"{k}={val}" for k, val in source.items() if k != "kind" and val is not
                        None)
    lines = [
        f"store      {info['path']} ({info['name']}, created {info['created']})",
        f"features   {info['crops']} crops × {info['dim']} dims, {info['dtype']}",
        f"videos     {v['total']}: {split_videos('train')}, {split_videos('test')}",
        f"snippets   {s['total']:,}: train {s['train']:,}, test {s['test']:,}",
        f"frames     {f['total']:,}: train {f['train']:,}, test {f['test']:,} "
        f"({info['frames_per_snippet']} per snippet)",
        f"on disk    {human_bytes(b['total'])} ({files}); cache {human_bytes(b['cache'])}",
        f"source     {source.get('kind', 'unknown')}" + (f" ({details})" if details else ""),
    ]
    return "\n".join(lines)
