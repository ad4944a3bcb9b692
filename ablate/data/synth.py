"""The synthetic context–motion benchmark (version 2): the embedded default dataset.

A fresh machine has no I3D features, so ``ablate`` ships a deterministic generator whose videos
need what the method claims: looking around. The design is justified by its information
structure, which :mod:`ablate.data.oracles` measures from the generator's latent truth (and
``tests/test_synth_oracles.py`` asserts), never by which model variant wins on it.

The generative model, per video:

- **Scene (context).** One of six scenes (roadway, playground, parking_lot, corridor, shop, park)
  for the whole video. Scene k is a direction ``c_k`` in 16 latent dims; the six are orthogonal
  with equal norms, so no pair of scenes is easier to confuse than another. Per snippet the scene
  dims are ``CONTEXT_GAIN · c_k + N(0, I)``: a single snippet tells the scene only faintly (a
  linear probe on one snippet is right about a third of the time, chance 1/6), while the mean of a
  video's 32 or more snippets identifies it almost surely.
- **Motion.** A video is a sequence of motion segments of 6–30 snippets; consecutive segments
  always differ. Motion j has a static look ``μ_j`` (the nine looks orthogonal, equal norms) and
  an oscillation in its own plane (orthonormal ``u_j, v_j``) whose phase advances ``MOTION_STEP``
  radians per snippet. The motion dims of a snippet are
  ``MOTION_GAIN · μ_j + MOTION_SWING · (cos θ_t · u_j + sin θ_t · v_j) + N(0, I)``: a snippet (an
  I3D snippet spans 16 frames) shows its motion, and so does the change between consecutive
  snippets, in which the scene and the per-video nuisance cancel exactly.
- **Which pairs are abnormal** (the ``RULES`` table): ``walking``, ``standing``, ``sitting``,
  ``talking`` are normal everywhere; ``fighting`` and ``shooting`` are abnormal everywhere
  (context-free anomalies); ``running``, ``climbing`` and ``riding`` are abnormal only in some
  scenes (running on a roadway, not on a playground). A snippet is abnormal exactly when its
  (scene, motion) pair is, so a detector that knows both is perfect.
- **Normal and abnormal videos share one track model.** Every video's segments are drawn the same
  way: each segment shows, with probability ``P_DEPENDENT``, a context-dependent motion that is
  normal in the video's scene (people run on playgrounds), else a motion normal everywhere. An
  abnormal video then *replaces* the motion of one or two non-adjacent whole segments with its
  abnormal motion: 25 % a context-free one, 75 % a context-dependent motion in a scene where it is
  abnormal. Lengths, segment lengths and transition rates therefore have the same distribution
  in both classes (tested), and no label leaks through them.
- **Nuisance and entanglement.** 16 nuisance latent dims (a per-video offset plus per-snippet
  noise) join scene and motion; one fixed random projection mixes the 48 latent dims into D dims,
  and each crop adds its own offset and noise (std ``CROP_NOISE``): features look entangled,
  like real ones. Frame labels follow the field's convention (16 frames per snippet).

What each relation type of CoMo can see, as the oracles measure it (``python
benchmarks/bench_oracles.py``, seeds 0, 1, 2; AUC_A is the frame AUC within abnormal videos):

- a single snippet (any model, through its embedding): the motion (clearly: 87-89 % accuracy)
  and the scene (faintly: 38 %, chance 17 %); the Bayes-optimal detector from one snippet reaches
  AUC_A 0.88-0.89;
- ``temporal``: neighbouring snippets, which share the scene and usually the motion. A window
  already tells much of the scene: 84 % scene accuracy from 9 snippets, AUC_A 0.91-0.93 from 3
  snippets and 0.96-0.97 from 9, close to the whole video's 0.99: on this benchmark a local
  window and looking around are hard to tell apart;
- ``context``: the snippets whose appearance is alike. The scene is constant within a video, so
  every snippet is alike and uniform attention is optimal: there is nothing to select;
- ``motion``: the change between snippets, which carries the motion and cancels the scene. It
  does not cancel what the motions say of the scene: normal segments show the motions that are
  normal in the video's scene, so knowing only which motions occur in a video reaches AUC_A
  0.90-0.94 against the context-blind 0.83-0.87;
- ``context_motion``: the scene read in the light of each snippet's motion, the only relation
  whose output is a function of the (scene, motion) pair rather than of each alone.

A detector that scores every snippet with its video's label reaches a pooled frame AUC of
0.77-0.79, about what the trained models reach, and AUC_A 0.5: on this benchmark the pooled AUC
cannot tell localisation from video classification, AUC_A can.

Scales: ``small`` (800 train videos of 32–40 snippets, so the 32-segment training view is close
to the raw snippets, and enough of them that a model does not simply memorise each video; 120
test videos of 32–400 snippets; D=128, 2 crops; seconds to generate) and
``ucf`` (UCF-Crime's shape: 1,610 train of which the first 810 abnormal, 290 test of which the
first 140 abnormal, D=2048, 10 crops, test videos from tens to thousands of snippets; several GB,
for load and memory benchmarks). The same seed gives byte-identical stores.
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

VERSION = 2  # of the generative model; part of the cache path and the store's source record
LATENT_CONTEXT = 16
LATENT_MOTION = 16
LATENT_NUISANCE = 16
CONTEXT_GAIN = 0.2  # per-dim scene signal against unit noise: faint per snippet, clear pooled
MOTION_GAIN = 0.6  # the static, per-snippet look of a motion
MOTION_SWING = 3.0  # amplitude of the motion's oscillation (what changes between snippets)
MOTION_STEP = 0.9  # radians the oscillation advances per snippet
NUISANCE_GAIN = 0.5
CROP_NOISE = 0.3
SEGMENT_LENGTH = (6, 30)  # snippets per motion segment, inclusive
P_CONTEXT_FREE = 0.25  # share of abnormal videos whose anomaly is abnormal everywhere
P_DEPENDENT = 0.5  # share of segments showing a context-dependent motion where it is normal
FRAMES_PER_SNIPPET = 16


def is_abnormal(context: str, motion: str) -> bool:
    """Whether ``motion`` is abnormal in scene ``context`` (the benchmark's ground truth)."""
    if motion in ALWAYS_ABNORMAL:
        return True
    return context in RULES.get(motion, frozenset())


# RULE_TABLE[k, j]: 1 where motion j is abnormal in scene k.
RULE_TABLE = np.array([[is_abnormal(c, m) for m in MOTIONS] for c in CONTEXTS], dtype=bool)


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
    "small": Scale(400, 400, 60, 60, dim=128, crops=2,
                   train_t=(34, 32, 40), test_t=(96, 32, 400)),
    "ucf": Scale(810, 800, 140, 150, dim=2048, crops=10,
                 train_t=(24, 16, 300), test_t=(100, 16, 3000)),
}


