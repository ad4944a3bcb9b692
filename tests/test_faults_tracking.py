"""Faults of the tracking store: bad or unreachable stores, and one study driven twice.

Every bad store (random bytes, a truncated database, a directory, another application's
SQLite file, a half-migrated database, the file store, an unknown scheme, a server or database
that is not there) is refused by ``ablate run``, ``ablate report`` and ``ablate ui`` in one line
within 30 s, and another application's file is left byte for byte as it was. Two real drivers
of one study on two ``--storage`` paths and one new SQLite store, started at the same moment,
leave exactly one FINISHED run per trial and a usable store; a later driver of a third storage
adopts the finished trials and duplicates none.
"""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.studykit import TRACKING_STORES, start, study_env, trial_runs
from tests.studykit import run as run_cli

SMOKE = Path(__file__).resolve().parents[1] / "search_spaces" / "smoke.yaml"
WITHIN = 30.0  # seconds the issue allows for refusing a store


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


def _random_bytes(tmp: Path) -> str:
    (tmp / "random.db").write_bytes(bytes(range(256)) * 40)
    return f"sqlite:///{tmp / 'random.db'}"


def _truncated(tmp: Path) -> str:
    whole = Path(TRACKING_STORES.new(tmp / "whole").removeprefix("sqlite:///")).read_bytes()
    (tmp / "truncated.db").write_bytes(whole[:len(whole) // 3])
    return f"sqlite:///{tmp / 'truncated.db'}"


def _directory(tmp: Path) -> str:
    (tmp / "dir.db").mkdir()
    return f"sqlite:///{tmp / 'dir.db'}"


def _foreign(tmp: Path) -> str:
    con = sqlite3.connect(tmp / "app.db")
    con.execute("CREATE TABLE users (id INTEGER, name TEXT)")
    con.execute("INSERT INTO users VALUES (1, 'ada')")
    con.commit()
    con.close()
    return f"sqlite:///{tmp / 'app.db'}"


def _half_migrated(tmp: Path) -> str:
    uri = TRACKING_STORES.new(tmp / "half")
    con = sqlite3.connect(uri.removeprefix("sqlite:///"))
    con.execute("CREATE TABLE _alembic_tmp_params (key TEXT)")  # what a killed upgrade leaves
    con.commit()
    con.close()
    return uri


BAD_STORES = {
    "random-bytes": (_random_bytes, "is not an SQLite database"),
    "truncated": (_truncated, "is damaged ("),
    "directory": (_directory, "is a directory, not a database file"),
    "foreign-sqlite": (_foreign, "is an SQLite database of another application (tables users)"),
    "half-migrated": (_half_migrated, "half-migrated"),
    "file-store": (lambda tmp: f"file://{tmp / 'mlruns'}", "MLflow's file store is not supported"),
    "empty-file-uri": (lambda tmp: "file://", "MLflow's file store is not supported"),
    "bogus-scheme": (lambda tmp: "bogus://x", "unknown scheme 'bogus'"),
    "no-server": (lambda tmp: "http://127.0.0.1:1", "is not reachable: 127.0.0.1:1: "),
    "no-postgresql": (lambda tmp: "postgresql://user:secret@127.0.0.1:1/db",
                      "postgresql://user:***@127.0.0.1:1/db is not reachable"),
}


def _digests(tmp: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in tmp.glob("*.db") if p.is_file()}


def _assert_one_line(result: subprocess.CompletedProcess, seconds: float, needle: str) -> None:
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: tracking store ") and needle in lines[0], lines[0]
    assert "secret" not in result.stderr + result.stdout
    assert seconds < WITHIN, f"refused after {seconds:.0f}s"


def _refused(args: list[str], tmp: Path, cache: Path, needle: str) -> None:
    digests = _digests(tmp)
    began = time.monotonic()
    result = run_cli(args, tmp, study_env(cache), timeout=120)
    _assert_one_line(result, time.monotonic() - began, needle)
    assert _digests(tmp) == digests  # nothing written into any database file


@pytest.mark.parametrize("store", list(BAD_STORES))
def test_report_and_ui_refuse_a_bad_store_in_one_line(store: str, tmp_path: Path,
                                                      cache: Path) -> None:
    make, needle = BAD_STORES[store]
    uri = make(tmp_path)
    _refused(["report", "smoke", "--tracking-uri", uri, "--out", str(tmp_path / "out")],
             tmp_path, cache, needle)
    assert not (tmp_path / "out").exists()
    _refused(["ui", "--tracking-uri", uri], tmp_path, cache, needle)


@pytest.mark.faults
@pytest.mark.slow
@pytest.mark.parametrize("store", list(BAD_STORES))
def test_run_refuses_a_bad_store_in_one_line(store: str, tmp_path: Path, cache: Path) -> None:
    make, needle = BAD_STORES[store]
    _refused(["run", str(SMOKE), "--storage", str(tmp_path / "runs"), "--tracking-uri",
              make(tmp_path), "--quiet"], tmp_path, cache, needle)
    assert not (tmp_path / "runs" / "smoke" / "study.json").exists()


def test_a_name_taken_meanwhile_is_reported_not_raised(tmp_path: Path) -> None:
    """Of two creators of one experiment, the second learns it lost (and is then checked
    against the owner) instead of failing on MLflow's error."""
    from ablate.tracking.connect import connect

    tracker = connect(TRACKING_STORES.new(tmp_path))
    assert tracker.create_experiment("taken", {"ablate.storage": "/a/taken"}) is not None
    assert tracker.create_experiment("taken", {"ablate.storage": "/b/taken"}) is None
    found = tracker.experiment("taken")
    assert found is not None and found.tags["ablate.storage"] == "/a/taken"


def _per_key(uri: str) -> Counter:
    return Counter((r.data.tags["ablate.trial_key"], r.info.status)
                   for r in trial_runs(uri, "smoke"))


@pytest.mark.faults
@pytest.mark.slow
def test_two_drivers_on_two_storages_and_one_new_store(tmp_path: Path, cache: Path) -> None:
    """Started at the same moment on a store that does not exist yet: the store is created
    once, exactly one driver runs the trials, the other is refused in one line (or, started
    after the first finished, adopts its trials). A third storage later adopts everything."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'new.db'}"
    env = study_env(cache)
    drivers = [start(["run", str(SMOKE), "--storage", str(tmp_path / name), "--tracking-uri",
                      uri, "--quiet"], tmp_path, env, log_name=name) for name in ("a", "b")]
    codes = [d.wait(600) for d in drivers]
    outputs = [d.output() for d in drivers]
    assert "Traceback" not in "".join(outputs), "".join(outputs)
    assert 0 in codes, outputs
    for code, output in zip(codes, outputs, strict=True):
        if code != 0:
            assert code == 1
            *_, line = output.strip().splitlines()  # after a first run's dataset note
            assert sum(x.startswith("error:") for x in output.splitlines()) == 1, output
            assert line.startswith("error: study 'smoke' is being run from "), line
            assert "--storage " in line and "--name NEW_NAME" in line, line
    counts = _per_key(uri)
    assert len(counts) == 6 and set(counts.values()) == {1}, counts
    assert {status for _, status in counts} == {"FINISHED"}, counts
    assert MlflowClient(uri).search_experiments()  # the store took every migration

    # Later, from a third storage (relative path, as users type it): adopted, nothing rerun.
    later = run_cli(["run", str(SMOKE), "--storage", "c", "--tracking-uri", uri], tmp_path,
                    env, timeout=300)
    assert later.returncode == 0, later.stdout + later.stderr
    assert "6/6 trials done" in later.stdout
    assert not (tmp_path / "c" / "smoke" / "tune").exists()
    assert _per_key(uri) == counts
    owner = MlflowClient(uri).get_experiment_by_name("smoke").tags["ablate.storage"]
    assert owner == str(tmp_path / "c" / "smoke")


def test_ui_refuses_a_tracking_server_as_its_store(tmp_path: Path, cache: Path) -> None:
    """A reachable server is not a store ``mlflow ui`` can serve: one line, not a traceback."""
    import socket

    with socket.create_server(("127.0.0.1", 0)) as server:
        uri = f"http://127.0.0.1:{server.getsockname()[1]}"
        result = run_cli(["ui", "--tracking-uri", uri], tmp_path, study_env(cache), timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    line, = result.stderr.strip().splitlines()
    assert line == (f"error: {uri} is a tracking server, which serves its own UI: open it in a "
                    "browser (`ablate ui` serves a store: sqlite:///PATH or a database URI)")
