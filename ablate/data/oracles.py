"""Oracles of the synthetic benchmark, computed from the generator's latent truth.

They justify the benchmark by its information structure, not by which model wins on it. Every
detector here scores test snippets and is evaluated like a model (frame-level AUC, the field's
convention); the probes are trained on the train split's single snippets with *latent* snippet
labels (scene, motion, abnormality), which no weakly-supervised model ever sees, so they bound
what any per-snippet model can reach:

- ``context_blind``: knows each snippet's true motion, not the scene; scores P(abnormal | motion).
- ``per_snippet``: the best detector from one snippet's features: linear probes for scene and
  motion combined through the rule table, or a direct MLP probe on the abnormality label,
  whichever is better.
- ``pooled``: the scene read from the whole video (the per-snippet scene evidence summed over its
  snippets) combined with the per-snippet motion probe: what looking around can add.
- ``perfect``: knows scene and motion; the rule table itself.

Besides the detectors: scene accuracy from one snippet and from the pooled video, motion accuracy
from one snippet and from the change between consecutive snippets, and the AUC with which
video-level statistics (length, transition rate, feature norm) separate the labels (0.5 = no
leak).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ablate.data import synth
from ablate.data.synth import (
    FRAMES_PER_SNIPPET,
    LATENT_CONTEXT,
    LATENT_MOTION,
    RULE_TABLE,
    Generator,
)
from ablate.metrics import evaluate

# Train snippets used to fit the probes: enough for a 256-d linear probe, bounded for speed.
MAX_PROBE_SNIPPETS = 20_000


@dataclass(frozen=True)
class OracleReport:
    """What the oracles measured on one benchmark draw (AUCs are frame-level, on test)."""

    scale: str
    seed: int
    context_blind_auc: float
    per_snippet_auc: float
    per_snippet_bayes_auc: float
    per_snippet_mlp_auc: float
    pooled_auc: float
    perfect_auc: float
    scene_acc_snippet: float
    scene_acc_pooled: float
    motion_acc_snippet: float
    motion_acc_change: float
    leak_auc: dict[str, float]

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class _Split:
    features: list[np.ndarray]  # per video, (T, D) crop-averaged
    contexts: list[int]
    motions: list[np.ndarray]
    abnormal: list[np.ndarray]
    labels: list[int]
    lengths: list[int]
    transitions: list[int]


def _draw(gen: Generator) -> dict[str, _Split]:
    splits = {name: _Split([], [], [], [], [], [], []) for name in ("train", "test")}
    for video in gen.videos():
        s = splits[video.split]
        s.features.append(video.features.mean(axis=0))  # (T, D), the crop average
        s.contexts.append(video.track.context)
        s.motions.append(video.track.motions)
        s.abnormal.append(video.track.abnormal)
        s.labels.append(video.label)
        s.lengths.append(len(video.track.motions))
        s.transitions.append(int((np.diff(video.track.motions) != 0).sum()))
    return splits


def _frame_auc(scores: list[np.ndarray], abnormal: list[np.ndarray]) -> float:
    gt = np.repeat(np.concatenate(abnormal).astype(np.uint8), FRAMES_PER_SNIPPET)
    return float(evaluate(scores, gt, FRAMES_PER_SNIPPET)["auc"])


def _split_by_video(values: np.ndarray, lengths: list[int]) -> list[np.ndarray]:
    return np.split(values, np.cumsum(lengths)[:-1])


def _video_auc(values: list[float], labels: list[int]) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, values))


class _Bayes:
    """Exact per-snippet log-likelihoods of scene and motion under the generative model.

    The generator's projection is injective (D > latent dims), so the latent snippet state is
    recovered from the crop-averaged features by least squares; scene and motion likelihoods are
    then closed-form (the motion's oscillation phase is integrated out: a Bessel term).
    """

    def __init__(self, gen: Generator) -> None:
        self.gen = gen
        self.unmix = np.linalg.pinv(gen.projection)  # (D, L)
        self.offset = gen.crop_offsets.mean(axis=0)  # (D,)

    def latent(self, features: np.ndarray) -> np.ndarray:
        return (features - self.offset) @ self.unmix  # (T, L)

    def scene(self, z: np.ndarray) -> np.ndarray:
        """log p(snippet | scene k) up to a per-snippet constant: (T, scenes)."""
        return synth.CONTEXT_GAIN * z[:, :LATENT_CONTEXT] @ self.gen.context_vectors.T

    def motion(self, z: np.ndarray) -> np.ndarray:
        """log p(snippet | motion j) up to a per-snippet constant: (T, motions)."""
        from scipy.special import i0e

        zm = z[:, LATENT_CONTEXT:LATENT_CONTEXT + LATENT_MOTION]  # (T, M_dims)
        resid = zm[:, None, :] - synth.MOTION_GAIN * self.gen.motion_vectors[None]  # (T, J, M_dims)
        in_plane = np.linalg.norm(np.einsum("tjd,jdk->tjk", resid, self.gen.motion_planes),
                                  axis=-1)  # (T, J)
        bessel = np.log(i0e(synth.MOTION_SWING * in_plane)) + synth.MOTION_SWING * in_plane
        return -0.5 * (resid ** 2).sum(axis=-1) + bessel


def _softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def measure(scale: str = "small", seed: int = 0, mlp: bool = True) -> OracleReport:
    """Draws the benchmark and computes every oracle (seconds at ``small``).

    Args:
        scale: Benchmark scale (``small``; ``ucf`` works but takes long).
        seed: Benchmark seed.
        mlp: Also fit the MLP probes (direct abnormality from one snippet, motion from the
            change between snippets); the slowest part.
    """
    gen = Generator(scale, seed)
    splits = _draw(gen)
    train, test = splits["train"], splits["test"]
    bayes = _Bayes(gen)
    rule = RULE_TABLE.astype(float)  # (scenes, motions)

    # The snippet-level prior P(scene, motion) and P(abnormal | motion), from the train split.
    scene_train = np.repeat(train.contexts, train.lengths)
    motion_train = np.concatenate(train.motions)
    joint = np.zeros_like(rule)
    np.add.at(joint, (scene_train, motion_train), 1.0)
    prior = (joint + 1e-3) / (joint + 1e-3).sum()
    p_abnormal_given_motion = (joint * rule).sum(axis=0) / np.maximum(joint.sum(axis=0), 1)

    context_blind = _frame_auc([p_abnormal_given_motion[m] for m in test.motions], test.abnormal)
    perfect = _frame_auc([rule[c, m] for c, m in zip(test.contexts, test.motions, strict=True)],
                         test.abnormal)

    per_snippet, pooled, scene_hits, motion_hits, pooled_hits = [], [], [], [], []
    for feats, context, motions in zip(test.features, test.contexts, test.motions, strict=True):
        z = bayes.latent(feats)
        ll_scene, ll_motion = bayes.scene(z), bayes.motion(z)  # (T, S), (T, J)
        # Bayes-optimal from one snippet: the joint posterior over (scene, motion).
        post = _softmax((ll_scene[:, :, None] + ll_motion[:, None, :]
                         + np.log(prior)[None]).reshape(len(z), -1)).reshape(len(z), *rule.shape)
        per_snippet.append((post * rule).sum(axis=(1, 2)))
        # Looking around: the scene from all the video's snippets, the motion from this one.
        scene_post = _softmax(ll_scene.sum(axis=0) + np.log(prior.sum(axis=1)))  # (S,)
        motion_post = _softmax(ll_motion[:, None, :] + np.log(prior)[None])  # (T, S, J)
        pooled.append(np.einsum("s,tsj,sj->t", scene_post, motion_post, rule))
        scene_hits.append(ll_scene.argmax(axis=1) == context)
        motion_hits.append(ll_motion.argmax(axis=1) == motions)
        pooled_hits.append(scene_post.argmax() == context)

    per_snippet_mlp = motion_acc_change = float("nan")
    if mlp:
        per_snippet_mlp, motion_acc_change = _mlp_probes(train, test)

    leak: dict[str, float] = {}
    for name, split in (("train", train), ("test", test)):
        leak[f"{name}_length"] = _video_auc(split.lengths, split.labels)
        leak[f"{name}_transition_rate"] = _video_auc(
            [n / t for n, t in zip(split.transitions, split.lengths, strict=True)], split.labels)
        leak[f"{name}_feature_norm"] = _video_auc(
            [float(np.linalg.norm(f, axis=1).mean()) for f in split.features], split.labels)
        leak[f"{name}_feature_std"] = _video_auc(
            [float(f.std()) for f in split.features], split.labels)

    bayes_auc = _frame_auc(per_snippet, test.abnormal)
    return OracleReport(
        scale=scale, seed=seed,
        context_blind_auc=context_blind,
        per_snippet_auc=max(bayes_auc, np.nan_to_num(per_snippet_mlp)),
        per_snippet_bayes_auc=bayes_auc,
        per_snippet_mlp_auc=per_snippet_mlp,
        pooled_auc=_frame_auc(pooled, test.abnormal),
        perfect_auc=perfect,
        scene_acc_snippet=float(np.concatenate(scene_hits).mean()),
        scene_acc_pooled=float(np.mean(pooled_hits)),
        motion_acc_snippet=float(np.concatenate(motion_hits).mean()),
        motion_acc_change=motion_acc_change,
        leak_auc=leak,
    )


def _mlp_probes(train: _Split, test: _Split) -> tuple[float, float]:
    """Empirical probes on the features themselves: (per-snippet abnormality AUC, accuracy of the
    motion read from the change between consecutive snippets)."""
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)

    def fit(x: np.ndarray, y: np.ndarray) -> tuple[StandardScaler, MLPClassifier]:
        keep = rng.permutation(len(x))[:MAX_PROBE_SNIPPETS]
        scaler = StandardScaler().fit(x[keep])
        probe = MLPClassifier(hidden_layer_sizes=(128,), max_iter=60, early_stopping=True,
                              random_state=0).fit(scaler.transform(x[keep]), y[keep])
        return scaler, probe

    scaler, direct = fit(np.concatenate(train.features), np.concatenate(train.abnormal))
    scores = direct.predict_proba(scaler.transform(np.concatenate(test.features)))[:, 1]
    direct_auc = _frame_auc(_split_by_video(scores, test.lengths), test.abnormal)

    # The oscillation is a quadratic signal in the change, hence an MLP.
    scaler, change = fit(np.concatenate([np.diff(f, axis=0) for f in train.features]),
                         np.concatenate([m[1:] for m in train.motions]))
    d_test = scaler.transform(np.concatenate([np.diff(f, axis=0) for f in test.features]))
    truth = np.concatenate([m[1:] for m in test.motions])
    return direct_auc, float((change.predict(d_test) == truth).mean())
