"""The synthetic benchmark's information structure, proven from the generator's latent truth.

These properties justify the benchmark; which model variant wins on it is not among them.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from ablate.data.oracles import measure
from ablate.data.synth import CONTEXTS, MOTIONS, RULE_TABLE, Generator
from ablate.data.tracks import DEPENDENT


@pytest.fixture(scope="module")
def oracles():
    return measure("small", seed=0)


def test_knowing_scene_and_motion_is_perfect(oracles) -> None:
    assert oracles.auc["perfect"] == oracles.auc_abnormal["perfect"] == 1.0


def test_the_video_label_wins_pooled_auc_and_locates_nothing(oracles) -> None:
    """Why tables report AUC_A: a detector that only classifies videos scores a high pooled AUC
    and exactly 0.5 within abnormal videos."""
    assert oracles.auc["video_label"] >= 0.7
    assert oracles.auc_abnormal["video_label"] == 0.5


def test_the_scene_is_read_from_the_snippets_of_the_same_camera(oracles) -> None:
    acc = oracles.scene_acc
    assert acc["single"] <= 0.55
    assert acc["single"] + 0.2 <= acc["window_9"] <= 0.9
    assert acc["same_camera"] >= 0.98
    assert acc["same_look"] >= 0.97  # a camera's snippets are found by their likeness
    assert acc["whole_video"] <= 0.7  # pooling every snippet mixes the cameras' scenes


def test_auc_a_grows_from_one_snippet_to_a_window_to_the_relational_view(oracles) -> None:
    a = oracles.auc_abnormal
    assert a["per_snippet_bayes"] + 0.02 <= a["window_3"] < a["window_5"] < a["window_9"]
    assert a["window_9"] + 0.03 <= a["same_camera"]
    assert a["same_look"] >= a["same_camera"] - 0.01  # relational ≈ pooled truth
    assert a["same_camera"] >= 0.97
    assert a["whole_video"] + 0.05 <= a["per_snippet_bayes"]


def test_the_set_of_motions_in_a_video_says_nothing_about_its_scenes(oracles) -> None:
    """Motions are drawn without the scene, so knowing which occur adds nothing to knowing a
    snippet's own motion."""
    assert abs(oracles.auc_abnormal["cooccurrence"] - oracles.auc_abnormal["context_blind"]) \
        <= 0.02


def test_the_best_per_snippet_detector_stays_near_the_context_blind_oracle(oracles) -> None:
    a = oracles.auc_abnormal
    assert oracles.per_snippet_auc_abnormal <= a["context_blind"] + 0.04
    assert a["same_camera"] >= oracles.per_snippet_auc_abnormal + 0.08
    assert a["context_blind"] <= 0.9  # context-dependent anomalies are a real share


def test_motion_shows_in_a_snippet_and_in_the_change_between_snippets(oracles) -> None:
    chance = 1 / len(MOTIONS)
    assert oracles.motion_acc_snippet >= 0.8
    assert oracles.motion_acc_change >= 2 * chance


def _track_statistics(split: str, seeds: tuple[int, ...]) -> dict[str, list[float]]:
    stats: dict[str, list[float]] = {"label": [], "length": [], "transition_rate": [],
                                     "mean_segment": [], "cut_rate": [], "cameras": []}
    for seed in seeds:
        for video_split, label, track in Generator("small", seed).tracks():
            if video_split != split:
                continue
            t = len(track.motions)
            stats["label"].append(label)
            stats["length"].append(t)
            stats["transition_rate"].append(float((np.diff(track.motions) != 0).sum()) / t)
            stats["mean_segment"].append(t / (len(track.segments) - 1))
            stats["cut_rate"].append(track.cuts / t)
            stats["cameras"].append(len(track.scenes))
    return stats


@pytest.mark.parametrize("split, tolerance", [("train", 0.04), ("test", 0.1)])
def test_video_level_statistics_cannot_tell_the_labels_apart(split: str,
                                                            tolerance: float) -> None:
    stats = _track_statistics(split, seeds=(0, 1, 2))
    for name in ("length", "transition_rate", "mean_segment", "cut_rate", "cameras"):
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


def test_anomalies_are_a_minority_of_an_abnormal_video() -> None:
    shares: dict[str, list[float]] = {"train": [], "test": []}
    for split, label, track in Generator("small", seed=0).tracks():
        if label:
            shares[split].append(float(track.abnormal.mean()))
    assert 0.1 <= np.mean(shares["train"]) <= 0.3
    assert 0.05 <= np.mean(shares["test"]) <= 0.2


def test_abnormal_intervals_replace_whole_segments_and_follow_the_rules() -> None:
    for _, label, track in Generator("small", seed=0).tracks():
        truth = RULE_TABLE[track.contexts, track.motions]
        np.testing.assert_array_equal(track.abnormal, truth)
        assert track.abnormal.any() == bool(label)
        for start, end in zip(track.segments[:-1], track.segments[1:], strict=True):
            assert len(set(track.motions[start:end])) == 1  # one motion per segment
            assert len(set(track.abnormal[start:end])) == 1  # abnormal as a whole segment
            assert len(set(track.cameras[start:end])) == 1  # cuts fall between segments
        boundaries = np.diff(track.motions) != 0
        assert boundaries.sum() == len(track.segments) - 2  # consecutive segments differ


def test_almost_every_abnormal_video_has_a_context_dependent_anomaly() -> None:
    """All but the rare video where every segment's neighbours already show the motions
    abnormal in its camera (the anomaly is then context-free)."""
    has = [np.isin(track.motions[track.abnormal], DEPENDENT).any()
           for _, label, track in Generator("small", seed=0).tracks() if label]
    assert np.mean(has) >= 0.99


def test_videos_cut_between_cameras_of_different_scenes() -> None:
    counts = []
    for _, _, track in Generator("small", seed=0).tracks():
        counts.append(len(track.scenes))
        assert len(set(track.scenes.tolist())) == len(track.scenes)
        assert set(track.cameras.tolist()) == set(range(len(track.scenes)))
        assert track.cuts >= len(track.scenes) - 1
    # A camera that no segment needed drops out: rarely, a short video keeps only one.
    assert set(counts) <= {1, 2, 3} and np.mean(np.isin(counts, (2, 3))) >= 0.99


def test_every_scene_has_a_motion_that_is_normal_there_and_abnormal_elsewhere() -> None:
    for k, scene in enumerate(CONTEXTS):
        normal_here = [j for j in DEPENDENT if not RULE_TABLE[k, j]]
        abnormal_here = [j for j in DEPENDENT if RULE_TABLE[k, j]]
        assert normal_here and abnormal_here, scene
        assert all(RULE_TABLE[:, j].any() for j in normal_here), scene
