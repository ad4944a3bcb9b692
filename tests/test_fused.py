"""Fused trials: the seeds of a variant as one vectorised model, each member its own trial.

Tolerance. A fused member draws the same batches, crops and dropout masks as its separate trial
(the RNG states are compared exactly). One member per call (the CPU default) runs the separate
trial's own kernels and must equal it bit for bit. Several members per call (vmap, the CUDA
default; forced here with ``members_per_call=VMAPPED`` so that CPU tests cover the GPU's code
path) change the float32 reduction order (a batched matrix product instead of one per model):
about one ulp (6e-8) per forward pass. Over three epochs of Adam the measured differences stay
below 2e-7 in every metric and loss and below 2e-6 in every parameter. We allow 1e-5 absolute in
metrics and losses (values of order 1) and 1e-4 relative plus 1e-5 absolute in parameters
(weights of order 0.1): tenfold and more above what is measured, and far below what a real
divergence produces (one different batch or dropout mask moves the losses by 1e-3 or more).
"""

from __future__ import annotations

import copy
import math
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from ablate.config import TrialConfig, apply_overrides, load_raw_config, resolve_trial_config
from ablate.data import FeatureDataset, load
from ablate.errors import AblateError
from ablate.train.driver import run_fused, run_trial
from ablate.train.fused import FusedTrainer, check_fusable
from ablate.train.trainer import Trainer

METRIC_TOL = 1e-5
PARAM_RTOL, PARAM_ATOL = 1e-4, 1e-5
VMAPPED = 3  # members per call: three members share one vmapped call, as on CUDA


def _config(seed: int, preset: str = "full", **overrides: object) -> TrialConfig:
    base = {"train.epochs": 3, "train.batch_size": 8, "train.eval_every": 2, "train.threads": 1,
            "train.device": "cpu", "seed": seed}
    if preset == "full":  # a third dropout layer: masks are drawn layer by layer, in call order
        base["model.como.dropout"] = 0.2
    return resolve_trial_config(apply_overrides(load_raw_config(preset), {**base, **overrides}))


@pytest.fixture
def dataset(make_store: Callable[..., Any]) -> FeatureDataset:
    # 6 abnormal + 6 normal train videos: one of each held out for validation, 2 steps of 4 + 4.
    return load(make_store(train=(40,) * 12, test=(40, 64, 32, 80), dim=16).path)


def _separate(config: TrialConfig, dataset: FeatureDataset) -> Trainer:
    trainer = Trainer(config, dataset)
    for _ in trainer.epochs():
        pass
    return trainer


def _assert_same_history(fused: list[dict[str, float]], separate: list[dict[str, float]],
                         exact: bool) -> None:
    assert [h["epoch"] for h in fused] == [h["epoch"] for h in separate]
    for got, want in zip(fused, separate, strict=True):
        assert got.keys() == want.keys()  # incl. val_*, gate_*, como.* and the test cadence
        for key, value in want.items():
            tol = 0.0 if exact else METRIC_TOL
            assert got[key] == pytest.approx(value, rel=0.0, abs=tol), (got["epoch"], key)


def _assert_same_trial(member: Trainer, separate: Trainer, exact: bool = False) -> None:
    _assert_same_history(member.history, separate.history, exact)
    got, want = member.state_dict(), separate.state_dict()
    assert got["epoch"] == want["epoch"]
    for name, value in want["model"].items():
        if exact:
            assert torch.equal(got["model"][name], value), name
        else:
            torch.testing.assert_close(got["model"][name], value, rtol=PARAM_RTOL,
                                       atol=PARAM_ATOL)
    # Same batches and the same dropout masks: the RNGs advanced identically.
    assert got["numpy_rng"] == want["numpy_rng"]
    assert torch.equal(got["torch_rng"], want["torch_rng"])


def _train(fused: FusedTrainer) -> list[dict[int, Any]]:
    return list(fused.epochs())


@pytest.mark.parametrize("members_per_call", [VMAPPED, None], ids=["vmapped", "cpu-default"])
def test_fused_members_equal_separate_trials_epoch_by_epoch(dataset: FeatureDataset,
                                                           members_per_call: int | None) -> None:
    configs = [_config(seed) for seed in (0, 1, 2)]
    fused = FusedTrainer(configs, dataset, members_per_call)
    assert fused.members_per_call == (members_per_call or 1)
    results = _train(fused)
    assert [sorted(r) for r in results] == [[0, 1, 2]] * 3
    for index, result in results[-1].items():
        assert result.epoch == 3
        assert {"epoch": 3, **result.metrics} == fused.members[index].history[-1]
    for member, config in zip(fused.members, configs, strict=True):
        assert member.config == config and member.index == configs.index(config)
        _assert_same_trial(member, _separate(config, dataset), exact=members_per_call is None)
    # The members are three trials, not one: different seeds, different models.
    assert len({m.history[-1]["loss"] for m in fused.members}) == 3


