"""Stopping a study and losing Ray's state: exactly once, whatever Ray remembers.

Real drivers (``ablate run`` subprocesses on a local Ray and a SQLite MLflow store) get real
signals: Ctrl-C's SIGINT and the SIGTERM of SLURM and Kubernetes. Each must end the study with
one plain line, exit 130 or 143, record no cut-short trial as FINISHED, and leave a study the
same command finishes exactly. Then Ray's state is damaged the ways users damage it (a
truncated experiment snapshot, ``tune/`` deleted, another ``--storage``, the study directory
moved away): finished trials are adopted from MLflow, unfinished ones continue from checkpoints
of the same identity, and where neither is possible the study is refused, never duplicated.
"""

from __future__ import annotations

import json
import shutil
import signal
from collections import Counter
from pathlib import Path

import pytest

from tests.studykit import (
    TRACKING_STORES,
    Driver,
    PlantedPickle,
    assert_study_complete,
    reported_epoch_with_epochs_to_go,
    results,
    start,
    study_env,
    trial_dirs,
    trial_runs,
    wait_for,
    write_spec,
)
from tests.studykit import (
    run as run_cli,
)

EPOCHS = 3
pytestmark = [pytest.mark.slow, pytest.mark.faults]  # each study trains on a local Ray: a minute


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


class Study:
    """A two-trial study (the base and the base without CoMo, one seed) under ``directory``."""

    def __init__(self, directory: Path, cache: Path, name: str) -> None:
        self.directory = directory
        self.name = name
        self.spec = write_spec(directory, name, epochs=EPOCHS)
        self.root = directory / "runs" / name
        self.tracking_uri = TRACKING_STORES.new(directory)
        self.env = study_env(cache)

    def args(self, storage: Path | None = None) -> list[str]:
        return ["run", str(self.spec), "--storage", str(storage or self.directory / "runs"),
                "--tracking-uri", self.tracking_uri, "--quiet"]

    def start(self) -> Driver:
        return start(self.args(), self.directory, self.env)

    def run(self, storage: Path | None = None):
        return run_cli(self.args(storage), self.directory, self.env, timeout=300)

    def runs(self) -> dict[str, object]:
        found = trial_runs(self.tracking_uri, self.name)
        counts = Counter(r.data.tags["ablate.trial_key"] for r in found)
        assert set(counts.values()) <= {1}, f"duplicate runs: {dict(counts)}"
        return {r.data.tags["ablate.trial_key"]: r for r in found}

    def reported_epoch(self) -> bool:
        return reported_epoch_with_epochs_to_go(self.root, EPOCHS)


def _stop(study: Study, signum: int) -> tuple[int, str, dict]:
    """Starts the study, signals the driver once a trial has reported an epoch with epochs to
    go, and returns (exit status, output, runs by trial key)."""
    driver = study.start()
    wait_for(study.reported_epoch, driver, 300, "a trial's first reported epoch", interval=0.1)
    driver.proc.send_signal(signum)
    status = driver.wait(timeout=120)
    return status, driver.output(), study.runs()


def _assert_stopped(status: int, output: str, runs: dict, expected: int, name: str) -> None:
    assert status == expected, output
    # --quiet: the line, after at most the note that the synthetic data was generated; no
    # traceback, no stack dump of Ray's core.
    *before, last = output.strip().splitlines()
    assert all(line.startswith("synthesised ") for line in before), output
    assert last.startswith(f"interrupted: study '{name}' stopped with ")
    assert last.endswith(" trials done; run the same command to resume")
    for key, run in runs.items():  # nothing cut short passes for a result
        final = run.data.tags.get("ablate.final_epoch")
        if run.info.status == "FINISHED":
            assert final == str(EPOCHS), (key, final)
        else:
            assert run.info.status == "KILLED", (key, run.info.status)


@pytest.fixture(scope="module")
def sigint_study(tmp_path_factory: pytest.TempPathFactory, cache: Path
                 ) -> tuple[Study, tuple[int, str, dict]]:
    study = Study(tmp_path_factory.mktemp("sigint"), cache, "stopint")
    return study, _stop(study, signal.SIGINT)


def test_sigint_says_interrupted_and_records_no_result(sigint_study) -> None:
    study, (status, output, runs) = sigint_study
    _assert_stopped(status, output, runs, 130, "stopint")
    assert any(r.info.status == "KILLED" for r in runs.values())
    progress = json.loads((study.root / "trials.json").read_text())
    assert progress["driver"] == "interrupted"


