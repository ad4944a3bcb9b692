"""The synthetic context–motion benchmark: the embedded default dataset.

A fresh machine has no I3D features, so ``ablate`` ships a deterministic generator whose videos
need what the method claims — looking around. Its generative model:

- **Scenes.** Each video has one context (scene) out of six: roadway, playground, parking_lot,
  corridor, shop, park. A scene is a random vector ``c_k`` (16 latent dims). Per snippet it is
  observed as ``CONTEXT_GAIN · c_k + N(0, 1)``: a signal-to-noise ratio of 0.5 per dim, too weak
  to tell the scene from one snippet but clear after averaging a few dozen (the video's mean).
- **Motions.** A video is a sequence of motion intervals (random lengths of 6–30 snippets). A
  motion j has a static look ``μ_j`` and an oscillation in its own plane (two orthonormal
  directions ``u_j, v_j``); per snippet the 16 motion dims are
  ``MOTION_GAIN · μ_j + MOTION_SWING · (cos θ_t · u_j + sin θ_t · v_j) + N(0, 1)`` with the phase
  θ advancing ``MOTION_STEP`` radians per snippet. So a motion shows in each snippet (an I3D
  snippet is a 16-frame clip) and in the change between consecutive snippets, where the scene
  cancels.
- **Which pairs are abnormal** (the ``RULES`` table): ``walking``, ``standing``, ``sitting``,
  ``talking`` are normal everywhere; ``fighting`` and ``shooting`` are abnormal everywhere
  (context-free anomalies); ``running``, ``climbing`` and ``riding`` are abnormal only in some
  scenes (running on a roadway, not on a playground). Normal videos show context-dependent
  motions in scenes where they are normal about a third of the time, so a detector that ignores
  the scene raises false alarms on them.
- **Abnormal videos** hold one or two abnormal intervals (10–35 % of the video each): 25 % a
  context-free anomaly, 75 % a context-dependent motion in a scene where it is abnormal. Frame
  labels follow the field's convention (16 frames per snippet, 1 inside abnormal intervals).
- **Entanglement.** The scene, motion and 16 nuisance latent dims (a per-video offset plus
  per-snippet noise) are mixed by one fixed random projection into D dims, and each crop adds
  its own noise (std ``CROP_NOISE``) — features look entangled, like real ones.

Consequences, by design: a per-snippet model catches context-free anomalies; a motion-only
relation cannot tell running on a roadway from running on a playground; aggregating the scene
over the video (context, or the context–motion interrelation) is needed for the rest.

Scales: ``small`` (320 train videos of 32–40 snippets, so the 32-segment training view is close
to the raw snippets; 120 test videos of 32–400 snippets; D=256, 2 crops; seconds to generate, a
trial in well under a minute on 2 cores) and ``ucf`` (UCF-Crime's shape: 1,610 train of which the
first 810 abnormal, 290 test of which the first 140 abnormal, D=2048, 10 crops, test videos from
tens to thousands of snippets; several GB, for load and memory benchmarks). The same seed gives
byte-identical stores.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CONTEXTS = ("roadway", "playground", "parking_lot", "corridor", "shop", "park")
NORMAL_MOTIONS = ("walking", "standing", "sitting", "talking")
ALWAYS_ABNORMAL = ("fighting", "shooting")
# Context-dependent motions and the scenes in which each is abnormal.
RULES: dict[str, frozenset[str]] = {
    "running": frozenset({"roadway", "corridor", "shop"}),
    "climbing": frozenset({"parking_lot", "shop", "roadway"}),
    "riding": frozenset({"corridor", "playground", "park"}),
}
MOTIONS = NORMAL_MOTIONS + ALWAYS_ABNORMAL + tuple(RULES)

LATENT_CONTEXT = 16
LATENT_MOTION = 16
LATENT_NUISANCE = 16
CONTEXT_GAIN = 0.5
MOTION_GAIN = 1.0  # the static, per-snippet look of a motion
MOTION_SWING = 2.0  # amplitude of the motion's oscillation (what changes between snippets)
MOTION_STEP = 0.9  # radians the oscillation advances per snippet
NUISANCE_GAIN = 0.5
CROP_NOISE = 0.3
P_CONTEXT_FREE = 0.25
P_DEPENDENT_IN_NORMAL = 0.35
FRAMES_PER_SNIPPET = 16


@dataclass(frozen=True)
class Scale:
    """Sizes of one synthetic benchmark. T is drawn log-normally and clipped."""

    train_abnormal: int
    train_normal: int
    test_abnormal: int
    test_normal: int
    dim: int
    crops: int
    train_t: tuple[float, int, int]  # (median, min, max) snippets
    test_t: tuple[float, int, int]


SCALES: dict[str, Scale] = {
    "small": Scale(160, 160, 60, 60, dim=256, crops=2,
                   train_t=(34, 32, 40), test_t=(96, 32, 400)),
    "ucf": Scale(810, 800, 140, 150, dim=2048, crops=10,
                 train_t=(24, 16, 300), test_t=(100, 16, 3000)),
}


@dataclass(frozen=True)
class Video:
    """One generated video: features [crops, T, D] float32 and its labels."""

    video_id: str
    split: str
    label: int
    class_name: str
    context: str
    motions: np.ndarray  # per-snippet index into MOTIONS
    features: np.ndarray
    frame_labels: np.ndarray


class Generator:
    """Draws videos of one benchmark; all randomness derives from ``seed``."""

    def __init__(self, scale: str = "small", seed: int = 0) -> None:
        if scale not in SCALES:
            raise ValueError(f"unknown scale {scale!r}; allowed: {', '.join(SCALES)}")
        self.scale_name = scale
        self.scale = SCALES[scale]
        self.seed = seed
        rng = np.random.default_rng([seed, 0])
        self.context_vectors = rng.standard_normal((len(CONTEXTS), LATENT_CONTEXT))
        self.motion_vectors = rng.standard_normal((len(MOTIONS), LATENT_MOTION))
        # Each motion oscillates in its own plane (two orthonormal directions).
        planes = rng.standard_normal((len(MOTIONS), LATENT_MOTION, 2))
        self.motion_planes = np.linalg.qr(planes)[0]  # (M, LATENT_MOTION, 2)
        latent = LATENT_CONTEXT + LATENT_MOTION + LATENT_NUISANCE
        # Scaled so each output dim has roughly unit variance.
        self.projection = rng.standard_normal((latent, self.scale.dim)) / np.sqrt(latent)
        self.crop_offsets = 0.1 * rng.standard_normal((self.scale.crops, self.scale.dim))

    def videos(self) -> Iterator[Video]:
        """All videos, train then test, abnormal first within each split (the UCF list order)."""
        s = self.scale
        plan = [("train", 1, s.train_abnormal), ("train", 0, s.train_normal),
                ("test", 1, s.test_abnormal), ("test", 0, s.test_normal)]
        index = 0
        for split, label, count in plan:
            for i in range(count):
                index += 1
                yield self._video(split, label, i, index)

    def _video(self, split: str, label: int, i: int, index: int) -> Video:
        rng = np.random.default_rng([self.seed, 1, index])
        median, lo, hi = self.scale.train_t if split == "train" else self.scale.test_t
        t = int(np.clip(round(median * np.exp(0.6 * rng.standard_normal())), lo, hi))
        context = int(rng.integers(len(CONTEXTS)))
        motions, abnormal = self._motion_track(rng, t, context, label)
        class_name = "normal"
        if label:
            class_name = MOTIONS[int(motions[abnormal.argmax()])]
        features = self._features(rng, context, motions)
        frame_labels = np.repeat(abnormal.astype(np.uint8), FRAMES_PER_SNIPPET)
        kind = "abnormal" if label else "normal"
        return Video(video_id=f"{split}_{kind}_{i:04d}", split=split, label=label,
                     class_name=class_name, context=CONTEXTS[context], motions=motions,
                     features=features,
                     frame_labels=frame_labels)

    def _motion_track(self, rng: np.random.Generator, t: int, context: int,
                      label: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-snippet motion index and abnormality mask for one video."""
        scene = CONTEXTS[context]
        normal_here = [MOTIONS.index(m) for m in NORMAL_MOTIONS]
        dependent_normal = [MOTIONS.index(m) for m, bad in RULES.items() if scene not in bad]
        motions = np.empty(t, dtype=np.int64)
        pos = 0
        while pos < t:
            length = int(rng.integers(6, 31))
            pool = dependent_normal if rng.random() < P_DEPENDENT_IN_NORMAL else normal_here
            motions[pos:pos + length] = pool[int(rng.integers(len(pool)))]
            pos += length
        abnormal = np.zeros(t, dtype=bool)
        if label:
            dependent_abnormal = [MOTIONS.index(m) for m, bad in RULES.items() if scene in bad]
            context_free = [MOTIONS.index(m) for m in ALWAYS_ABNORMAL]
            use_free = rng.random() < P_CONTEXT_FREE or not dependent_abnormal
            pool = context_free if use_free else dependent_abnormal
            motion = pool[int(rng.integers(len(pool)))]
            for _ in range(int(rng.integers(1, 3))):
                length = max(2, int(t * rng.uniform(0.10, 0.35)))
                start = int(rng.integers(0, t - length + 1))
                motions[start:start + length] = motion
                abnormal[start:start + length] = True
        return motions, abnormal

    def _features(self, rng: np.random.Generator, context: int,
                  motions: np.ndarray) -> np.ndarray:
        t = motions.shape[0]
        scene = CONTEXT_GAIN * self.context_vectors[context] + rng.standard_normal(
            (t, LATENT_CONTEXT))
        phase = rng.uniform(0, 2 * np.pi) + MOTION_STEP * np.arange(t)
        swing = np.stack([np.cos(phase), np.sin(phase)], axis=1)  # (T, 2)
        motion = (MOTION_GAIN * self.motion_vectors[motions]
                  + MOTION_SWING * np.einsum("tdk,tk->td", self.motion_planes[motions], swing)
                  + rng.standard_normal((t, LATENT_MOTION)))
        nuisance = NUISANCE_GAIN * (rng.standard_normal(LATENT_NUISANCE)
                                    + rng.standard_normal((t, LATENT_NUISANCE)))
        latent = np.concatenate([scene, motion, nuisance], axis=1)  # (T, L)
        clean = (latent @ self.projection).astype(np.float32)  # (T, D)
        crops = self.scale.crops
        noise = rng.standard_normal((crops, t, self.scale.dim), dtype=np.float32)
        return clean[None] + self.crop_offsets[:, None, :].astype(np.float32) + CROP_NOISE * noise


