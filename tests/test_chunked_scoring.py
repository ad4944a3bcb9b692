"""Scoring long videos in windows (``train.eval_chunk``): whole when the windows cover a video,
bounded windows otherwise, in the Trainer and the fused trainer alike."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from ablate.config import TrialConfig, apply_overrides, load_raw_config, resolve_trial_config
from ablate.data import FeatureDataset, load
from ablate.errors import ConfigError
from ablate.train.fused import FusedTrainer
from ablate.train.scoring import windows
from ablate.train.trainer import Trainer

TEST_T = (40, 64, 32, 80)  # the longest test video: 80 snippets
TRAIN_T = 40  # validation videos are train videos


def _config(chunk: int, seed: int = 0, **overrides: object) -> TrialConfig:
    return resolve_trial_config(apply_overrides(load_raw_config("full"), {
        "train.epochs": 1, "train.batch_size": 8, "train.threads": 1, "train.device": "cpu",
        "train.eval_chunk": chunk, "seed": seed, **overrides}))


@pytest.fixture
def dataset(make_store: Callable[..., Any]) -> FeatureDataset:
    return load(make_store(train=(TRAIN_T,) * 12, test=TEST_T, dim=16).path)


def _trained(config: TrialConfig, dataset: FeatureDataset) -> Trainer:
    trainer = Trainer(config, dataset)  # built and trained in turn: dropout draws torch's RNG
    for _ in trainer.epochs():
        pass
    return trainer


def _record_lengths(model: torch.nn.Module) -> list[int]:
    """The snippet counts of the eval-mode forward passes of ``model``, as they happen."""
    lengths: list[int] = []

    def hook(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        if not module.training:
            lengths.append(args[0].shape[1])  # (crops, T, D)

    model.register_forward_pre_hook(hook)
    return lengths


@pytest.mark.parametrize(("snippets", "chunk", "expected"), [
    (80, 0, [80]),
    (80, 80, [80]),
    (80, 1000, [80]),
    (80, 79, [40, 40]),  # near-equal windows, not 79 + 1
    (80, 32, [26, 27, 27]),
    (7, 1, [1] * 7),
    (1, 4, [1]),
])
def test_windows_are_consecutive_near_equal_and_at_most_chunk(snippets: int, chunk: int,
                                                              expected: list[int]) -> None:
    parts = windows(snippets, chunk)
    assert [w.stop - w.start for w in parts] == expected
    assert parts[0].start == 0 and parts[-1].stop == snippets
    assert all(a.stop == b.start for a, b in zip(parts, parts[1:], strict=False))


def test_a_chunk_covering_the_longest_video_scores_exactly_as_unchunked(
        dataset: FeatureDataset) -> None:
    whole, covered = (_trained(_config(chunk), dataset) for chunk in (0, max(TEST_T)))
    assert covered.history == whole.history  # every metric, loss and diagnostic, bit for bit
    assert len(covered.last_scores) == len(TEST_T)
    for got, want in zip(covered.last_scores, whole.last_scores, strict=True):
        assert np.array_equal(got, want)


def test_a_small_chunk_runs_the_model_on_bounded_windows(dataset: FeatureDataset) -> None:
    chunk = 24
    trainer = Trainer(_config(chunk), dataset)
    lengths = _record_lengths(trainer.model)
    metrics = trainer.evaluate()
    # Every window, test and validation, holds at most `chunk` snippets, and the windows of each
    # video add up to it: test videos 40, 64, 32, 80, then the validation videos of 40.
    assert lengths and max(lengths) <= chunk
    test_windows = [w.stop - w.start for t in TEST_T for w in windows(t, chunk)]
    assert lengths[:len(test_windows)] == test_windows == [20, 20, 21, 21, 22, 16, 16, 20, 20,
                                                           20, 20]
    assert sum(lengths) == sum(TEST_T) + TRAIN_T * len(trainer.val_ids)
    assert [len(s) for s in trainer.last_scores] == list(TEST_T)
    assert {"auc", "ap", "val_auc", "gate_abnormal"} <= metrics.keys()
    assert all(np.isfinite(s).all() for s in trainer.last_scores)
    # Windows see no context beyond their edges: their scores are not the whole video's.
    whole = Trainer(_config(0), dataset)
    whole.evaluate()
    assert not np.array_equal(trainer.last_scores[-1], whole.last_scores[-1])
    for got, want, t in zip(trainer.last_scores, whole.last_scores, TEST_T, strict=True):
        assert np.array_equal(got, want) == (t <= chunk)


@pytest.mark.parametrize("members_per_call", [None, 2], ids=["cpu-default", "vmapped"])
def test_fused_members_score_in_the_same_windows_as_separate_trials(
        dataset: FeatureDataset, members_per_call: int | None) -> None:
    configs = [_config(24, seed) for seed in (0, 1)]
    fused = FusedTrainer(configs, dataset, members_per_call)
    got = fused.evaluate()
    for member, config in zip(fused.members, configs, strict=True):
        separate = Trainer(config, dataset)
        want = separate.evaluate()
        assert got[member.index].keys() == want.keys()
        for key, value in want.items():  # exact one member per call, one ulp or so vmapped
            tol = 0.0 if members_per_call is None else 1e-5
            assert got[member.index][key] == pytest.approx(value, rel=0.0, abs=tol), key
        for mine, theirs in zip(member.last_scores, separate.last_scores, strict=True):
            assert mine.shape == theirs.shape
            np.testing.assert_allclose(mine, theirs, rtol=0.0,
                                       atol=0.0 if members_per_call is None else 1e-5)


def test_eval_chunk_is_checked() -> None:
    with pytest.raises(ConfigError, match=r"^train\.eval_chunk: .*-1"):
        _config(-1)
    assert _config(0).train.eval_chunk == 0