def test_members_may_differ_in_lr_weight_decay_epochs_and_loss(dataset: FeatureDataset) -> None:
    configs = [_config(0), _config(1, **{"train.lr": 3e-3, "train.epochs": 2,
                                         "train.lr_schedule": "cosine"}),
               _config(2, **{"train.weight_decay": 0.0, "loss.rd_weight": 0.5})]
    fused = FusedTrainer(configs, dataset, members_per_call=2)  # a vmapped pair and a single
    results = _train(fused)
    assert [sorted(r) for r in results] == [[0, 1, 2], [0, 1, 2], [0, 2]]
    for member, config in zip(fused.members, configs, strict=True):
        _assert_same_trial(member, _separate(config, dataset))


def test_a_stopped_member_is_not_updated(dataset: FeatureDataset) -> None:
    configs = [_config(seed) for seed in (0, 1, 2)]
    fused = FusedTrainer(configs, dataset, VMAPPED)
    epochs = fused.epochs()
    next(epochs)
    fused.stop(1)
    assert fused.active == [0, 2]
    frozen = copy.deepcopy(fused.members[1].state_dict())
    later = list(epochs)
    assert [sorted(r) for r in later] == [[0, 2], [0, 2]]
    state = fused.members[1].state_dict()
    assert state["epoch"] == 1 and len(state["history"]) == 1
    for name, value in frozen["model"].items():
        assert torch.equal(state["model"][name], value), name
    for param, saved in frozen["optimizer"]["state"].items():  # Adam's moments and step
        for key, value in saved.items():
            assert torch.equal(state["optimizer"]["state"][param][key], value)
    assert state["numpy_rng"] == frozen["numpy_rng"]
    assert torch.equal(state["torch_rng"], frozen["torch_rng"])
    for index in (0, 2):  # the others trained on as if alone
        _assert_same_trial(fused.members[index], _separate(configs[index], dataset))
    # The stopped member continues alone, exactly as a separate trial resumed from its state.
    member = fused.members[1]
    list(member.epochs())
    _assert_same_trial(member, _separate(configs[1], dataset))


def test_member_checkpoints_resume_separately_and_fused_again(dataset: FeatureDataset,
                                                              tmp_path: Path) -> None:
    # Tested every epoch: a 1-epoch run tests its last epoch, so the histories compare as equal.
    # A constant lr, so that the 1-epoch runs may grow to 3.
    every = {"train.eval_every": 1, "train.lr_schedule": "constant"}
    short = [_config(seed, **{**every, "train.epochs": 1}) for seed in (0, 1, 2)]
    configs = [_config(seed, **every) for seed in (0, 1, 2)]
    dirs = [tmp_path / f"seed{seed}" for seed in (0, 1, 2)]
    run_fused(short, dataset, dirs, members_per_call=VMAPPED)

    # A member's checkpoint is a separate trial's: run_trial resumes it unfused.
    shutil.copytree(dirs[1], tmp_path / "alone")
    alone = run_trial(configs[1], dataset, tmp_path / "alone")
    _assert_same_trial(alone, _separate(configs[1], dataset))

    # Fused again from the members' checkpoints: exactly a straight fused run.
    resumed = run_fused(configs, dataset, dirs, members_per_call=VMAPPED)
    straight = FusedTrainer(configs, dataset, VMAPPED)
    _train(straight)
    for got, want in zip(resumed.members, straight.members, strict=True):
        assert [h["epoch"] for h in got.history] == [1, 2, 3]
        assert got.history == want.history
        got_state, want_state = got.state_dict(), want.state_dict()
        for name, value in want_state["model"].items():
            assert torch.equal(got_state["model"][name], value), name


