"""The validation split: train videos held out for selection.

Searches and early stopping must not select on test. Real benchmarks ship no validation list, so
one is carved from the train videos: deterministic (the same for every trial, seed and variant of
a store, so selections compare), stratified by video label, and using only video-level labels,
the supervision a weakly-supervised method has.
"""

from __future__ import annotations

import numpy as np

# Fixed, so that the split is a property of the store, not of a trial.
SPLIT_SEED = 20230618


def validation_split(labels: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Splits train videos into (train, validation) positions, label-stratified.

    Args:
        labels: Video labels of the train split in list order, 1 for abnormal.
        fraction: Share of each label's videos held out; 0 holds out none. A label with at least
            two videos keeps at least one on each side.

    Returns:
        Sorted positions into ``labels``: the videos to train on and the validation videos.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(SPLIT_SEED)
    held: list[np.ndarray] = []
    for label in (0, 1):
        members = np.flatnonzero(labels == label)
        count = int(round(fraction * len(members)))
        if fraction > 0 and len(members) >= 2:
            count = min(max(count, 1), len(members) - 1)
        held.append(rng.permutation(members)[:count])
    val = np.sort(np.concatenate(held)).astype(np.int64)
    train = np.setdiff1d(np.arange(len(labels)), val)
    return train, val
