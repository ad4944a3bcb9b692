"""Learned oracles of the synthetic benchmark: probes fit on the train split's latent labels."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ablate.data.synth import MOTIONS, Track, Video

# Train snippets used to fit a probe: enough for a 128-d MLP, bounded for speed.
MAX_PROBE_SNIPPETS = 20_000


@dataclass
class Split:
    """One split's crop-averaged features (T, D) per video, latent tracks and video labels."""

    features: list[np.ndarray] = field(default_factory=list)
    tracks: list[Track] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)

    def add(self, video: Video) -> None:
        self.features.append(video.features.mean(axis=0))
        self.tracks.append(video.track)
        self.labels.append(video.label)

    @property
    def lengths(self) -> list[int]:
        return [len(t.motions) for t in self.tracks]

    def per_video(self, values: np.ndarray) -> list[np.ndarray]:
        """Snippet values of the whole split cut back into videos."""
        return np.split(values, np.cumsum(self.lengths)[:-1])


def _subsample(n: int) -> np.ndarray:
    return np.random.default_rng(0).permutation(n)[:MAX_PROBE_SNIPPETS]


def _motion_sets(split: Split) -> np.ndarray:
    """Per snippet: one-hot own motion, then which motions occur in its video: (N, 2M)."""
    rows = []
    for track in split.tracks:
        own = np.eye(len(MOTIONS))[track.motions]
        present = np.zeros(len(MOTIONS))
        present[np.unique(track.motions)] = 1.0
        rows.append(np.concatenate([own, np.repeat(present[None], len(own), axis=0)], axis=1))
    return np.concatenate(rows)


def cooccurrence_scores(train: Split, test: Split) -> list[np.ndarray]:
    """P(abnormal | own motion, set of the video's motions) from a gradient-boosted probe fit on
    the train snippets' latent labels: what motion co-occurrence tells without the scene."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    x, y = _motion_sets(train), np.concatenate([t.abnormal for t in train.tracks])
    keep = _subsample(len(x))
    probe = HistGradientBoostingClassifier(max_iter=200, random_state=0).fit(x[keep], y[keep])
    return test.per_video(probe.predict_proba(_motion_sets(test))[:, 1])


def mlp_probes(train: Split, test: Split) -> tuple[list[np.ndarray], float]:
    """Empirical probes on the features themselves: (per-snippet abnormality scores of every
    test video, accuracy of the motion read from the change between consecutive snippets)."""
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    def fit(x: np.ndarray, y: np.ndarray) -> tuple[StandardScaler, MLPClassifier]:
        keep = _subsample(len(x))
        scaler = StandardScaler().fit(x[keep])
        probe = MLPClassifier(hidden_layer_sizes=(128,), max_iter=60, early_stopping=True,
                              random_state=0).fit(scaler.transform(x[keep]), y[keep])
        return scaler, probe

    scaler, direct = fit(np.concatenate(train.features),
                         np.concatenate([t.abnormal for t in train.tracks]))
    scores = direct.predict_proba(scaler.transform(np.concatenate(test.features)))[:, 1]

    # The oscillation is a quadratic signal in the change, hence an MLP.
    scaler, change = fit(np.concatenate([np.diff(f, axis=0) for f in train.features]),
                         np.concatenate([t.motions[1:] for t in train.tracks]))
    d_test = scaler.transform(np.concatenate([np.diff(f, axis=0) for f in test.features]))
    truth = np.concatenate([t.motions[1:] for t in test.tracks])
    return test.per_video(scores), float((change.predict(d_test) == truth).mean())
