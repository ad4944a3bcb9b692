"""What a study's ``dataset`` names: the synthetic benchmark at a scale, or a feature store path."""

from __future__ import annotations

from pathlib import Path

from ablate.errors import AblateError

SYNTHETIC = "synthetic"


def is_synthetic(dataset: str) -> bool:
    return dataset == SYNTHETIC or dataset.startswith(f"{SYNTHETIC}:")


def synthetic_scale(dataset: str) -> str:
    """The scale a ``synthetic[:SCALE]`` name asks for (``small`` by default).

    Raises:
        AblateError: An unknown scale, naming the allowed ones.
    """
    from ablate.data.synth import SCALES

    scale = dataset.partition(":")[2] or "small"
    if scale not in SCALES:
        raise AblateError(f"dataset: unknown synthetic scale {scale!r}; allowed: "
                          f"{', '.join(SCALES)}")
    return scale


def ensure_store(dataset: str) -> Path:
    """The store a ``dataset`` name refers to. The synthetic benchmark is generated into the
    user cache on first use (on each node that needs it: generation is deterministic).

    Raises:
        AblateError: A path that is not a feature store, or an unknown synthetic scale.
    """
    if is_synthetic(dataset):
        from ablate.data.synth import default_store

        return default_store(synthetic_scale(dataset))
    path = Path(dataset).expanduser().resolve()
    if not (path / "manifest.json").exists():
        raise AblateError(f"dataset: {path} is not a feature store (no manifest.json); "
                          f"create one with `ablate data import` or `ablate data synth`")
    return path


def worker_dataset(dataset: str, resolved: Path) -> str:
    """What Ray workers receive: the synthetic name (each node generates its own copy) or the
    store's absolute path."""
    return dataset if is_synthetic(dataset) else str(resolved)
