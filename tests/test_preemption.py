"""Preemption, a full disk and a stop during start-up: real drivers, real signals, real Ray.

SLURM and container runtimes stop a job by signalling its whole process group, not just the
driver: each ``ablate run`` here is started in a session of its own and signalled with
``os.killpg``. The study must end within seconds with the shell's status for the signal and
the one ``interrupted:`` line, leave no run RUNNING and none FINISHED that was cut short, and
the same command must then finish it exactly: with the per-trial results of the uninterrupted
smoke study.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import SMOKE, SmokeStudy
from tests.studykit import (
    ABLATE,
    TRACKING_STORES,
    Driver,
    reported_epoch_with_epochs_to_go,
    study_env,
    trial_runs,
    wait_for,
)
from tests.studykit import run as run_cli

EPOCHS = 3  # the smoke study's
FINAL = ("auc", "ap", "val_auc", "val_ap")


class Smoke:
    """The smoke study in ``directory`` (its own storage and SQLite store), started as a user's
    job: in a session of its own, so that its process group can be signalled."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.root = directory / "runs" / "smoke"
        self.tracking_uri = TRACKING_STORES.new(directory)
        self.env = study_env(Path(os.environ["ABLATE_CACHE"]))
        self.args = ["run", str(SMOKE), "--storage", str(directory / "runs"),
                     "--tracking-uri", self.tracking_uri]

    def start(self) -> Driver:
        log = self.directory / f"driver-{time.monotonic_ns()}.log"
        # A shell's background job ignores SIGINT, and its children inherit that: pytest run
        # so would start a driver deaf to Ctrl-C. A user's job takes it; so does this one (a
        # handler of pytest's own is reset to the default in the child).
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            with open(log, "w") as out:
                proc = subprocess.Popen([ABLATE, *self.args, "--quiet"], cwd=self.directory,
                                        env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
        finally:
            signal.signal(signal.SIGINT, previous)
        return Driver(proc, log)

    def stop(self, driver: Driver, signum: int) -> tuple[int, float]:
        """Signals the driver's process group; (exit status, seconds it took to exit)."""
        sent = time.monotonic()
        os.killpg(driver.pid, signum)
        status = driver.wait(timeout=120)
        return status, time.monotonic() - sent

    def mid_epoch(self) -> bool:
        """Tune holds a reported epoch of a trial with epochs to go."""
        return reported_epoch_with_epochs_to_go(self.root, EPOCHS)

    def runs(self) -> dict[str, object]:
        return {r.data.tags["ablate.trial_key"]: r
                for r in trial_runs(self.tracking_uri, "smoke")}


def assert_nothing_passes_for_a_result(study: Smoke) -> None:
    """No run RUNNING, none FINISHED short of the plan's epochs, and ``trials.json`` records
    nothing running."""
    for key, run in study.runs().items():
        assert run.info.status in ("FINISHED", "KILLED"), (key, run.info.status)
        if run.info.status == "FINISHED":
            assert run.data.tags["ablate.final_epoch"] == str(EPOCHS), key
    progress = json.loads((study.root / "trials.json").read_text())
    assert progress["driver"] == "interrupted"
    assert all(t["state"] != "running" for t in progress["trials"]), progress


def assert_interrupted_line(output: str) -> None:
    *before, last = output.strip().splitlines()
    assert all(line.startswith("synthesised ") for line in before), output
    assert last.startswith("interrupted: study 'smoke' stopped"), output
    assert last.endswith("; run the same command to resume"), output


def stopped_mid_epoch(study: Smoke, signum: int, status: int) -> Driver:
    """Starts the study, signals its process group once a trial is mid-way, and checks the
    driver exits with ``status`` within 30 s, saying it was interrupted."""
    driver = study.start()
    wait_for(study.mid_epoch, driver, 300, "a trial's first reported epoch", interval=0.1)
    got, seconds = study.stop(driver, signum)
    assert got == status, driver.output()
    assert seconds < 30, seconds
    assert_interrupted_line(driver.output())
    return driver


def assert_same_results(study: Smoke, reference: SmokeStudy,
                        result: subprocess.CompletedProcess | None = None) -> None:
    """The study finished (run again unless ``result`` is given) with each trial's final
    metrics those of the uninterrupted one."""
    if result is None:
        result = run_cli(study.args, study.directory, study.env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6/6 trials done, 0 failed" in result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    expected = {r.data.tags["ablate.trial_key"]: r
                for r in trial_runs(reference.tracking_uri, "smoke")}
    runs = study.runs()
    assert runs.keys() == expected.keys()
    for key, run in runs.items():
        assert run.info.status == "FINISHED", key
        for metric in FINAL:
            assert run.data.metrics[metric] == pytest.approx(
                expected[key].data.metrics[metric], rel=1e-9, abs=1e-12), (key, metric)


@pytest.mark.faults
@pytest.mark.slow
def test_sigterm_to_the_process_group_mid_study(tmp_path: Path, smoke_study: SmokeStudy
                                                ) -> None:
    """What SLURM's preemption sends: the driver stops the study and records it, although
    every process of its group (Ray's too, were they in it) got the signal."""
    study = Smoke(tmp_path)
    driver = stopped_mid_epoch(study, signal.SIGTERM, 143)
    assert " with " in driver.output().splitlines()[-1]  # Tune ran: it counts the trials
    assert any(r.info.status == "KILLED" for r in study.runs().values())
    assert_nothing_passes_for_a_result(study)
    assert_same_results(study, smoke_study)


@pytest.mark.faults
@pytest.mark.slow
def test_sigint_to_the_process_group_mid_study(tmp_path: Path) -> None:
    study = Smoke(tmp_path)
    stopped_mid_epoch(study, signal.SIGINT, 130)
    assert_nothing_passes_for_a_result(study)


def _ray_starting(driver: Driver) -> bool:
    """The driver has started a process of its local Ray (its GCS comes first)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == driver.pid:  # the parent's pid
            return True
    return False


@pytest.mark.faults
@pytest.mark.slow
@pytest.mark.parametrize("signum, expected", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stop_while_ray_starts(tmp_path: Path, signum: int, expected: int) -> None:
    """Not Ray's exit (status 15 or 1, no word), nor click's ``Aborted!``: the study's line."""
    study = Smoke(tmp_path)
    driver = study.start()
    wait_for(lambda: _ray_starting(driver), driver, 120, "Ray's first process", interval=0.01)
    status, seconds = study.stop(driver, signum)
    assert status == expected, driver.output()
    assert seconds < 30, seconds
    assert_interrupted_line(driver.output())
    assert "Traceback" not in driver.output()
    assert all(r.info.status != "RUNNING" for r in study.runs().values())


@pytest.mark.faults
@pytest.mark.slow
def test_a_stop_as_tune_starts_counts_only_what_is_done(tmp_path: Path) -> None:
    """Trials Tune created but never ran are no phantom ``cfg-...`` rows, and not done."""
    study = Smoke(tmp_path)
    driver = study.start()
    wait_for(lambda: (study.root / "tune").is_dir(), driver, 300, "Tune's experiment",
             interval=0.01)
    status, _ = study.stop(driver, signal.SIGTERM)
    assert status == 143, driver.output()
    assert_interrupted_line(driver.output())
    finished = [r for r in study.runs().values() if r.info.status == "FINISHED"]
    last = driver.output().strip().splitlines()[-1]
    assert " with " not in last or f" with {len(finished)}/6 trials done" in last, last
    planned = {t["key"] for t in json.loads((study.root / "study.json").read_text())["trials"]}
    progress = json.loads((study.root / "trials.json").read_text())
    assert {t["key"] for t in progress["trials"]} <= planned, progress
    assert_nothing_passes_for_a_result(study)


@pytest.mark.faults
@pytest.mark.slow
def test_a_second_driver_is_refused_before_ray_starts(tmp_path: Path) -> None:
    study = Smoke(tmp_path)
    first = study.start()
    try:
        wait_for(lambda: (study.root / "study.json").exists(), first, 300, "study.json")
        sent = time.monotonic()
        second = run_cli([*study.args, "--quiet"], study.directory, study.env, timeout=120)
        seconds = time.monotonic() - sent
    finally:
        study.stop(first, signal.SIGTERM)
    assert second.returncode == 1
    assert second.stderr.strip() == (f"error: study at {study.root} is being run by another "
                                     f"process; wait for it or watch it with `ablate status`")
    assert seconds < 15, seconds  # the time to start Python, not to start Ray


def test_a_refused_study_leaves_no_store_and_no_lock(tmp_path: Path) -> None:
    """Refused after the tracking store was opened (the dataset is no feature store): no new
    SQLite store, no study directory, no lock file."""
    import yaml

    spec = yaml.safe_load(SMOKE.read_text())
    spec["dataset"] = str(tmp_path / "nostore")
    (tmp_path / "nostore").mkdir()
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    env = study_env(Path(os.environ["ABLATE_CACHE"]))
    result = run_cli(["run", "spec.yaml", "--storage", str(tmp_path / "runs")], tmp_path, env)
    assert result.returncode == 1
    assert result.stderr.strip().startswith(f"error: dataset: {tmp_path / 'nostore'} is not a "
                                            f"feature store"), result.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["nostore", "spec.yaml"]


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 6 MB tmpfs: the storage fills up while the smoke study trains (needs root)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if shutil.which("mount") is None or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)],
            capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.faults