@pytest.mark.parametrize(("preset", "error"), [
    ("mil_ranking", r"loss became nan at epoch 1, step 1; lower train\.lr or check the features"),
    ("full", r".+ \(epoch 1, step 1\)"),  # torch's BCE raises on NaN scores; its text is torch's
], ids=["nan-loss", "objective-raises"])
def test_a_failing_member_fails_alone(dataset: FeatureDataset, preset: str, error: str) -> None:
    configs = [_config(seed, preset, **{"train.epochs": 2}) for seed in (0, 1, 2)]
    fused = FusedTrainer(configs, dataset, VMAPPED)
    with torch.no_grad():
        fused.members[1].model.head.fc2.bias.fill_(math.nan)  # NaN scores from the first step
    results = _train(fused)
    assert [sorted(r) for r in results] == [[0, 2], [0, 2]]
    failed = fused.members[1]
    assert re.fullmatch(error, failed.error or "")
    assert failed.stopped and failed.epoch == 0 and fused.active == []
    for index in (0, 2):
        _assert_same_trial(fused.members[index], _separate(configs[index], dataset))


def test_run_fused_reports_a_failed_member_after_the_others_finish(
        dataset: FeatureDataset, tmp_path: Path) -> None:
    from ablate.train.checkpoint import load_checkpoint, save_checkpoint

    configs = [_config(seed, "mil_ranking", **{"train.epochs": 1}) for seed in (0, 1)]
    dirs = [tmp_path / "a", tmp_path / "b"]
    broken = Trainer(configs[1], dataset)  # a checkpoint whose model went bad
    with torch.no_grad():
        broken.model.head.fc2.bias.fill_(math.nan)
    save_checkpoint(dirs[1], broken.state_dict())
    with pytest.raises(AblateError) as failed:
        run_fused(configs, dataset, dirs, members_per_call=VMAPPED)
    assert str(failed.value) == ("fused member 1 (seed 1): loss became nan at epoch 1, step 1; "
                                 "lower train.lr or check the features")
    assert load_checkpoint(dirs[0])["epoch"] == 1  # the healthy member finished and saved
    assert load_checkpoint(dirs[1])["epoch"] == 0


def test_configs_that_differ_beyond_the_seed_are_refused(dataset: FeatureDataset) -> None:
    other = _config(1, **{"model.como.fusion": "sum", "train.batch_size": 16})
    with pytest.raises(AblateError) as refused:
        FusedTrainer([_config(0), other], dataset)
    assert str(refused.value) == (
        "config 1 cannot join a fused trial with config 0: they differ in model.como.fusion, "
        "train.batch_size; members may differ only in seed, train.epochs, train.lr, "
        "train.lr_schedule, train.weight_decay, train.eval_every, loss")
    with pytest.raises(AblateError) as same:
        check_fusable([_config(0), _config(1), _config(0)])
    assert str(same.value) == ("configs 0 and 2 are the same trial; a fused trial trains each "
                               "once")
    with pytest.raises(AblateError, match="^a fused trial needs at least one trial config$"):
        check_fusable([])
    check_fusable([_config(0), _config(1, **{"train.lr": 1e-4, "loss.gate_weight": 0.0})])


def test_a_fused_trial_leaves_torch_global_rng_alone(dataset: FeatureDataset) -> None:
    torch.manual_seed(123)
    before = torch.get_rng_state()
    fused = FusedTrainer([_config(0, **{"train.epochs": 1}), _config(1, **{"train.epochs": 1})],
                         dataset, VMAPPED)
    _train(fused)
    assert torch.equal(torch.get_rng_state(), before)
    assert np.isfinite([m.history[-1]["val_auc"] for m in fused.members]).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fused_members_train_on_the_gpu_and_resume_separately(dataset: FeatureDataset,
                                                              tmp_path: Path) -> None:
    # On CUDA dropout cannot replay the separate run's stream: equivalence is statistical, so
    # this checks the path (bf16 autocast, per-member CUDA generators, checkpoints) only.
    # A constant lr, so that a member may grow from 2 epochs to 3.
    cuda = {"train.device": "cuda", "train.lr_schedule": "constant"}
    configs = [_config(seed, **{**cuda, "train.epochs": 2}) for seed in (0, 1)]
    dirs = [tmp_path / "a", tmp_path / "b"]
    fused = run_fused(configs, dataset, dirs)
    assert next(fused.members[0].model.parameters()).is_cuda
    assert all(np.isfinite(m.history[-1]["loss"]) for m in fused.members)
    assert "cuda_rng" in fused.members[0].state_dict()
    alone = run_trial(_config(0, **{**cuda, "train.epochs": 3}), dataset, dirs[0])
    assert [h["epoch"] for h in alone.history] == [1, 2, 3]
