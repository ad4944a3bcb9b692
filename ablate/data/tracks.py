"""The synthetic benchmark's world and track model: scenes, motions, rules, and per video the
cameras, shots, motion segments and abnormal intervals (its latent truth, without features).

:mod:`ablate.data.synth` documents the design and draws the features.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

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

SEGMENT_LENGTH = (4, 10)  # snippets per motion segment, inclusive
P_DEPENDENT = 0.5  # share of segments showing a context-dependent motion (where it is normal)
P_STAY = 0.8  # chance a segment keeps the previous segment's camera when that camera may film it
P_THREE_CAMERAS = 0.5  # share of videos filmed by three cameras (else two)
P_CONTEXT_FREE = 0.5  # share of abnormal videos with a context-free anomaly besides


def is_abnormal(context: str, motion: str) -> bool:
    """Whether ``motion`` is abnormal in scene ``context`` (the benchmark's ground truth)."""
    if motion in ALWAYS_ABNORMAL:
        return True
    return context in RULES.get(motion, frozenset())


# RULE_TABLE[k, j]: 1 where motion j is abnormal in scene k.
RULE_TABLE = np.array([[is_abnormal(c, m) for m in MOTIONS] for c in CONTEXTS], dtype=bool)
EVERYWHERE = tuple(MOTIONS.index(m) for m in NORMAL_MOTIONS)
DEPENDENT = tuple(MOTIONS.index(m) for m in RULES)
FREE = tuple(MOTIONS.index(m) for m in ALWAYS_ABNORMAL)


def _covering(cameras: int) -> tuple[tuple[int, ...], ...]:
    """The sets of ``cameras`` distinct scenes in which every context-dependent motion is normal
    in at least one, so that any motion sequence can be filmed normally."""
    return tuple(s for s in combinations(range(len(CONTEXTS)), cameras)
                 if not RULE_TABLE[np.ix_(s, DEPENDENT)].all(axis=0).any())


SCENE_SETS = {2: _covering(2), 3: _covering(3)}


@dataclass(frozen=True)
class Track:
    """The latent truth of one video: its cameras' scenes and, per snippet, camera, motion and
    abnormality."""

    scenes: np.ndarray  # (cameras,) index into CONTEXTS: the scene each camera films
    cameras: np.ndarray  # (T,) the camera of each snippet
    motions: np.ndarray  # (T,) index into MOTIONS
    abnormal: np.ndarray  # (T,) bool
    segments: np.ndarray  # (S + 1,) motion segment boundaries, 0 ... T

    @property
    def contexts(self) -> np.ndarray:
        """The scene of each snippet: (T,)."""
        return self.scenes[self.cameras]

    @property
    def cuts(self) -> int:
        """Camera changes between consecutive snippets."""
        return int((np.diff(self.cameras) != 0).sum())


def _segment_motions(rng: np.random.Generator, count: int) -> list[int]:
    """Motions of ``count`` segments from one scene-free distribution: a context-dependent
    motion with probability ``P_DEPENDENT``, else one normal everywhere; consecutive segments
    differ."""
    motions: list[int] = []
    for _ in range(count):
        pool = DEPENDENT if rng.random() < P_DEPENDENT else EVERYWHERE
        pick = rng.random()
        choices = [m for m in pool if not motions or m != motions[-1]]
        motions.append(choices[int(pick * len(choices))])
    return motions


def _segment_cameras(rng: np.random.Generator, scenes: tuple[int, ...],
                     motions: list[int]) -> list[int]:
    """A camera per segment, one in whose scene its motion is normal: the previous one with
    probability ``P_STAY`` where it may, else another (one not seen yet, while any is left)."""
    cameras: list[int] = []
    for m in motions:
        allowed = [c for c in range(len(scenes)) if not RULE_TABLE[scenes[c], m]]
        stay = rng.random() < P_STAY
        pick = rng.random()
        if len(set(cameras)) < len(scenes):  # until every camera has appeared, prefer new ones
            unseen = [c for c in allowed if c not in cameras]
            allowed = unseen or allowed
            stay = stay and not unseen
        if stay and cameras and cameras[-1] in allowed:
            cameras.append(cameras[-1])
        else:
            others = [c for c in allowed if not cameras or c != cameras[-1]] or allowed
            cameras.append(others[int(pick * len(others))])
    return cameras


def _replace(draws: np.ndarray, scenes: tuple[int, ...], cameras: list[int],
             motions: list[int]) -> list[int]:
    """Makes one or two non-adjacent segments abnormal (in place); returns their indices.

    Every abnormal video gets one context-dependent anomaly: a segment's motion replaced by a
    context-dependent motion abnormal in that segment's camera (every scene has one), unlike its
    neighbours; in the rare video where no segment allows one, a context-free motion. A share
    ``P_CONTEXT_FREE`` of the abnormal videos get a context-free anomaly besides.
    """
    n = len(motions)

    def bad_here(s: int) -> list[int]:
        neighbours = {motions[i] for i in (s - 1, s + 1) if 0 <= i < n}
        return [m for m in DEPENDENT if RULE_TABLE[scenes[cameras[s]], m] and m not in neighbours]

    fits = [s for s in range(n) if bad_here(s)]
    first = fits[int(draws[1] * len(fits))] if fits else int(draws[1] * n)
    pool = bad_here(first) or list(FREE)
    motions[first] = pool[int(draws[3] * len(pool))]
    others = [s for s in range(n) if abs(s - first) > 1]
    if draws[0] < P_CONTEXT_FREE and others:
        second = others[int(draws[2] * len(others))]
        motions[second] = FREE[int(draws[4] * len(FREE))]
        return [first, second]
    return [first]


def draw_track(rng: np.random.Generator, t: int, label: int) -> Track:
    """Draws one video's latent track of ``t`` snippets; the label only replaces the motion of
    one or two whole segments, after everything else is drawn the same way for both classes."""
    bounds = [0]
    while bounds[-1] < t:
        bounds.append(min(t, bounds[-1] + int(rng.integers(SEGMENT_LENGTH[0],
                                                            SEGMENT_LENGTH[1] + 1))))
    n = len(bounds) - 1
    count = 3 if rng.random() < P_THREE_CAMERAS else 2
    options = SCENE_SETS[count]
    scenes = tuple(int(s) for s in rng.permutation(options[int(rng.integers(len(options)))]))
    motions = _segment_motions(rng, n)
    cameras = _segment_cameras(rng, scenes, motions)
    # Drawn for every video, so both classes consume the same randomness up to the replacement.
    draws = rng.random(5)
    abnormal_segments = _replace(draws, scenes, cameras, motions) if label else []
    # A camera that no segment needed (rare: short videos of three cameras) is not in the video.
    used = sorted(set(cameras))
    scenes = tuple(scenes[c] for c in used)
    cameras = [used.index(c) for c in cameras]
    lengths = np.diff(bounds)
    abnormal = np.zeros(t, dtype=bool)
    for s in abnormal_segments:
        abnormal[bounds[s]:bounds[s + 1]] = True
    return Track(scenes=np.array(scenes, dtype=np.int64),
                 cameras=np.repeat(np.array(cameras, dtype=np.int64), lengths),
                 motions=np.repeat(np.array(motions, dtype=np.int64), lengths),
                 abnormal=abnormal, segments=np.array(bounds, dtype=np.int64))
