"""Oracles of the synthetic benchmark, computed from the generator's latent truth.

They justify the benchmark by its information structure, not by which model wins on it. Every
detector scores test snippets and is evaluated like a model, by frame-level AUC and AUC_A (the
AUC within abnormal videos, which measures localisation). Bayes detectors read the latent state
recovered from the features (:class:`Bayes`); learned probes are fit on the train split with
*latent* labels, which no weakly-supervised model ever sees, so they bound what a model that sees
the same evidence can reach:

- ``video_label``: every snippet scored with its video's label: video classification, no
  localisation (AUC_A 0.5 by construction).
- ``context_blind``: knows each snippet's true motion, not the scene; P(abnormal | motion).
- ``cooccurrence``: knows every snippet's true motion and which motions occur in the video, not
  the scene: a gradient-boosted probe of P(abnormal | own motion, set of the video's motions).
- ``per_snippet``: the best from one snippet's features: the Bayes posterior over (scene,
  motion), or an MLP probe on the abnormality label, whichever is better (both are reported).
- ``window_3``, ``window_5``, ``window_9``: the scene from a centred window of snippets (the
  window's summed scene evidence), the motion from the snippet: what a local graph can reach.
- ``same_look``: the scene from the video's snippets whose camera look (the camera dims of the
  latent state) is close to the snippet's: what attention over snippets that look alike reaches.
- ``same_camera``: the scene pooled over the snippets of the snippet's camera (latent truth).
- ``whole_video``: the scene pooled over the whole video, as if it had one.
- ``perfect``: knows scene and motion; the rule table itself.

Besides the detectors: scene accuracy from one snippet, a 9-snippet window, the same camera and
the whole video; motion accuracy from one snippet and from the change between consecutive
snippets; and the AUC with which video-level statistics (length, transition rate, feature norm)
separate the labels (0.5 = no leak).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ablate.data import synth
from ablate.data.oracle_probes import Split, cooccurrence_scores, mlp_probes
from ablate.data.synth import FRAMES_PER_SNIPPET, LATENT_CONTEXT, LATENT_MOTION, RULE_TABLE
from ablate.metrics import evaluate

WINDOWS = (3, 5, 9)
CAMERA_DIMS = slice(LATENT_CONTEXT + LATENT_MOTION + synth.LATENT_NUISANCE, None)
SAME_LOOK = 0.7  # cosine of two snippets' camera dims above which they count as alike

DETECTORS = ("video_label", "context_blind", "cooccurrence", "per_snippet_bayes",
             "per_snippet_mlp", *(f"window_{w}" for w in WINDOWS), "same_look", "same_camera",
             "whole_video", "perfect")


@dataclass(frozen=True)
class OracleReport:
    """What the oracles measured on one benchmark draw: each detector's frame-level test
    ``auc`` and ``auc_abnormal`` (AUC_A), scene and motion accuracies, label-leak AUCs."""

    scale: str
    seed: int
    auc: dict[str, float]
    auc_abnormal: dict[str, float]
    scene_acc: dict[str, float]
    motion_acc_snippet: float
    motion_acc_change: float
    leak_auc: dict[str, float]

    @property
    def per_snippet_auc_abnormal(self) -> float:
        """The best per-snippet detector's AUC_A (Bayes or MLP probe)."""
        return max(self.auc_abnormal["per_snippet_bayes"],
                   np.nan_to_num(self.auc_abnormal["per_snippet_mlp"]))

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _draw(gen: synth.Generator) -> dict[str, Split]:
    splits = {name: Split() for name in ("train", "test")}
    for video in gen.videos():
        splits[video.split].add(video)
    return splits


def _video_auc(values: list[float], labels: list[int]) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, values))


