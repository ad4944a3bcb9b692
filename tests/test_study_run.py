"""`ablate run` end to end on a real local Ray and a real SQLite MLflow store: the session's
smoke study (run in this process), and a driver process SIGKILLed mid-study and the resume that
follows."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.conftest import SmokeStudy, run_cli
from tests.studykit import (
    assert_study_complete,
    results,
    run_in_process,
    split_slow,
    trial_dirs,
    trial_runs,
)

SMOKE = Path(__file__).resolve().parents[1] / "search_spaces" / "smoke.yaml"
SMOKE_KEYS = {f"{v}/seed{s}" for v in ("full", "clav=none", "como=none") for s in (0, 1)}
pytestmark = pytest.mark.slow


def child_runs(workdir: Path) -> list:
    return trial_runs(f"sqlite:///{workdir / 'mlflow.db'}", "smoke")


def assert_complete(workdir: Path, epochs: int = 3) -> None:
    """Every planned trial has exactly one FINISHED run holding each epoch once (studykit), and
    the smoke study's trials carry their artifacts and params."""
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    assert_study_complete(uri, workdir / "runs" / "smoke", epochs)
    client = MlflowClient(uri)
    runs = child_runs(workdir)
    assert sorted(r.data.tags["ablate.trial_key"] for r in runs) == sorted(SMOKE_KEYS)
    for run in runs:
        assert 0.0 < run.data.metrics["auc"] <= 1.0 and 0.0 < run.data.metrics["ap"] <= 1.0
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"config.yaml", "scores", "checkpoint"} <= artifacts
        assert run.data.tags["mlflow.parentRunId"]
        assert run.data.params["model.clav.type"] in ("clav", "none")


def trial_results(workdir: Path) -> dict[str, list[dict]]:
    """Every result each trial reported to Tune, from its result.json, by trial key."""
    return {rows[0]["config"]["trial_key"]: rows
            for rows in map(results, trial_dirs(workdir / "runs" / "smoke")) if rows}


def test_smoke_study_runs_and_tracks_every_trial(smoke_study: SmokeStudy) -> None:
    workdir, stdout = smoke_study.workdir, smoke_study.stdout
    assert "study 'smoke': 6/6 trials done, 0 failed" in stdout
    assert "ablate report smoke" in stdout and "ablate ui" in stdout
    assert_complete(workdir)
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("smoke")
    parents = client.search_runs([experiment.experiment_id], "tags.`ablate.role` = 'study'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert {r.data.tags["mlflow.parentRunId"] for r in child_runs(workdir)} == {
        parents[0].info.run_id}
    # Paired design: every variant ran the same seeds.
    tags = [(r.data.tags["ablate.variant"], r.data.tags["ablate.seed"]) for r in
            child_runs(workdir)]
    assert sorted(tags) == sorted((v, str(s)) for v in ("full", "clav=none", "como=none")
                                  for s in (0, 1))


def test_rerunning_a_finished_study_duplicates_nothing(smoke_study: SmokeStudy) -> None:
    workdir = smoke_study.workdir
    before = {r.info.run_id for r in child_runs(workdir)}
    result = run_in_process(["run", str(SMOKE)], workdir)
    assert result.exit_code == 0, result.output
    assert "(resumed)" in result.stdout
    assert {r.info.run_id for r in child_runs(workdir)} == before
    assert_complete(workdir)


def test_status_reads_the_study(smoke_study: SmokeStudy) -> None:
    workdir = smoke_study.workdir
    result = run_cli("status", "smoke", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "trials: 6 done" in result.stdout
    assert "full/seed0" in result.stdout


def test_changed_spec_is_refused(smoke_study: SmokeStudy) -> None:
    workdir = smoke_study.workdir
    changed = workdir / "smoke_changed.yaml"
    changed.write_text(SMOKE.read_text().replace("seeds: [0, 1]", "seeds: [0, 1, 2]"))
    result = run_in_process(["run", str(changed)], workdir)
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: study 'smoke' at ")
    assert "was created from a different plan" in lines[0] and "--name NEW_NAME" in lines[0]
    assert "; changed: seeds: [0, 1] -> [0, 1, 2]; to resume it, set those back;" in lines[0]


def _session_processes(session_id: int) -> dict[int, str]:
    """pid -> command line of the processes in a session (they outlive their parent, so the
    killed driver's descendants cannot be found through it any more)."""
    out = subprocess.run(["ps", "-eo", "sid=,pid=,args="], capture_output=True,
                         text=True).stdout
    processes = {}
    for line in out.splitlines():
        sid, pid, *args = line.split(None, 2)
        if sid == str(session_id):
            processes[int(pid)] = args[0] if args else ""
    return processes


@pytest.mark.faults
def test_sigkill_mid_study_then_the_same_command_completes(
        tmp_path: Path, new_tracking_store: Callable[[Path], str]) -> None:
    new_tracking_store(tmp_path)  # the driver's default ./mlflow.db, without its schema setup
    exe = str(Path(sys.executable).parent / "ablate")
    driver = subprocess.Popen([exe, "run", str(SMOKE)], cwd=tmp_path, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    tune_dir = tmp_path / "runs" / "smoke" / "tune"
    deadline = time.monotonic() + 600
    checkpointed: set[str] = set()
    try:
        # Kill as soon as some trial has a checkpoint, while the study is still running.
        while time.monotonic() < deadline and driver.poll() is None:
            for trial_dir in tune_dir.glob("*/checkpoint_000000"):
                params = json.loads((trial_dir.parent / "params.json").read_text())
                checkpointed.add(params["trial_key"])
            if checkpointed:
                break
            time.sleep(0.1)
        # Trials with fewer checkpoints than epochs at the kill were interrupted mid-trial.
        interrupted = {key for key in checkpointed if len(list(
            tune_dir.glob(f"*trial_key={key.replace('=', '_').replace('/', '_')}*/checkpoint_*")))
            < 3}
        assert driver.poll() is None, "the study finished before it could be interrupted"
        assert checkpointed
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            driver.kill()
    # Ray's core processes and trial workers share the driver's fate (they run in the driver's
    # session). Ray's per-node agents wait on the dead GCS and linger: reap them here.
    time.sleep(5)
    core, _ = split_slow(_session_processes(driver.pid))
    with contextlib.suppress(ProcessLookupError):
        os.killpg(driver.pid, signal.SIGKILL)
    assert not core, f"Ray processes outlived the killed driver: {core}"

    result = run_cli("run", str(SMOKE), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "6/6 trials done, 0 failed" in result.stdout and "(resumed)" in result.stdout
    assert_complete(tmp_path)
    results = trial_results(tmp_path)
    assert interrupted, "no trial was interrupted mid-way"
    for key in interrupted:
        # The attempt that finished (the last worker process; Tune may or may not keep the
        # killed attempt's rows) continued from a checkpoint instead of starting over.
        rows = results[key]
        final = [r for r in rows if r["pid"] == rows[-1]["pid"]]
        assert rows[-1]["epoch"] == 3
        assert all(r["start_epoch"] >= 1 for r in final), (key, rows)