@dataclass(frozen=True)
class Track:
    """The latent truth of one video: its scene and, per snippet, motion and abnormality."""

    context: int  # index into CONTEXTS
    motions: np.ndarray  # (T,) index into MOTIONS
    abnormal: np.ndarray  # (T,) bool
    segments: np.ndarray  # (S + 1,) segment boundaries, 0 ... T

    @property
    def contexts(self) -> np.ndarray:
        """(T,) the scene of each snippet."""
        return np.full(len(self.motions), self.context)

    @property
    def cameras(self) -> np.ndarray:
        """(T,) the camera of each snippet: one camera films the whole video."""
        return np.zeros(len(self.motions), dtype=np.int64)


@dataclass(frozen=True)
class Video:
    """One generated video: features [crops, T, D] float32, its labels and its latent track."""

    video_id: str
    split: str
    label: int
    class_name: str
    track: Track
    features: np.ndarray
    frame_labels: np.ndarray

    @property
    def context(self) -> str:
        return CONTEXTS[self.track.context]


def _orthogonal(rng: np.random.Generator, count: int, dim: int) -> np.ndarray:
    """``count`` orthogonal directions in ``dim`` dims, each of norm sqrt(dim): (count, dim)."""
    q = np.linalg.qr(rng.standard_normal((dim, count)))[0]  # (dim, count), orthonormal columns
    return np.sqrt(dim) * q.T


