"""Shared fixtures: the installed command line, small random feature stores, MLflow stores,
and the one local Ray of the test session."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from tests.studykit import (
    SESSION_RAY,
    TRACKING_STORES,
    SessionRay,
    assert_ran,
    run_in_process,
)

# Marks of tests that take many minutes in all: they run only when asked for by name, as CI
# does after the README's command (``pytest -m faults``, then ``pytest -m claims``).
OPT_IN = ("faults", "claims")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leaves out the tests of each :data:`OPT_IN` mark that ``-m`` does not name."""
    asked = config.getoption("markexpr") or ""
    left_out = [item for item in items
                if any(item.get_closest_marker(mark) for mark in OPT_IN if mark not in asked)]
    if left_out:
        config.hook.pytest_deselected(items=left_out)
        kept = set(map(id, items)) - set(map(id, left_out))
        items[:] = [item for item in items if id(item) in kept]


@pytest.fixture
def ablate_exe() -> str:
    """Path of the installed ``ablate`` script, for tests that run the real CLI in a subprocess."""
    exe = shutil.which("ablate") or str(Path(sys.executable).parent / "ablate")
    assert Path(exe).exists(), "the ablate entry point is not installed (pip install -e .)"
    return exe


@dataclass
class TinyStore:
    """A store written by :func:`make_store`, with the arrays that went into it."""

    path: Path
    crops: int
    dim: int
    dtype: str
    features: dict[str, np.ndarray] = field(default_factory=dict)  # [crops, T, D] float32
    labels: dict[str, int] = field(default_factory=dict)
    frame_labels: dict[str, np.ndarray] = field(default_factory=dict)
    train: list[str] = field(default_factory=list)
    test: list[str] = field(default_factory=list)


@pytest.fixture
def make_store(tmp_path: Path) -> Callable[..., TinyStore]:
    """Factory: ``make_store(name, crops=2, dim=8, train=(T, ...), test=(T, ...), ...)`` writes a
    random store under ``tmp_path`` and returns it with its source arrays."""

    def make(
        name: str = "store",
        *,
        crops: int = 2,
        dim: int = 8,
        dtype: str = "float16",
        train: tuple[int, ...] = (5, 40, 1, 33),
        test: tuple[int, ...] = (5, 32, 70),
        seed: int = 0,
        interleave: bool = False,
        **writer_options: object,
    ) -> TinyStore:
        from ablate.data import StoreWriter

        rng = np.random.default_rng(seed)
        store = TinyStore(tmp_path / name, crops, dim, dtype)
        videos = []
        for i, snippets in enumerate(train):
            video_id = f"train_{i:03d}"
            label = int(i < (len(train) + 1) // 2)
            videos.append((video_id, "train", label, snippets, None,
                           rng.standard_normal((crops, snippets, dim)).astype(np.float32)))
        for i, snippets in enumerate(test):
            frames = np.zeros(16 * snippets, dtype=np.uint8)
            if i % 2 == 0:
                frames[16 * (snippets // 3) : 16 * (snippets // 3 + 1) + 5] = 1
            videos.append((f"test_{i:03d}", "test", int(frames.any()), snippets, frames,
                           rng.standard_normal((crops, snippets, dim)).astype(np.float32)))
        if interleave:  # alternate train and test calls; list order within a split is kept
            tr = [v for v in videos if v[1] == "train"]
            te = [v for v in videos if v[1] == "test"]
            videos = [v for pair in zip(te, tr, strict=False) for v in pair]
            videos += tr[len(te):] + te[len(tr):]
        with StoreWriter(store.path, crops=crops, dim=dim, dtype=dtype, name=name,
                         source={"kind": "test", "seed": seed}, **writer_options) as writer:
            for video_id, split, label, _, frames, feats in videos:
                writer.add_video(video_id, split, label, "Abuse" if label else "Normal", feats,
                                 frames)
                store.features[video_id] = feats
                store.labels[video_id] = label
                if frames is not None:
                    store.frame_labels[video_id] = frames
                (store.train if split == "train" else store.test).append(video_id)
        return store

    return make


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Generated data goes to a per-session cache, never the user's ~/.cache (subprocesses too)."""
    import os

    if "ABLATE_CACHE" not in os.environ or os.environ.get("CI"):
        os.environ["ABLATE_CACHE"] = str(tmp_path_factory.mktemp("ablate-cache"))
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.pop("RAY_ADDRESS", None)


@pytest.fixture(scope="session")
def synthetic_small() -> Path:
    """The small synthetic benchmark in the session cache (generated once)."""
    from ablate.data.synth import default_store

    return default_store("small")


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 900):
    """Runs the real ``ablate`` entry point in a subprocess."""
    import subprocess

    exe = shutil.which("ablate") or str(Path(sys.executable).parent / "ablate")
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


# -- MLflow ---------------------------------------------------------------------------------

@pytest.fixture(scope="session", autouse=True)
def _tracking_store_template(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Empty MLflow stores are copied from one made in this session's temporary directory."""
    TRACKING_STORES.factory = tmp_path_factory


@pytest.fixture(scope="session")
def new_tracking_store() -> Callable[..., str]:
    """Factory: ``new_tracking_store(directory, name="mlflow.db")`` puts an empty SQLite MLflow
    store at ``directory/name`` (``ablate run`` started in ``directory`` uses ./mlflow.db) and
    returns its URI."""
    return TRACKING_STORES.new


@pytest.fixture
def tracking_uri(tmp_path: Path) -> str:
    """URI of an empty SQLite MLflow store of this test: ``sqlite:///<tmp_path>/mlflow.db``."""
    return TRACKING_STORES.new(tmp_path)


# -- Ray ------------------------------------------------------------------------------------

@pytest.fixture(scope="session", autouse=True)
def _session_ray_shutdown() -> Iterator[None]:
    """Stops the session's Ray, if a test started it, when the session ends."""
    yield
    SESSION_RAY.stop()


@pytest.fixture(scope="session")
def local_ray(_isolated_cache: None) -> SessionRay:
    """The session's local Ray (2 CPUs, no dashboard), running; studies run in this process
    (``run_in_process``, ``run_study``) connect to it instead of starting their own."""
    SESSION_RAY.ensure()
    return SESSION_RAY


@pytest.fixture(scope="module")
def no_local_ray() -> None:
    """Stops the session's Ray for a module that starts Ray nodes in this process (the next
    in-process study starts it again)."""
    SESSION_RAY.stop()


# -- the smoke study ------------------------------------------------------------------------

SMOKE = Path(__file__).resolve().parents[1] / "search_spaces" / "smoke.yaml"


@dataclass
class SmokeStudy:
    """``ablate run search_spaces/smoke.yaml`` run in ``workdir`` (its default ./mlflow.db and
    ./runs), with what it printed."""

    workdir: Path
    stdout: str
    stderr: str

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.workdir / 'mlflow.db'}"


@pytest.fixture(scope="session")
def smoke_study(tmp_path_factory: pytest.TempPathFactory, local_ray: SessionRay) -> SmokeStudy:
    """The smoke study (6 trials), run once per session in this process; tests may add to its
    directory but leave the study as they found it."""
    workdir = tmp_path_factory.mktemp("smoke")
    TRACKING_STORES.new(workdir)
    result = run_in_process(["run", str(SMOKE)], workdir)
    assert_ran(result, "ablate run smoke.yaml")
    return SmokeStudy(workdir, result.stdout, result.stderr)
