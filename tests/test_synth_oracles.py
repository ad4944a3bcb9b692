"""The synthetic benchmark's information structure, proven from the generator's latent truth.

These properties justify the benchmark; which model variant wins on it is not among them.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ablate.data.oracles import measure
from ablate.data.synth import CONTEXTS, MOTIONS, RULE_TABLE, Generator


@pytest.fixture(scope="module")
def oracles():
    return measure("small", seed=0)


def test_knowing_scene_and_motion_is_perfect(oracles) -> None:
    assert oracles.auc["perfect"] == oracles.auc_abnormal["perfect"] == 1.0


def test_the_video_label_wins_pooled_auc_and_locates_nothing(oracles) -> None:
    """Why tables report AUC_A: a detector that only classifies videos scores a pooled AUC close
    to a trained model's, and exactly 0.5 within abnormal videos."""
    assert oracles.auc["video_label"] >= 0.75
    assert oracles.auc_abnormal["video_label"] == 0.5


def test_wider_windows_see_more_of_the_scene(oracles) -> None:
    a = oracles.auc_abnormal
    assert (a["per_snippet_bayes"] + 0.02 < a["window_3"] < a["window_5"] < a["window_9"]
            < a["whole_video"])
    assert oracles.scene_acc["single"] <= 0.5
    # On this benchmark a 9-snippet window already tells the scene most of the time, and the
    # whole video almost surely: local windows and looking around are hard to tell apart.
    assert oracles.scene_acc["window_9"] >= 0.8
    assert oracles.scene_acc["whole_video"] >= 0.98


def test_the_set_of_motions_in_a_video_reveals_its_scene(oracles) -> None:
    """A confound of this benchmark, kept visible: normal segments show the motions that are
    normal in the video's scene, so which motions occur tells the scene without seeing it."""
    assert oracles.auc_abnormal["cooccurrence"] >= oracles.auc_abnormal["context_blind"] + 0.03


def test_the_best_per_snippet_detector_stays_below_looking_around(oracles) -> None:
    assert oracles.per_snippet_auc_abnormal <= oracles.auc_abnormal["context_blind"] + 0.06
    assert oracles.auc_abnormal["whole_video"] >= oracles.per_snippet_auc_abnormal + 0.08
    assert oracles.auc_abnormal["context_blind"] <= 0.9  # context-dependent anomalies matter


def test_motion_shows_in_a_snippet_and_in_the_change_between_snippets(oracles) -> None:
    chance = 1 / len(MOTIONS)
    assert oracles.motion_acc_snippet >= 0.8
    assert oracles.motion_acc_change >= 2 * chance


def _track_statistics(split: str, seeds: tuple[int, ...]) -> dict[str, list[float]]:
    stats: dict[str, list[float]] = {"label": [], "length": [], "transition_rate": [],
                                     "mean_segment": []}
    for seed in seeds:
        for video_split, label, track in Generator("small", seed).tracks():
            if video_split != split:
                continue
            t = len(track.motions)
            stats["label"].append(label)
            stats["length"].append(t)
            stats["transition_rate"].append(float((np.diff(track.motions) != 0).sum()) / t)
            stats["mean_segment"].append(t / (len(track.segments) - 1))
    return stats


@pytest.mark.parametrize("split, tolerance", [("train", 0.04), ("test", 0.1)])
def test_video_level_statistics_cannot_tell_the_labels_apart(split: str,
                                                            tolerance: float) -> None:
    stats = _track_statistics(split, seeds=(0, 1, 2))
    for name in ("length", "transition_rate", "mean_segment"):
        auc = roc_auc_score(stats["label"], stats[name])
        assert abs(auc - 0.5) < tolerance, (split, name, auc)


def test_feature_statistics_cannot_tell_the_labels_apart() -> None:
    labels, norms, stds = [], [], []
    for video in Generator("small", seed=0).videos():
        if video.split == "train":
            labels.append(video.label)
            norms.append(float(np.linalg.norm(video.features, axis=-1).mean()))
            stds.append(float(video.features.std()))
    for name, values in (("norm", norms), ("std", stds)):
        auc = roc_auc_score(labels, values)
        assert abs(auc - 0.5) < 0.05, (name, auc)


def test_abnormal_intervals_replace_whole_segments_and_follow_the_rules() -> None:
    for _, label, track in Generator("small", seed=0).tracks():
        truth = RULE_TABLE[track.context, track.motions]
        np.testing.assert_array_equal(track.abnormal, truth)
        assert track.abnormal.any() == bool(label)
        for start, end in zip(track.segments[:-1], track.segments[1:], strict=True):
            assert len(set(track.motions[start:end])) == 1  # one motion per segment
            assert len(set(track.abnormal[start:end])) == 1  # abnormal as a whole segment
        boundaries = np.diff(track.motions) != 0
        assert boundaries.sum() == len(track.segments) - 2  # consecutive segments differ


def test_every_scene_has_a_motion_that_is_normal_there_and_abnormal_elsewhere() -> None:
    dependent = [MOTIONS.index(m) for m in ("running", "climbing", "riding")]
    for k, scene in enumerate(CONTEXTS):
        normal_here = [j for j in dependent if not RULE_TABLE[k, j]]
        assert normal_here, scene
        assert all(RULE_TABLE[:, j].any() for j in normal_here), scene
