"""The synthetic context–motion benchmark (version 3): the embedded default dataset.

A fresh machine has no I3D features, so ``ablate`` ships a deterministic generator whose videos
need what the method claims: looking around, at the right snippets. The design is justified by
its information structure, which :mod:`ablate.data.oracles` measures from the generator's latent
truth (and ``tests/test_synth_oracles.py`` asserts), never by which model variant wins on it.
The track model (cameras, segments, motions, anomalies) is :mod:`ablate.data.tracks`.

The generative model, per video:

- **Cameras and scenes (context).** A video cuts between two or three cameras (half each), and
  each camera films one of six scenes (roadway, playground, parking_lot, corridor, shop, park);
  the cameras' scenes differ, and a camera's shots recur non-contiguously. Scene k is a
  direction ``c_k`` in 16 latent dims, the six orthogonal with equal norms. Per snippet the scene
  dims are ``CONTEXT_GAIN · c_k + N(0, I)``: one snippet tells its scene faintly (Bayes: right
  47 % of the time, chance 1/6), the snippets of its camera together almost surely. Each camera
  also has a per-video **look** (lighting, viewpoint): ``CAMERA_GAIN · N(0, I)`` in
  ``LATENT_CAMERA`` dims, plus per-snippet noise of std ``CAMERA_NOISE``, random and free of
  any scene identity. Its norm (about 2.8) is that of the per-video nuisance offset, so an
  embedding need not unlearn it, and a camera's snippets are found by their likeness.
- **Motion.** A video is a sequence of motion segments of 4–10 snippets; consecutive segments
  differ and every cut falls between segments. Motion j has a static look ``μ_j`` (the nine
  looks orthogonal, equal norms) and an oscillation in its own plane (orthonormal ``u_j, v_j``)
  whose phase advances ``MOTION_STEP`` radians per snippet. The motion dims of a snippet are
  ``MOTION_GAIN · μ_j + MOTION_SWING · (cos θ_t · u_j + sin θ_t · v_j) + N(0, I)``: a snippet (an
  I3D snippet spans 16 frames) shows its motion, and so does the change between consecutive
  snippets, in which the scene, the look and the per-video nuisance cancel (but at cuts).
- **Which pairs are abnormal** (the ``RULES`` table): ``walking``, ``standing``, ``sitting``,
  ``talking`` are normal everywhere; ``fighting`` and ``shooting`` are abnormal everywhere
  (context-free anomalies); ``running``, ``climbing`` and ``riding`` are abnormal only in some
  scenes (running on a roadway, not on a playground). A snippet is abnormal exactly when its
  (scene, motion) pair is, so a detector that knows both is perfect.
- **Motions are drawn without the scene.** Every video's motion sequence comes from one
  distribution, the same for every scene and both labels: each segment a context-dependent
  motion with probability ``P_DEPENDENT``, else one normal everywhere. The cameras then follow
  the motions: each segment is filmed by a camera in whose scene its motion is normal (every
  video's set of scenes allows that for every motion). So which motions a video shows says
  nothing about where it is.
- **Anomalies.** An abnormal video *replaces* the motion of one whole segment with a
  context-dependent motion abnormal in that segment's camera, and half of the abnormal videos
  also replace another, non-adjacent segment with a context-free motion: the foothold that weak
  labels need, as in the field's datasets, where some anomalies look wrong anywhere. Anomalies
  are about 27 % of an abnormal training video and 13 % of an abnormal test video. Lengths,
  segment lengths, transition and cut rates have the same distribution in both classes
  (tested): no label leaks through them.
- **Nuisance and entanglement.** 16 nuisance latent dims (a per-video offset plus per-snippet
  noise) join scene, motion and look; one fixed random projection mixes the latent dims into D
  dims, and each crop adds its own offset and noise (std ``CROP_NOISE``): features look
  entangled, like real ones. Frame labels follow the field's convention (16 frames per snippet).

What each relation type of CoMo can see, by construction (``python benchmarks/bench_oracles.py``,
benchmark seeds 0–2 of ``small``; AUC_A is the frame AUC within abnormal test videos):

- a single snippet (any model, through its embedding): the motion clearly (88–89 %) and the
  scene faintly: the Bayes detector from one snippet reaches AUC_A 0.87–0.88, about the 0.86 of a
  detector that knows every true motion and no scene (context-blind);
- ``temporal``: neighbouring snippets, which usually share the camera and the motion; a window
  straddles cuts, so it reads the scene only partly (from 9 snippets right 81 % of the time;
  AUC_A 0.91 / 0.93 / 0.94 from 3 / 5 / 9 snippets);
- ``context``: the snippets whose look is alike, i.e. of the snippet's camera: its scene, pooled
  (scene right 99 %, AUC_A 0.985–0.99, the same as pooling the true camera's snippets, near the
  1.0 of knowing the scene). Pooling the *whole* video instead mixes its cameras' scenes (scene
  right 55–60 %, AUC_A 0.78–0.80, below a single snippet): attention has to select;
- ``motion``: the change between snippets, which carries the motion and cancels the scene and
  the look. The set of motions in a video is independent of its scenes: motion co-occurrence
  reaches AUC_A 0.85–0.86, within 1.5 points of context-blind;
- ``context_motion``: the scene read in the light of each snippet's motion, the only relation
  whose output is a function of the (scene, motion) pair rather than of each alone.

A video-label detector (every frame scored with its video's label) reaches AUC 0.76–0.77 and
AUC_A 0.5: the pooled AUC alone cannot tell localisation from video classification.

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

from ablate.data.tracks import (
    ALWAYS_ABNORMAL,
    CONTEXTS,
    MOTIONS,
    NORMAL_MOTIONS,
    RULE_TABLE,
    RULES,
    Track,
    draw_track,
    is_abnormal,
)

__all__ = ["ALWAYS_ABNORMAL", "CONTEXTS", "MOTIONS", "NORMAL_MOTIONS", "RULES", "RULE_TABLE",
           "SCALES", "VERSION", "Generator", "Scale", "Track", "Video", "default_store",
           "generate", "is_abnormal"]

VERSION = 3  # of the generative model; part of the cache path and the store's source record
LATENT_CONTEXT = 16
LATENT_MOTION = 16
LATENT_CAMERA = 8
LATENT_NUISANCE = 16
CONTEXT_GAIN = 0.25  # per-dim scene signal against unit noise: faint per snippet, clear pooled
CAMERA_GAIN = 1.0  # per-dim camera signature: a look of norm about 2.8, like the nuisance offset
CAMERA_NOISE = 0.25  # per-snippet noise of the camera dims: a camera's snippets look alike
MOTION_GAIN = 0.6  # the static, per-snippet look of a motion
MOTION_SWING = 3.0  # amplitude of the motion's oscillation (what changes between snippets)
MOTION_STEP = 0.9  # radians the oscillation advances per snippet
NUISANCE_GAIN = 0.5
CROP_NOISE = 0.3
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
    "small": Scale(400, 400, 60, 60, dim=128, crops=2,
                   train_t=(34, 32, 40), test_t=(96, 32, 400)),
    "ucf": Scale(810, 800, 140, 150, dim=2048, crops=10,
                 train_t=(24, 16, 300), test_t=(100, 16, 3000)),
}


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
    def scenes(self) -> tuple[str, ...]:
        """The scene each of the video's cameras films."""
        return tuple(CONTEXTS[k] for k in self.track.scenes)


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
        latent = LATENT_CONTEXT + LATENT_MOTION + LATENT_CAMERA + LATENT_NUISANCE
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
        """Length, then the label-free track model of :func:`ablate.data.tracks.draw_track`."""
        median, lo, hi = self.scale.train_t if split == "train" else self.scale.test_t
        t = int(np.clip(round(median * np.exp(0.6 * rng.standard_normal())), lo, hi))
        return draw_track(rng, t, label)

    def latent(self, rng: np.random.Generator, track: Track) -> np.ndarray:
        """Latent snippet states (T, L): scene, motion, nuisance and camera dims."""
        t = track.motions.shape[0]
        scene = CONTEXT_GAIN * self.context_vectors[track.contexts] + rng.standard_normal(
            (t, LATENT_CONTEXT))
        phase = rng.uniform(0, 2 * np.pi) + MOTION_STEP * np.arange(t)
        swing = np.stack([np.cos(phase), np.sin(phase)], axis=1)  # (T, 2)
        planes = self.motion_planes[track.motions]  # (T, LATENT_MOTION, 2)
        motion = (MOTION_GAIN * self.motion_vectors[track.motions]
                  + MOTION_SWING * np.einsum("tdk,tk->td", planes, swing)
                  + rng.standard_normal((t, LATENT_MOTION)))
        # Each camera's look (lighting, viewpoint): random per video, no scene identity in it.
        signatures = CAMERA_GAIN * rng.standard_normal((len(track.scenes), LATENT_CAMERA))
        camera = signatures[track.cameras] + CAMERA_NOISE * rng.standard_normal((t, LATENT_CAMERA))
        nuisance = NUISANCE_GAIN * (rng.standard_normal(LATENT_NUISANCE)
                                    + rng.standard_normal((t, LATENT_NUISANCE)))
        return np.concatenate([scene, motion, nuisance, camera], axis=1)  # (T, L)

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
    """Of this module's and the track model's code: a cached store written by other generator
    code is regenerated, even when ``VERSION`` was not bumped."""
    import hashlib

    from ablate.data import tracks

    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(Path(tracks.__file__).read_bytes())
    return digest.hexdigest()[:16]


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
