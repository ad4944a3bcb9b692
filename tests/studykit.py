"""Helpers for tests that run whole studies in subprocesses and interrupt them.

A study is written as a tiny spec under the test's directory and run with the installed
``ablate`` entry point, so the driver is a separate process that can be killed like a user's
terminal session. Studies that need no interrupting run in the test process instead
(:func:`run_in_process`), on the one local Ray of the test session (:data:`SESSION_RAY`). The
checks read only what a user could read: the study directory (Ray Tune's ``result.json`` per
trial, the trial checkpoints) and the MLflow tracking store.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ABLATE = shutil.which("ablate") or str(Path(sys.executable).parent / "ablate")


def write_spec(directory: Path, name: str, epochs: int = 3, seeds: Iterable[int] = (0,),
               axes: dict[str, list[str]] | None = None, max_concurrent: int = 2,
               max_failures: int = 2) -> Path:
    """A leave-one-out study of ``full`` on the synthetic default: 1 + len(axes) variants."""
    import yaml

    spec = {
        "name": name,
        "dataset": "synthetic",
        "base": "full",
        "overrides": {"train.epochs": epochs},
        "ablation": {"design": "leave_one_out",
                     "axes": axes or {"model.como.type": ["none"]}},
        "seeds": list(seeds),
        "metric": "auc",
        "mode": "max",
        "resources": {"cpu": 1, "gpu": 0},
        "max_concurrent": max_concurrent,
        "max_failures": max_failures,
    }
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def study_env(cache: Path, **extra: str) -> dict[str, str]:
    """The environment of an ``ablate`` subprocess: its own data cache, no ambient Ray/MLflow."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    env.update({"ABLATE_CACHE": str(cache), "RAY_USAGE_STATS_ENABLED": "0",
                "PYTHONUNBUFFERED": "1"}, **extra)
    return env


@dataclass
class Driver:
    """A running ``ablate run`` process whose output goes to files (no pipe can fill up)."""

    proc: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            pytest.fail(f"ablate did not finish in {timeout:.0f}s:\n{self.output()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL, like a lost terminal, an OOM kill or a preempted login node."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def start(args: list[str], cwd: Path, env: dict[str, str], log_name: str = "driver") -> Driver:
    log = cwd / f"{log_name}-{time.monotonic_ns()}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([ABLATE, *args], cwd=cwd, env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    return Driver(proc, log)


def run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 300
        ) -> subprocess.CompletedProcess:
    return subprocess.run([ABLATE, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def wait_for(condition: Callable[[], Any], driver: Driver | None, timeout: float,
             what: str, interval: float = 0.02) -> Any:
    """Polls ``condition`` until it returns something truthy; fails if the driver exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if driver is not None and driver.proc.poll() is not None:
            pytest.fail(f"ablate exited ({driver.proc.returncode}) before {what}:\n"
                        f"{driver.output()[-3000:]}")
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}"
                + (f":\n{driver.output()[-3000:]}" if driver is not None else ""))


# -- MLflow stores ---------------------------------------------------------------------------

class TrackingStores:
    """Empty SQLite MLflow stores, each a copy of one made on first use: making a store runs
    MLflow's schema migrations, seconds of work; copying one takes milliseconds."""

    def __init__(self) -> None:
        self.factory: pytest.TempPathFactory | None = None  # set for the session by conftest
        self._template: Path | None = None

    def template(self) -> Path:
        """The store every new one copies, made on first call."""
        if self._template is None:
            from mlflow import MlflowClient

            assert self.factory is not None, "tests/conftest.py sets the temporary directory"
            directory = self.factory.mktemp("mlflow-template")
            here = Path.cwd()
            os.chdir(directory)  # the Default experiment's artifact location, never used
            try:
                MlflowClient(f"sqlite:///{directory / 'mlflow.db'}").search_experiments()
            finally:
                os.chdir(here)
            self._template = directory / "mlflow.db"
        return self._template

    def new(self, directory: Path, name: str = "mlflow.db") -> str:
        """Puts an empty store at ``directory/name`` and returns its ``sqlite:///`` URI."""
        directory.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.template(), directory / name)
        return f"sqlite:///{directory / name}"


TRACKING_STORES = TrackingStores()


# -- in this process -----------------------------------------------------------------------

class SessionRay:
    """The local Ray of the test session: started on first use, stopped at the end of the
    session or before tests that start Ray nodes in this process (and started again after).

    Trial workers inherit the environment of the moment it starts: the session's data cache
    (``ABLATE_CACHE``), not one a test sets later.
    """

    CPUS = 2

    def __init__(self) -> None:
        self.started = False

    def ensure(self) -> None:
        """Starts it, unless this process already has a Ray."""
        import ray

        if ray.is_initialized():
            return
        # ray.init replaces the SIGINT/SIGTERM handlers of the test process; keep pytest's.
        handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        try:
            ray.init(num_cpus=self.CPUS, include_dashboard=False, log_to_driver=False,
                     logging_level="ERROR", configure_logging=True)
        finally:
            for signum, handler in handlers.items():
                if handler is not None:
                    signal.signal(signum, handler)
        self.started = True

    def stop(self) -> None:
        """Shuts it down, if it was started here and still runs."""
        import ray

        if self.started and ray.is_initialized():
            ray.shutdown()
        self.started = False


SESSION_RAY = SessionRay()


def run_in_process(args: list[str], cwd: Path) -> Any:
    """``ablate ARGS`` run by this process from ``cwd``, on :data:`SESSION_RAY`; returns
    click's ``Result`` (``exit_code``, ``stdout``, ``stderr``). The working directory, the
    environment and the signal handlers (Tune leaves its own SIGINT handler) are put back."""
    from click.testing import CliRunner

    from ablate.cli import cli

    SESSION_RAY.ensure()
    signums = [signal.SIGINT, signal.SIGTERM, signal.SIGUSR1]
    handlers = {s: signal.getsignal(s) for s in signums}
    environ = dict(os.environ)
    here = Path.cwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(cli, args)
    finally:
        os.chdir(here)
        os.environ.clear()
        os.environ.update(environ)
        for signum, handler in handlers.items():
            if handler is not None:
                signal.signal(signum, handler)


def assert_ran(result: Any, what: str = "ablate") -> None:
    """``result`` of :func:`run_in_process` exited 0; else fails with its output and error."""
    if result.exit_code == 0:
        return
    import traceback

    error = "".join(traceback.format_exception(*result.exc_info)) if result.exc_info else ""
    pytest.fail(f"{what} exited {result.exit_code}:\n{result.stdout[-3000:]}\n"
                f"{result.stderr[-3000:]}\n{error[-3000:]}")


# -- processes ------------------------------------------------------------------------------

def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, state letter) from /proc, None once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return int(fields[1]), fields[0]


