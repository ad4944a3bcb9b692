"""A plain loop over trials: what a researcher writes instead of a harness.

Trains resolved trial configs on one store in a small process pool, without Ray, tracking or
checkpoints kept, and returns each trial's history. Benchmarks compare the harness against it,
and the benchmark-claim tests use it to train many variants quickly.
"""

from __future__ import annotations

import multiprocessing
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ablate.config import TrialConfig

_DATASETS: dict[str, Any] = {}  # per worker process: store path -> loaded dataset


def _train_one(job: tuple[str, TrialConfig]) -> list[dict[str, float]]:
    from ablate.data import load
    from ablate.train.driver import run_trial

    store, config = job
    if store not in _DATASETS:
        _DATASETS[store] = load(Path(store))
    with tempfile.TemporaryDirectory() as out:
        return run_trial(config, _DATASETS[store], Path(out)).history


def train_all(configs: Sequence[TrialConfig], store: Path,
              workers: int = 2) -> list[list[dict[str, float]]]:
    """Trains every config to completion and returns each one's per-epoch history, in order.

    Args:
        configs: Resolved trial configs; give them ``train.threads`` 1 when ``workers`` > 1 so
            the workers do not oversubscribe the cores.
        store: The feature store every trial trains on.
        workers: Processes training at once (each loads the store once, memory-mapped).
    """
    jobs = [(str(store), config) for config in configs]
    if workers <= 1:
        return [_train_one(job) for job in jobs]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        return pool.map(_train_one, jobs, chunksize=1)