class Generator:
    """Draws videos of one benchmark; all randomness derives from ``seed``."""

    def __init__(self, scale: str = "small", seed: int = 0) -> None:
        if scale not in SCALES:
            raise ValueError(f"unknown scale {scale!r}; allowed: {', '.join(SCALES)}")
        self.scale_name = scale
        self.scale = SCALES[scale]
        self.seed = seed
        rng = np.random.default_rng([seed, VERSION, 0])
        self.context_vectors = _orthogonal(rng, len(CONTEXTS), LATENT_CONTEXT)
        self.motion_vectors = _orthogonal(rng, len(MOTIONS), LATENT_MOTION)
        # Each motion oscillates in its own plane (two orthonormal directions).
        planes = rng.standard_normal((len(MOTIONS), LATENT_MOTION, 2))
        self.motion_planes = np.linalg.qr(planes)[0]  # (M, LATENT_MOTION, 2)
        latent = LATENT_CONTEXT + LATENT_MOTION + LATENT_NUISANCE
        # A random isometry (up to scale) into D dims: features are entangled, every output dim
        # has about unit variance, and a feature's norm depends on its latent norm only, so no
        # motion or scene is louder than another.
        rotation = np.linalg.qr(rng.standard_normal((self.scale.dim, latent)))[0]  # (D, L)
        self.projection = rotation.T * np.sqrt(self.scale.dim / latent)  # (L, D)
        self.crop_offsets = 0.1 * rng.standard_normal((self.scale.crops, self.scale.dim))

    def plan(self) -> Iterator[tuple[str, int, int, int]]:
        """(split, label, index within its split and label, global index) of every video, train
        then test, abnormal first within each split (the UCF list order)."""
        s = self.scale
        order = [("train", 1, s.train_abnormal), ("train", 0, s.train_normal),
                 ("test", 1, s.test_abnormal), ("test", 0, s.test_normal)]
        index = 0
        for split, label, count in order:
            for i in range(count):
                index += 1
                yield split, label, i, index

    def videos(self) -> Iterator[Video]:
        """All videos with their features, in :meth:`plan` order."""
        for split, label, i, index in self.plan():
            yield self._video(split, label, i, index)

    def tracks(self) -> Iterator[tuple[str, int, Track]]:
        """(split, label, latent track) of every video, without drawing features (cheap)."""
        for split, label, _, index in self.plan():
            yield split, label, self._track(np.random.default_rng([self.seed, 1, index]),
                                            split, label)

    def _video(self, split: str, label: int, i: int, index: int) -> Video:
        rng = np.random.default_rng([self.seed, 1, index])
        track = self._track(rng, split, label)
        class_name = "normal"
        if label:
            class_name = MOTIONS[int(track.motions[track.abnormal.argmax()])]
        features = self._features(rng, track)
        frame_labels = np.repeat(track.abnormal.astype(np.uint8), FRAMES_PER_SNIPPET)
        kind = "abnormal" if label else "normal"
        return Video(video_id=f"{split}_{kind}_{i:04d}", split=split, label=label,
                     class_name=class_name, track=track, features=features,
                     frame_labels=frame_labels)

    def _track(self, rng: np.random.Generator, split: str, label: int) -> Track:
        """Scene, segments and per-snippet motions; the label only replaces whole segments."""
        median, lo, hi = self.scale.train_t if split == "train" else self.scale.test_t
        t = int(np.clip(round(median * np.exp(0.6 * rng.standard_normal())), lo, hi))
        context = int(rng.integers(len(CONTEXTS)))
        scene = CONTEXTS[context]
        everywhere = [MOTIONS.index(m) for m in NORMAL_MOTIONS]
        dependent = [MOTIONS.index(m) for m, bad in RULES.items() if scene not in bad]
        bounds = [0]
        while bounds[-1] < t:
            bounds.append(min(t, bounds[-1] + int(rng.integers(SEGMENT_LENGTH[0],
                                                                SEGMENT_LENGTH[1] + 1))))
        segment_motions: list[int] = []
        for _ in range(len(bounds) - 1):
            pool = dependent if rng.random() < P_DEPENDENT else everywhere
            # Consecutive segments differ, so every boundary is a transition in every video.
            choices = [m for m in pool if not segment_motions or m != segment_motions[-1]]
            choices = choices or [m for m in everywhere if m != segment_motions[-1]]
            segment_motions.append(choices[int(rng.integers(len(choices)))])
        # Drawn for every video, so a normal and an abnormal video consume the same randomness
        # up to here and differ only in the replaced segments.
        free = rng.random() < P_CONTEXT_FREE
        pick = rng.random()
        replace_two = rng.random() < 0.5
        first = int(rng.integers(len(segment_motions)))
        abnormal_segments: list[int] = []
        if label:
            bad_here = [MOTIONS.index(m) for m, bad in RULES.items() if scene in bad]
            pool = [MOTIONS.index(m) for m in ALWAYS_ABNORMAL] if free or not bad_here \
                else bad_here
            motion = pool[int(pick * len(pool))]
            abnormal_segments = [first]
            others = [s for s in range(len(segment_motions)) if abs(s - first) > 1]
            if replace_two and others:  # non-adjacent, so the two never merge into one segment
                abnormal_segments.append(others[int(rng.integers(len(others)))])
            for s in abnormal_segments:
                segment_motions[s] = motion
        motions = np.repeat(np.array(segment_motions, dtype=np.int64), np.diff(bounds))
        abnormal = np.zeros(t, dtype=bool)
        for s in abnormal_segments:
            abnormal[bounds[s]:bounds[s + 1]] = True
        return Track(context=context, motions=motions, abnormal=abnormal,
                     segments=np.array(bounds, dtype=np.int64))

    def latent(self, rng: np.random.Generator, track: Track) -> np.ndarray:
        """Latent snippet states (T, 48): scene, motion and nuisance dims."""
        t = track.motions.shape[0]
        scene = CONTEXT_GAIN * self.context_vectors[track.context] + rng.standard_normal(
            (t, LATENT_CONTEXT))
        phase = rng.uniform(0, 2 * np.pi) + MOTION_STEP * np.arange(t)
        swing = np.stack([np.cos(phase), np.sin(phase)], axis=1)  # (T, 2)
        planes = self.motion_planes[track.motions]  # (T, LATENT_MOTION, 2)
        motion = (MOTION_GAIN * self.motion_vectors[track.motions]
                  + MOTION_SWING * np.einsum("tdk,tk->td", planes, swing)
                  + rng.standard_normal((t, LATENT_MOTION)))
        nuisance = NUISANCE_GAIN * (rng.standard_normal(LATENT_NUISANCE)
                                    + rng.standard_normal((t, LATENT_NUISANCE)))
        return np.concatenate([scene, motion, nuisance], axis=1)  # (T, L)

    def _features(self, rng: np.random.Generator, track: Track) -> np.ndarray:
        clean = (self.latent(rng, track) @ self.projection).astype(np.float32)  # (T, D)
        crops, t = self.scale.crops, clean.shape[0]
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
    from ablate.data.writer import StoreWriter

    gen = Generator(scale, seed)
    s = gen.scale
    total = s.train_abnormal + s.train_normal + s.test_abnormal + s.test_normal
    source = {"kind": "synthetic", "version": VERSION, "scale": scale, "seed": seed,
              "generator": generator_fingerprint()}
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


def generator_fingerprint() -> str:
    """Of this module's code: a cached store written by other generator code is regenerated,
    even when ``VERSION`` was not bumped."""
    import hashlib

    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def _is_current(path: Path) -> bool:
    import json

    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    source = manifest.get("source") if isinstance(manifest, dict) else None
    return isinstance(source, dict) and source.get("generator") == generator_fingerprint()


def default_store(scale: str = "small", seed: int = 0) -> Path:
    """The synthetic store in the user cache, generated on first use and again whenever the
    generator's code changed.

    ``ABLATE_CACHE`` overrides the cache root (default ``~/.cache/ablate``).
    """
    import os

    root = Path(os.environ.get("ABLATE_CACHE", Path.home() / ".cache" / "ablate"))
    path = root / "synthetic" / f"v{VERSION}" / f"{scale}-seed{seed}"
    if not _is_current(path):
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.parent / f".{path.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent first uses generate once
            if not _is_current(path):
                generate(path, scale=scale, seed=seed, overwrite=True, progress=True)
    return path