@pytest.mark.slow
def test_a_full_disk_is_one_line_and_the_rerun_is_exact(tmp_path: Path, small_disk: Path,
                                                         smoke_study: SmokeStudy) -> None:
    study = Smoke(tmp_path)
    study.root = small_disk / "runs" / "smoke"
    study.args[study.args.index("--storage") + 1] = str(small_disk / "runs")
    result = run_cli([*study.args, "--quiet"], tmp_path, study.env, timeout=600)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if not line.startswith("synthesised ")]
    assert lines[-1].startswith(f"error: cannot write {study.root}/"), result.stderr
    assert lines[-1].endswith(" (No space left on device); free space there (or fix the "
                              "storage) and run the same command to resume")
    # Tune's failed trials say so in one line each, without Ray's traceback.
    assert "Traceback" not in result.stderr, result.stderr
    assert all("No space left on device" in line for line in lines), result.stderr
    assert not list(study.root.glob(".*.tmp-*"))
    statuses = {key: run.info.status for key, run in study.runs().items()}
    assert set(statuses.values()) <= {"FINISHED", "KILLED"}, statuses
    subprocess.run(["mount", "-o", "remount,size=300m", str(small_disk)], check=True)
    rerun = run_cli(study.args, study.directory, study.env, timeout=600)
    if rerun.returncode == 1:
        # Tune's own snapshot (or a trial's params.json) may have been cut short by the full
        # disk: then the study is refused in one line, never run twice.
        line, = rerun.stderr.strip().splitlines()
        assert line.startswith(f"error: study 'smoke': Ray's state under {study.root}/tune "
                               f"is unreadable"), line
        return
    assert_same_results(study, smoke_study, rerun)