class Bayes:
    """Exact per-snippet log-likelihoods of scene and motion under the generative model.

    The generator's projection is injective (D > latent dims), so the latent snippet state is
    recovered from the crop-averaged features by least squares; scene and motion likelihoods are
    then closed-form (the motion's oscillation phase is integrated out: a Bessel term).
    """

    def __init__(self, gen: synth.Generator) -> None:
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
        resid = zm[:, None, :] - synth.MOTION_GAIN * self.gen.motion_vectors[None]  # (T, J, M)
        in_plane = np.linalg.norm(np.einsum("tjd,jdk->tjk", resid, self.gen.motion_planes),
                                  axis=-1)  # (T, J)
        bessel = np.log(i0e(synth.MOTION_SWING * in_plane)) + synth.MOTION_SWING * in_plane
        return -0.5 * (resid ** 2).sum(axis=-1) + bessel


def _softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def _window_sums(values: np.ndarray, window: int) -> np.ndarray:
    """Sum over a centred window of ``window`` snippets, clipped at the video's edges."""
    padded = np.concatenate([np.zeros((1, values.shape[1])), np.cumsum(values, axis=0)])
    t = len(values)
    low = np.clip(np.arange(t) - window // 2, 0, t)
    high = np.clip(np.arange(t) + window // 2 + 1, 0, t)
    return padded[high] - padded[low]


class _Posterior:
    """Scores of one video's snippets given per-snippet scene evidence, with the motion read
    from each snippet alone (the joint prior of scene and motion from the train split)."""

    def __init__(self, ll_scene: np.ndarray, ll_motion: np.ndarray, prior: np.ndarray) -> None:
        self.ll_scene = ll_scene
        self.log_scene_prior = np.log(prior.sum(axis=1))  # (S,)
        self.motion_post = _softmax(ll_motion[:, None, :] + np.log(prior)[None])  # (T, S, J)
        self.rule = RULE_TABLE.astype(float)

    def score(self, evidence: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(scores, scene guesses) from scene evidence (T, S): summed log-likelihoods."""
        scene_post = _softmax(evidence + self.log_scene_prior)  # (T, S)
        scores = np.einsum("ts,tsj,sj->t", scene_post, self.motion_post, self.rule)
        return scores, scene_post.argmax(axis=1)


def _pooled_by(groups: np.ndarray, ll_scene: np.ndarray) -> np.ndarray:
    """Each snippet's scene evidence summed over the snippets of its group: (T, S)."""
    sums = np.zeros((groups.max() + 1, ll_scene.shape[1]))
    np.add.at(sums, groups, ll_scene)
    return sums[groups]


def _same_look(z: np.ndarray, ll_scene: np.ndarray) -> np.ndarray:
    """Each snippet's scene evidence summed over the snippets whose camera dims are alike (all
    of the video's where the generator has no camera dims: one camera, one look)."""
    look = z[:, CAMERA_DIMS]
    if look.shape[1] == 0:
        return np.repeat(ll_scene.sum(axis=0, keepdims=True), len(z), axis=0)
    look = look / np.linalg.norm(look, axis=1, keepdims=True)
    return (look @ look.T > SAME_LOOK).astype(float) @ ll_scene


def _video_scores(bayes: Bayes, feats: np.ndarray, track: synth.Track,
                  prior: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Every Bayes detector's scores of one test video, and its scene guesses."""
    z = bayes.latent(feats)
    ll_scene, ll_motion = bayes.scene(z), bayes.motion(z)
    rule = RULE_TABLE.astype(float)
    joint = _softmax((ll_scene[:, :, None] + ll_motion[:, None, :] + np.log(prior)[None])
                     .reshape(len(z), -1)).reshape(len(z), *rule.shape)
    post = _Posterior(ll_scene, ll_motion, prior)
    evidence = {"single": ll_scene, **{f"window_{w}": _window_sums(ll_scene, w) for w in WINDOWS},
                "same_look": _same_look(z, ll_scene),
                "same_camera": _pooled_by(track.cameras, ll_scene),
                "whole_video": np.repeat(ll_scene.sum(axis=0, keepdims=True), len(z), axis=0)}
    scores, guesses = {"per_snippet_bayes": (joint * rule).sum(axis=(1, 2))}, {}
    for name, ev in evidence.items():
        s, guesses[name] = post.score(ev)
        if name != "single":
            scores[name] = s
    guesses["motion"] = ll_motion.argmax(axis=1)
    return scores, guesses


def measure(scale: str = "small", seed: int = 0, mlp: bool = True) -> OracleReport:
    """Draws the benchmark and computes every oracle (about a minute at ``small``).

    Args:
        scale: Benchmark scale (``small``; ``ucf`` works but takes long).
        seed: Benchmark seed.
        mlp: Also fit the MLP probes (direct abnormality from one snippet, motion from the
            change between snippets); the slowest part.
    """
    gen = synth.Generator(scale, seed)
    splits = _draw(gen)
    train, test = splits["train"], splits["test"]
    bayes = Bayes(gen)
    rule = RULE_TABLE.astype(float)

    # The snippet-level prior P(scene, motion) and P(abnormal | motion), from the train split.
    joint = np.zeros_like(rule)
    np.add.at(joint, (np.concatenate([t.contexts for t in train.tracks]),
                      np.concatenate([t.motions for t in train.tracks])), 1.0)
    prior = (joint + 1e-3) / (joint + 1e-3).sum()
    p_abnormal_given_motion = (joint * rule).sum(axis=0) / np.maximum(joint.sum(axis=0), 1)

    scores: dict[str, list[np.ndarray]] = {name: [] for name in DETECTORS}
    hits: dict[str, list[np.ndarray]] = {}
    for feats, track, label in zip(test.features, test.tracks, test.labels, strict=True):
        by_detector, guesses = _video_scores(bayes, feats, track, prior)
        for name, s in by_detector.items():
            scores[name].append(s)
        scores["video_label"].append(np.full(len(feats), float(label)))
        scores["context_blind"].append(p_abnormal_given_motion[track.motions])
        scores["perfect"].append(rule[track.contexts, track.motions])
        for name, guess in guesses.items():
            truth = track.motions if name == "motion" else track.contexts
            hits.setdefault(name, []).append(guess == truth)
    scores["cooccurrence"] = cooccurrence_scores(train, test)
    motion_acc_change = float("nan")
    if mlp:
        scores["per_snippet_mlp"], motion_acc_change = mlp_probes(train, test)
    else:
        del scores["per_snippet_mlp"]

    gt = np.repeat(np.concatenate([t.abnormal for t in test.tracks]).astype(np.uint8),
                   FRAMES_PER_SNIPPET)
    metrics = {name: evaluate(s, gt, FRAMES_PER_SNIPPET) for name, s in scores.items()}
    nan = float("nan")
    return OracleReport(
        scale=scale, seed=seed,
        auc={n: metrics[n]["auc"] if n in metrics else nan for n in DETECTORS},
        auc_abnormal={n: metrics[n]["auc_abnormal"] if n in metrics else nan for n in DETECTORS},
        scene_acc={name: float(np.concatenate(hits[name]).mean())
                   for name in ("single", "window_9", "same_look", "same_camera", "whole_video")},
        motion_acc_snippet=float(np.concatenate(hits["motion"]).mean()),
        motion_acc_change=motion_acc_change,
        leak_auc=_leaks(train, test),
    )


def _leaks(train: Split, test: Split) -> dict[str, float]:
    """How well video-level statistics separate the labels (0.5: not at all)."""
    leak: dict[str, float] = {}
    for name, split in (("train", train), ("test", test)):
        lengths = [len(t.motions) for t in split.tracks]
        transitions = [int((np.diff(t.motions) != 0).sum()) for t in split.tracks]
        leak[f"{name}_length"] = _video_auc(lengths, split.labels)
        leak[f"{name}_transition_rate"] = _video_auc(
            [n / t for n, t in zip(transitions, lengths, strict=True)], split.labels)
        leak[f"{name}_feature_norm"] = _video_auc(
            [float(np.linalg.norm(f, axis=1).mean()) for f in split.features], split.labels)
        leak[f"{name}_feature_std"] = _video_auc(
            [float(f.std()) for f in split.features], split.labels)
    return leak
