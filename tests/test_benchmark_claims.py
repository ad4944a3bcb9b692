"""What the synthetic benchmark is for: the full method beats its ablations, seed-robustly.

Trains 4 variants x 3 seeds on the small synthetic benchmark with the default training options
(deterministic on CPU). The margins are properties of the benchmark's design (see
``ablate.data.synth``), not tuned outputs; if a change breaks them, the benchmark or the
reconstruction is wrong.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import pytest

from ablate.config import apply_overrides, load_raw_config, resolve_trial_config
from ablate.data import load
from ablate.train.trainer import run_trial

pytestmark = pytest.mark.slow
SEEDS = (0, 1, 2)


def _mean_auc(dataset, preset: str, **overrides: object) -> float:
    aucs = []
    for seed in SEEDS:
        config = resolve_trial_config(
            apply_overrides(load_raw_config(preset), {"seed": seed, **overrides}))
        with tempfile.TemporaryDirectory() as out:
            aucs.append(run_trial(config, dataset, Path(out)).history[-1]["auc"])
    return statistics.mean(aucs)


@pytest.fixture(scope="module")
def dataset(synthetic_small: Path):
    return load(synthetic_small)


def test_full_beats_baseline_by_a_clear_margin(dataset) -> None:
    full, baseline = _mean_auc(dataset, "full"), _mean_auc(dataset, "baseline")
    assert full - baseline >= 0.05, (full, baseline)


def test_context_motion_beats_motion_alone(dataset) -> None:
    interrelation = _mean_auc(dataset, "full", **{"model.como.relations": ["context_motion"]})
    motion = _mean_auc(dataset, "full", **{"model.como.relations": ["motion"]})
    assert interrelation > motion, (interrelation, motion)
