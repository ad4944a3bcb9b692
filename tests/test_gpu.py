"""CUDA paths of a trial: device placement, bfloat16 autocast, resume. Skipped without a GPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ablate.config import apply_overrides, load_raw_config, resolve_trial_config
from ablate.data import load
from ablate.train.driver import run_trial
from ablate.train.trainer import Trainer

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _config(**overrides: object):
    return resolve_trial_config(apply_overrides(load_raw_config("full"), overrides))


def test_trial_runs_on_the_gpu_with_the_train_set_on_device(synthetic_small: Path) -> None:
    trainer = Trainer(_config(**{"train.epochs": 2}), load(synthetic_small))
    assert trainer.device == "cuda"
    assert next(trainer.model.parameters()).is_cuda
    assert trainer.train_set._on_device is not None  # the small set fits: no host gathers
    results = list(trainer.epochs())
    assert [r.epoch for r in results] == [1, 2]
    assert 0.5 < results[-1].metrics["auc"] <= 1.0


def test_gpu_trial_resumes_from_its_checkpoint(synthetic_small: Path, tmp_path: Path) -> None:
    dataset = load(synthetic_small)
    constant = {"train.lr_schedule": "constant"}  # so that the 1-epoch run may grow to 2
    run_trial(_config(**{"train.epochs": 1}, **constant), dataset, tmp_path)
    resumed = run_trial(_config(**{"train.epochs": 2}, **constant), dataset, tmp_path)
    assert [h["epoch"] for h in resumed.history] == [1, 2]