def test_status_reads_plain_records_and_runs_no_planted_code(sigint_study,
                                                             tmp_path: Path) -> None:
    """``status`` reads study.json and trials.json; payloads planted in Ray's pickles (the
    experiment state and tuner.pkl) never run."""
    import pickle

    study, _ = sigint_study
    marker = tmp_path / "executed"
    payload = pickle.dumps(PlantedPickle(marker))
    tune = study.root / "tune"
    saved = {p: p.read_bytes() for p in [*tune.glob("experiment_state-*.json"),
                                         tune / "tuner.pkl"]}
    try:
        for path in saved:
            path.write_bytes(payload if path.suffix == ".pkl" else json.dumps(
                {"trial_data": [], "runner_data": payload.hex()}).encode())
        result = run_cli(["status", "stopint", "--storage", str(study.directory / "runs")],
                     study.directory, study.env)
    finally:
        for path, body in saved.items():
            path.write_bytes(body)
    assert result.returncode == 0, result.stderr
    assert not marker.exists()
    lines = result.stdout.splitlines()
    assert lines[0].startswith("study 'stopint' at ")
    assert "2 planned trials" in lines[0]
    assert any(line.split()[:2] == ["base/seed0", "interrupted"] for line in lines)
    assert lines[-1].startswith("last run: interrupted; run the same command to resume")


@pytest.fixture(scope="module")
def resumed_study(sigint_study):
    """The interrupted study after its newest experiment snapshot was cut in half, run again."""
    study, (_, _, before) = sigint_study
    newest = sorted((study.root / "tune").glob("experiment_state-*.json"))[-1]
    newest.write_bytes(newest.read_bytes()[:200])
    return study, before, study.run()


def test_after_sigint_a_truncated_snapshot_still_resumes_exactly(resumed_study) -> None:
    """The trials continue from their own checkpoints (found by identity, not by Ray's trial
    id), and MLflow keeps one run per trial."""
    study, before, result = resumed_study
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2/2 trials done, 0 failed" in result.stdout
    assert_study_complete(study.tracking_uri, study.root, EPOCHS)
    assert {k: r.info.run_id for k, r in study.runs().items()} == {
        k: r.info.run_id for k, r in before.items()}
    attempts = [rows for rows in map(results, trial_dirs(study.root)) if rows]
    # The stop came once Tune held a reported epoch, which the stop flushes to MLflow.
    cut = [k for k, r in before.items() if r.info.status == "KILLED" and r.data.metrics]
    assert cut, f"no interrupted trial had logged an epoch: {before}"
    for key in cut:
        final = [rows for rows in attempts if rows[0]["config"]["trial_key"] == key
                 and rows[-1]["epoch"] == EPOCHS]
        assert final and final[-1][0]["start_epoch"] >= 1, (key, attempts)


def test_lost_ray_state_adopts_finished_trials(resumed_study, tmp_path: Path) -> None:
    """``tune/`` deleted, or the study run from another ``--storage``: nothing is rerun."""
    study, _, _ = resumed_study
    before = {k: r.info.run_id for k, r in study.runs().items()}
    assert len(before) == 2
    shutil.rmtree(study.root / "tune")
    for storage in (None, tmp_path / "other"):
        result = study.run(storage)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "2/2 trials done, 0 failed" in result.stdout
        assert {k: r.info.run_id for k, r in study.runs().items()} == before
        assert not (study.root / "tune").exists()  # no trial ran again
    assert not (tmp_path / "other" / study.name / "tune").exists()


def test_sigterm_then_the_same_command_resumes_quietly(tmp_path: Path, cache: Path) -> None:
    study = Study(tmp_path, cache, "stopterm")
    status, output, runs = _stop(study, signal.SIGTERM)
    _assert_stopped(status, output, runs, 143, "stopterm")

    # The study directory moved away (or another --storage): a trial that logged epochs has
    # no checkpoint to continue from, so the study is refused and nothing is written.
    away = tmp_path / "away"
    (tmp_path / "runs").rename(away)
    refused = study.run()
    lost = [f"{k} (run {r.info.run_id}, " for k, r in runs.items()
            if r.info.status == "KILLED" and r.data.metrics]
    assert lost, "the stop logged no cut-short trial's reported epochs to MLflow"
    assert refused.returncode == 1
    line, = refused.stderr.strip().splitlines()
    assert line.startswith(f"error: study 'stopterm': Ray's state under {tmp_path}/runs/"
                           f"stopterm/tune is gone, and {len(lost)} unfinished trial(s) logged "
                           f"epochs that no checkpoint covers: ")
    assert all(piece in line for piece in lost), line
    assert line.endswith("delete their MLflow runs (mlflow runs delete --run-id ID) to train "
                         "them again from scratch, or run the spec as a new study with --name "
                         "NEW_NAME")
    assert not (tmp_path / "runs").exists()
    assert study.runs().keys() == runs.keys()

    away.rename(tmp_path / "runs")
    result = study.run()
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr == ""
    assert "2/2 trials done, 0 failed" in result.stdout and "(resumed)" in result.stdout
    assert_study_complete(study.tracking_uri, study.root, EPOCHS)