def descendants(pid: int) -> dict[int, str]:
    """Every live descendant of ``pid``: pid -> command line."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            children.setdefault(stat[0], []).append(int(entry))
    found: dict[int, str] = {}
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            try:
                cmd = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            found[child] = cmd.strip()
            stack.append(child)
    return found


def alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[1] not in ("Z", "X")


# Ray's per-node agents notice a dead raylet at once but exit only after their last report to
# the (also dead) GCS times out, about a minute later; everything else dies with the driver.
SLOW_TO_EXIT = ("ray::DashboardAgent", "ray::RuntimeEnvAgent", "dashboard/agent.py",
                "runtime_env/agent/main.py")


def split_slow(processes: dict[int, str]) -> tuple[dict[int, str], dict[int, str]]:
    slow = {p: c for p, c in processes.items() if any(s in c for s in SLOW_TO_EXIT)}
    return {p: c for p, c in processes.items() if p not in slow}, slow


def assert_gone(processes: dict[int, str], within: float) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and any(alive(p) for p in processes):
        time.sleep(0.2)
    left = {p: c[:120] for p, c in processes.items() if alive(p)}
    assert not left, f"processes of the killed driver still running after {within:.0f}s: {left}"


# -- the study directory --------------------------------------------------------------------

def write_study_json(storage: Path | str, study: str, body: Any) -> Path:
    """Writes ``body`` as the study's ``study.json`` as it is (a record as a user or an older
    ablate may leave it, sound or not)."""
    path = Path(storage) / study / "study.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body, indent=2, sort_keys=True))  # as ablate writes it
    return path


def trial_dirs(study_root: Path) -> list[Path]:
    return sorted(p for p in (study_root / "tune").glob("train_trial_*") if p.is_dir())


def checkpoints(trial_dir: Path) -> list[Path]:
    return sorted(trial_dir.glob("checkpoint_*"))


def results(trial_dir: Path) -> list[dict[str, Any]]:
    """Every result Tune recorded for a trial, across all attempts, in order."""
    path = trial_dir / "result.json"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def reported_epoch_with_epochs_to_go(study_root: Path, epochs: int) -> bool:
    """Tune holds a reported epoch of a trial that has epochs to go (MLflow receives epochs in
    batches, so it may lag; a stop flushes what the driver received)."""
    for trial_dir in trial_dirs(study_root):
        try:
            rows = results(trial_dir)
        except json.JSONDecodeError:  # a line half-written as we read
            continue
        if rows and rows[-1]["epoch"] < epochs:
            return True
    return False


def latest_experiment_state(study_root: Path) -> list[dict[str, Any]]:
    """The trials of Tune's newest experiment snapshot: what a restore will start from.

    Each entry is the trial's JSON with its run metadata (``last_result`` etc.) merged in.
    A snapshot being replaced reads as empty.
    """
    files = sorted(glob.glob(str(study_root / "tune" / "experiment_state-*.json")))
    if not files:
        return []
    try:
        data = json.loads(Path(files[-1]).read_text())
        trials = []
        for trial_json, metadata_json in data["trial_data"]:
            trial = json.loads(trial_json)
            trial.update(json.loads(metadata_json))
            trials.append(trial)
        return trials
    except (OSError, ValueError, KeyError):
        return []


# -- MLflow ---------------------------------------------------------------------------------

def study_tracker(tracking_uri: str, study: str, spec_hash: str) -> Any:
    """The writer ``ablate run`` uses for a study, on a new or existing store."""
    from ablate.tracking.connect import connect
    from ablate.tracking.runs import chosen_trial_runs
    from ablate.tracking.study import StudyTracker

    tracker = connect(tracking_uri)
    return StudyTracker(tracker, study, spec_hash, chosen_trial_runs(tracker, study))


def trial_runs(tracking_uri: str, study: str) -> list[Any]:
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(study)
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], "tags.`ablate.role` = 'trial'",
                              run_view_type=ViewType.ALL, max_results=1000)


def assert_study_complete(tracking_uri: str, study_root: Path, epochs: int,
                          stopped: dict[str, int] | None = None) -> None:
    """Every planned trial has exactly one FINISHED child run, holding every epoch once, with
    the values of the trial's last checkpoint; the study's parent run is FINISHED. ``stopped``
    names the trials an early-stopping scheduler stopped, with the epoch each reached."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    record = json.loads((study_root / "study.json").read_text())
    study = record["name"]
    planned = sorted(t["key"] for t in record["trials"])
    runs = trial_runs(tracking_uri, study)
    per_key = Counter(r.data.tags["ablate.trial_key"] for r in runs)
    assert sorted(per_key) == planned, f"runs {dict(per_key)} != planned trials {planned}"
    assert set(per_key.values()) == {1}, f"duplicate runs per trial: {dict(per_key)}"
    groups = record.get("groups") or {}  # fused: the trial keys each Tune trial trains
    per_trial = Counter(r.data.tags["ablate.trial_id"] for r in runs)
    sizes = sorted(len(g) for g in groups.values()) if groups else [1] * len(planned)
    assert sorted(per_trial.values()) == sizes, f"runs per Tune trial: {dict(per_trial)}"

    dirs = {d.name.split("_")[2] + "_" + d.name.split("_")[3]: d for d in trial_dirs(study_root)}
    for run in runs:
        key = run.data.tags["ablate.trial_key"]
        assert run.info.status == "FINISHED", f"{key}: run is {run.info.status}"
        assert {"auc", "ap"} <= set(run.data.metrics), f"{key}: no final auc/ap"
        last_epoch = (stopped or {}).get(key, epochs)
        assert run.data.tags.get("ablate.final_epoch") == str(last_epoch), key
        assert run.data.tags.get("ablate.stopped_early") == str(last_epoch < epochs).lower()
        trial_dir = dirs[run.data.tags["ablate.trial_id"]]
        last = checkpoints(trial_dir)[-1]
        group = json.loads((trial_dir / "params.json").read_text()).get("group_key")
        if group is not None and len(groups[group]) > 1:  # fused: a member's own subdirectory
            last = last / f"member-{groups[group].index(key)}"
        history = {row["epoch"]: row for row in json.loads((last / "history.json").read_text())}
        assert sorted(history) == list(range(1, last_epoch + 1)), f"{key}: checkpoint history"
        for metric in ("auc", "ap", "loss"):
            logged = client.get_metric_history(run.info.run_id, metric)
            steps = sorted(m.step for m in logged)
            # every epoch the trial computed the metric for (test metrics may skip epochs)
            computed = sorted(e for e, row in history.items() if metric in row)
            assert steps == computed, f"{key}: {metric} steps {steps}"
            assert last_epoch in computed or last_epoch < epochs, f"{key}: no final {metric}"
            for m in logged:  # each value is the one the trial computed for that epoch
                assert m.value == pytest.approx(history[m.step][metric], rel=1e-9), (
                    f"{key}: {metric} at epoch {m.step}")
        if "auc" in history[last_epoch]:
            assert run.data.metrics["auc"] == pytest.approx(history[last_epoch]["auc"],
                                                            rel=1e-9)
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"config.yaml", "scores", "checkpoint"} <= artifacts, (
            f"{key}: artifacts {artifacts}")
    parents = client.search_runs([runs[0].info.experiment_id], "tags.`ablate.role` = 'study'")
    assert [p.info.status for p in parents] == ["FINISHED"]


class PlantedPickle:
    """A pickle that makes the directory ``marker`` when it is unpickled: planted in a file
    that must never be unpickled, its marker shows whether it was."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)