@pytest.mark.parametrize("cause, full", [
    (OSError(errno.ENOSPC, "No space left on device"), True),
    (OSError(errno.EACCES, "Permission denied"), False),
    (ValueError("the trial's own bug"), False),
])
def test_a_trial_that_failed_on_a_full_disk_is_told_from_its_own_failure(
        tmp_path: Path, cause: Exception, full: bool) -> None:
    """Tune pickles a failed trial's error (Ray's wrapper around the trainable's exception)
    beside its driver-side files; a full disk found there stops the study, never marks the
    trial FAILED."""
    import cloudpickle
    from ray.exceptions import RayTaskError

    from ablate.engine.callback import _full_disk

    wrapped = RayTaskError("train_trial", "Traceback ...", cause)
    (tmp_path / "error.pkl").write_bytes(cloudpickle.dumps(wrapped))
    trial = SimpleNamespace(pickled_error_file=str(tmp_path / "error.pkl"))
    found = _full_disk(trial)  # type: ignore[arg-type]
    assert (found is not None) == full
    if full:
        assert found.errno == errno.ENOSPC
    assert _full_disk(SimpleNamespace(pickled_error_file=None)) is None  # type: ignore[arg-type]


def test_a_restored_trial_whose_checkpoint_tune_deleted_restores_from_its_newest(
        tmp_path: Path) -> None:
    """A driver killed after Tune deleted checkpoint 0 (at checkpoint 2) but before its next
    snapshot: the snapshot restores the trial from checkpoint 0. Tune's checkpoint manager is
    pointed at the newest one on the storage, with the result it was reported with."""
    import pyarrow.fs
    from ray.train import CheckpointConfig
    from ray.train._internal.checkpoint_manager import _CheckpointManager
    from ray.train._internal.session import _TrainingResult
    from ray.tune import Checkpoint

    from ablate.engine.callback import forget_deleted_checkpoints

    root = tmp_path / "trial"
    for name in ("checkpoint_000001", "checkpoint_000002"):
        (root / name).mkdir(parents=True)
    rows = [{"epoch": e, "training_iteration": e, "checkpoint_dir_name": f"checkpoint_00000{e - 1}"}
            for e in (1, 2, 3)]
    (root / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    fs = pyarrow.fs.LocalFileSystem()
    manager = _CheckpointManager(CheckpointConfig(num_to_keep=2))
    manager.register_checkpoint(_TrainingResult(
        Checkpoint(str(root / "checkpoint_000000"), fs), rows[0]))  # the snapshot's, deleted
    trial = SimpleNamespace(run_metadata=SimpleNamespace(checkpoint_manager=manager),
                            storage=SimpleNamespace(storage_filesystem=fs,
                                                    trial_fs_path=str(root)))
    forget_deleted_checkpoints(trial)  # type: ignore[arg-type]
    latest = manager.latest_checkpoint_result
    assert latest.checkpoint.path == str(root / "checkpoint_000002")
    assert latest.metrics["epoch"] == 3 and latest.metrics["training_iteration"] == 3
    assert [r.checkpoint.path for r in manager.best_checkpoint_results] == [latest.checkpoint.path]