def generate(out_dir: Path, scale: str = "small", seed: int = 0, overwrite: bool = False,
             progress: bool = False) -> Path:
    """Writes the synthetic benchmark as a feature store at ``out_dir``.

    Args:
        out_dir: Destination directory; must not exist unless ``overwrite``.
        scale: ``small`` or ``ucf`` (see the module docstring).
        seed: Seed of every random draw; the same seed gives identical checksums.
        overwrite: Replace an existing store (only after the new one is complete).
        progress: Show a progress bar on stderr.

    Returns:
        The store directory.
    """
    from ablate.data.store import StoreWriter

    gen = Generator(scale, seed)
    s = gen.scale
    total = s.train_abnormal + s.train_normal + s.test_abnormal + s.test_normal
    source = {"kind": "synthetic", "scale": scale, "seed": seed}
    out_dir = Path(out_dir)
    import click

    show = progress and sys.stderr.isatty()
    with StoreWriter(out_dir, dim=s.dim, crops=s.crops, dtype="float16",
                     name=f"synthetic-{scale}", source=source, overwrite=overwrite) as writer:
        for done, video in enumerate(gen.videos(), start=1):
            writer.add_video(video.video_id, video.split, video.label, video.class_name,
                             video.features,
                             video.frame_labels if video.split == "test" else None)
            if show and (done % 50 == 0 or done == total):
                click.echo(f"\rsynthesising {scale}: {done}/{total} videos", err=True, nl=False)
    if progress:
        click.echo(("\n" if show else "") + f"synthesised {scale} benchmark ({total} videos) "
                   f"at {out_dir}", err=True)
    return out_dir


def default_store(scale: str = "small", seed: int = 0) -> Path:
    """The synthetic store in the user cache, generated on first use.

    ``ABLATE_CACHE`` overrides the cache root (default ``~/.cache/ablate``).
    """
    import os

    root = Path(os.environ.get("ABLATE_CACHE", Path.home() / ".cache" / "ablate"))
    path = root / "synthetic" / f"{scale}-seed{seed}"
    if not (path / "manifest.json").exists():
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.parent / f".{path.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent first uses generate once
            if not (path / "manifest.json").exists():
                generate(path, scale=scale, seed=seed, overwrite=True, progress=True)
    return path
