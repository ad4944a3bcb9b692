"""The validation split that selection uses: deterministic, stratified, disjoint from training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ablate.config import apply_overrides, load_raw_config, resolve_trial_config
from ablate.data import load
from ablate.data.splits import validation_split
from ablate.metrics import evaluate_videos
from ablate.train.trainer import Trainer


def test_split_is_stratified_disjoint_and_deterministic() -> None:
    labels = np.array([1] * 40 + [0] * 60)
    train, val = validation_split(labels, 0.1)
    assert np.intersect1d(train, val).size == 0
    assert sorted(np.concatenate([train, val])) == list(range(100))
    assert (labels[val] == 1).sum() == 4 and (labels[val] == 0).sum() == 6
    again_train, again_val = validation_split(labels, 0.1)
    np.testing.assert_array_equal(val, again_val)
    np.testing.assert_array_equal(train, again_train)


def test_split_keeps_both_classes_on_both_sides_and_can_be_off() -> None:
    labels = np.array([1, 1, 0, 0, 0])
    train, val = validation_split(labels, 0.01)
    assert set(labels[val]) == {0, 1} and set(labels[train]) == {0, 1}
    train, val = validation_split(labels, 0.0)
    assert val.size == 0 and train.size == 5
    with pytest.raises(ValueError, match=r"fraction must be in \[0, 1\), got 1"):
        validation_split(labels, 1)


def test_video_level_metrics() -> None:
    metrics = evaluate_videos([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0], prefix="val_")
    assert metrics == {"val_auc": 1.0, "val_ap": 1.0}
    assert evaluate_videos([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0])["auc"] == 0.0
    with pytest.raises(ValueError, match="2 video labels but 3 video scores"):
        evaluate_videos([0.1, 0.2, 0.3], [1, 0])
    with pytest.raises(ValueError, match="need normal and abnormal videos"):
        evaluate_videos([0.1, 0.2], [1, 1])


def test_trainer_never_trains_on_validation_videos(synthetic_small: Path) -> None:
    config = resolve_trial_config(apply_overrides(load_raw_config("baseline"),
                                                  {"train.epochs": 1}))
    trainer = Trainer(config, load(synthetic_small))
    train_ids = trainer.dataset.video_ids("train")
    trained = {train_ids[i] for i in np.concatenate([trainer.abnormal, trainer.normal])}
    assert trained.isdisjoint(trainer.val_ids)
    assert len(trained) + len(trainer.val_ids) == len(train_ids)
    assert len(trainer.val_ids) == round(0.1 * len(train_ids))
    metrics = next(trainer.epochs()).metrics
    assert {"val_auc", "val_ap", "auc", "ap"} <= set(metrics)  # one epoch is the last: test too


def test_test_is_scored_every_eval_every_epochs_and_at_the_last(synthetic_small: Path) -> None:
    config = resolve_trial_config(apply_overrides(
        load_raw_config("baseline"), {"train.epochs": 3, "train.eval_every": 2}))
    history = [r.metrics for r in Trainer(config, load(synthetic_small)).epochs()]
    assert ["auc" in m for m in history] == [False, True, True]
    assert all("val_auc" in m for m in history)


def test_attention_statistics_cover_the_test_passes_alone(synthetic_small: Path) -> None:
    config = resolve_trial_config(apply_overrides(load_raw_config("full"), {"train.epochs": 1}))
    trainer = Trainer(config, load(synthetic_small))
    trainer.evaluate(test=False)  # validation passes, which must not count
    trainer.drop_attention_stats()
    trainer.score_videos(trainer.test_ids)
    expected = trainer.attention_stats()
    trainer.evaluate(test=False)
    metrics = trainer.evaluate(test=True)
    assert expected and {k: metrics[k] for k in expected} == expected
