"""Changed data: a study, a tracked run or a checkpoint trained on one feature store is never
continued, adopted or reported on another.

Real parts throughout: stores written by ``ablate data synth`` (another seed gives other
features under the same path), real ``ablate`` drivers stopped with SIGINT, real Ray and
SQLite MLflow stores. Each refusal is one line naming the store and both fingerprints (first
12 hex digits of the features' SHA-256) and comes before anything is written.
"""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.studykit import (
    TRACKING_STORES,
    run,
    start,
    study_env,
    trial_runs,
    wait_for,
)

EPOCHS = 3


def synth(store: Path, seed: int, env: dict[str, str]) -> str:
    """(Re)generates the synthetic benchmark at ``store`` with ``seed``; its short
    fingerprint."""
    done = run(["data", "synth", "--out", str(store), "--seed", str(seed), "--overwrite"],
               store.parent, env)
    assert done.returncode == 0, done.stderr
    manifest = json.loads((store / "manifest.json").read_text())
    return manifest["files"]["features.parquet"]["sha256"][:12]


def write_study(directory: Path, name: str, store: Path, epochs: int = EPOCHS,
                seeds: tuple[int, ...] = (0, 1), clav: bool = True) -> Path:
    """A leave-one-out of CLAV and CoMo on ``store`` (6 trials; 2 without the CLAV axis)."""
    axes = {"model.como.type": ["none"], **({"model.clav.type": ["none"]} if clav else {})}
    spec = {"name": name, "dataset": str(store), "base": "full",
            "overrides": {"train.epochs": epochs},
            "ablation": {"design": "leave_one_out", "axes": axes},
            "seeds": list(seeds), "metric": "val_auc", "mode": "max",
            "resources": {"cpu": 1, "gpu": 0}, "max_concurrent": 2}
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def files_of(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root``: relative path -> (size, mtime): what a refusal must leave."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def tracked(uri: str, study: str) -> dict[str, Any]:
    """Every run of the study's experiment as MLflow holds it (any state, any role)."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(study)
    assert experiment is not None
    return {r.info.run_id: (r.info.status, r.info.end_time, dict(r.data.tags),
                            dict(r.data.params), dict(r.data.metrics),
                            [(m.step, m.value) for m in
                             client.get_metric_history(r.info.run_id, "loss")])
            for r in client.search_runs([experiment.experiment_id],
                                        run_view_type=ViewType.ALL, max_results=1000)}


def refusal(done: Any) -> str:
    """The one line a refused ``ablate`` printed (exit 1, nothing else on either stream)."""
    assert done.returncode == 1, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and done.stdout.strip() == "", (done.stdout, done.stderr)
    assert lines[0].startswith("error: ")
    return lines[0]


def _done_trials(root: Path) -> int:
    try:
        progress = json.loads((root / "trials.json").read_text())
    except (OSError, ValueError):
        return 0
    return sum(t["state"] == "done" for t in progress["trials"])


class Stopped:
    """Finding 3, set up: a 6-trial study on a store, stopped with SIGINT after 2 trials were
    done, its ``study.json`` deleted and its store regenerated with another seed."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.env = study_env(directory / "cache")
        self.store = directory / "store"
        self.old = synth(self.store, 1, self.env)
        self.spec = write_study(directory, "mixed", self.store)
        self.root = directory / "runs" / "mixed"
        self.uri = TRACKING_STORES.new(directory)
        driver = start(self.args(), directory, self.env)
        wait_for(lambda: _done_trials(self.root) >= 2, driver, 600, "2 trials done")
        driver.proc.send_signal(signal.SIGINT)
        self.status = driver.wait(timeout=120)
        self.output = driver.output()
        self.record = json.loads((self.root / "study.json").read_text())
        (self.root / "study.json").unlink()
        self.new = synth(self.store, 2, self.env)

    def args(self, uri: str | None = None, storage: str | None = None) -> list[str]:
        return ["run", str(self.spec), "--storage", storage or str(self.directory / "runs"),
                "--tracking-uri", uri or self.uri]


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory) -> Stopped:
    return Stopped(tmp_path_factory.mktemp("mixed"))


@pytest.mark.faults
@pytest.mark.slow
def test_a_stopped_study_rerun_on_regenerated_data_is_refused(stopped: Stopped) -> None:
    """Finding 3: stop, delete study.json, regenerate the store with another seed, rerun: was
    exit 0 with 2 trials of the old data and 4 of the new; now refused in one line, with no
    trial trained on the new data and MLflow as it was."""
    assert stopped.status == 130, stopped.output
    assert stopped.old != stopped.new
    assert stopped.record["dataset_sha256"].startswith(stopped.old)
    runs = trial_runs(stopped.uri, "mixed")
    assert runs and {r.data.tags["ablate.data_sha256"][:12] for r in runs} == {stopped.old}
    assert 2 <= sum(r.info.status == "FINISHED" for r in runs) < 6
    before, mlflow_before = files_of(stopped.root), tracked(stopped.uri, "mixed")

    line = refusal(run(stopped.args(), stopped.directory, stopped.env))

    assert line.startswith("error: study 'mixed': ") and " MLflow trial runs (" in line
    assert f"the store {stopped.store} holds now" in line
    assert f"(features sha256 {stopped.old}, now {stopped.new})" in line
    assert line.endswith("--name NEW_NAME")
    assert files_of(stopped.root) == before  # no study.json, no checkpoint, no Ray state
    assert tracked(stopped.uri, "mixed") == mlflow_before
    checkpoints = [json.loads(p.read_text())["sha256"][:12]
                   for p in stopped.root.glob("tune/*/checkpoint_*/data.json")]
    assert checkpoints and set(checkpoints) == {stopped.old}  # none of the new data


@pytest.mark.faults
@pytest.mark.slow
@pytest.mark.parametrize("as_uri", [False, True], ids=["path", "file-uri"])
def test_without_study_json_or_mlflow_the_checkpoints_refuse(stopped: Stopped, tmp_path: Path,
                                                             as_uri: bool) -> None:
    """The same study against a fresh tracking store: Tune would restore its trials from
    checkpoints of the old data; the driver reads their fingerprints first (storage given as
    a path, or as a URI, read through pyarrow as s3:// would be)."""
    before = files_of(stopped.root)
    storage = stopped.directory / "runs"
    root = f"file://{stopped.root}" if as_uri else str(stopped.root)

    line = refusal(run(stopped.args(TRACKING_STORES.new(tmp_path),
                                    f"file://{storage}" if as_uri else str(storage)),
                       stopped.directory, stopped.env))

    # the trials done and those cut short after their first checkpoint
    tune = re.escape(f"{root}/tune")
    assert re.search(rf"the checkpoints of [2-6] Tune trial\(s\) under {tune} were trained",
                     line), line
    assert f"(features sha256 {stopped.old}, now {stopped.new})" in line
    assert files_of(stopped.root) == before


@pytest.mark.faults
@pytest.mark.slow
def test_with_study_json_the_record_refuses(stopped: Stopped) -> None:
    path = stopped.root / "study.json"
    path.write_text(json.dumps(stopped.record))
    try:
        before = files_of(stopped.root)
        line = refusal(run(stopped.args(), stopped.directory, stopped.env))
        after = files_of(stopped.root)
    finally:
        path.unlink()
    assert after == before
    assert "study.json records that it started on other data than the store" in line
    assert f"(features sha256 {stopped.old}, now {stopped.new})" in line


@pytest.mark.faults
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`get_checkpoint` is meant")  # called outside Tune here
def test_a_trial_offered_a_checkpoint_of_other_data_refuses(stopped: Stopped) -> None:
    """The trainable itself (where the driver cannot list checkpoints, a URI storage): the
    newest persisted checkpoint of its trial is of the old data, so it refuses, not continues."""
    from ablate.engine.trainable import STUDY_REMEDY, train_trial
    from ablate.errors import AblateError
    from ablate.study.plan import build_plan
    from ablate.study.spec import load_spec

    plan = build_plan(load_spec(stopped.spec))
    unit, _ = plan.units(["base/seed0"])
    with pytest.raises(AblateError) as refused:
        train_trial({unit: "base/seed0"}, plan, str(stopped.store), str(stopped.root / "tune"))
    assert str(refused.value) == (
        f"trial base/seed0: holds a checkpoint trained on other data than the store "
        f"{stopped.store} (features sha256 {stopped.old} in the checkpoint, {stopped.new} in "
        f"the store); {STUDY_REMEDY}")
    with pytest.raises(AblateError, match=r"^trial base/seed0: the store .* on this node holds "
                                          r"other data than the driver's"):
        train_trial({unit: "base/seed0"}, plan, str(stopped.store), str(stopped.root / "tune"),
                    data_sha256="0" * 64)


@pytest.mark.faults
@pytest.mark.slow
def test_adopting_finished_runs_of_other_data_is_refused(tmp_path: Path) -> None:
    """Ray's state lost (another --storage): finished runs are adopted from MLflow, but not
    runs trained on other data than the store holds now."""
    env = study_env(tmp_path / "cache")
    store = tmp_path / "store"
    old = synth(store, 1, env)
    spec = write_study(tmp_path, "adopt", store, epochs=1, seeds=(0,), clav=False)
    uri = TRACKING_STORES.new(tmp_path)

    def args(storage: str) -> list[str]:
        return ["run", str(spec), "--storage", str(tmp_path / storage), "--tracking-uri", uri]

    first = run(args("runs"), tmp_path, env)
    assert first.returncode == 0, first.stderr
    same = run(args("elsewhere"), tmp_path, env)  # same data: adopted, nothing trained
    assert same.returncode == 0 and "2 finished trial(s) adopted from MLflow" in same.stderr
    new = synth(store, 2, env)
    before = tracked(uri, "adopt")

    line = refusal(run(args("other"), tmp_path, env))

    assert line == (
        f"error: study 'adopt': 2 of its MLflow trial runs (base/seed0, como=none/seed0) were "
        f"trained on other data than the store {store} holds now (features sha256 {old}, now "
        f"{new}); restore the data it started on, or run the spec as a new study with --name "
        f"NEW_NAME")
    assert tracked(uri, "adopt") == before
    assert not (tmp_path / "other" / "adopt" / "study.json").exists()


def _train(out: Path, store: Path, env: dict[str, str], epochs: int = 1) -> Any:
    # A constant lr, so that a finished trial may grow its epochs.
    return run(["train", "full", "--out", str(out), "--data", str(store), "--epochs",
                str(epochs), "--set", "train.lr_schedule=constant"], out.parent, env)


@pytest.mark.faults
@pytest.mark.slow
def test_train_out_of_other_data_is_refused(tmp_path: Path) -> None:
    """Finding 4: ``ablate train --out`` of a trial trained on another store printed that
    trial's AUC; now refused, and the output directory is left as it was."""
    env = study_env(tmp_path / "cache")
    first, other = tmp_path / "first", tmp_path / "other"
    old, new = synth(first, 1, env), synth(other, 2, env)
    out = tmp_path / "tr"
    assert _train(out, first, env).returncode == 0
    assert json.loads((out / "data.json").read_text())["sha256"].startswith(old)
    before = files_of(out)

    line = refusal(_train(out, other, env))

    assert line == (f"error: {out}: holds a checkpoint trained on other data than the store "
                    f"{other} (features sha256 {old} in the checkpoint, {new} in the store); "
                    f"use another output directory, or the store it was trained on")
    assert files_of(out) == before
    again = _train(out, first, env, epochs=2)  # its own store: continues
    assert again.returncode == 0 and again.stdout.startswith("epoch   2/2"), again.stdout


def test_a_checkpoint_older_than_fingerprints_is_accepted(tmp_path: Path) -> None:
    """A checkpoint written before checkpoints recorded their data cannot be checked: it
    resumes as it did before (the study's records still guard a study)."""
    import torch

    env = study_env(tmp_path / "cache")
    first, other = tmp_path / "first", tmp_path / "other"
    synth(first, 1, env)
    synth(other, 2, env)
    out = tmp_path / "tr"
    assert _train(out, first, env).returncode == 0
    for path in out.glob("checkpoint*.pt"):
        state = torch.load(path, weights_only=True)
        del state["data_sha256"]
        torch.save(state, path)
    resumed = _train(out, other, env, epochs=2)
    assert resumed.returncode == 0 and resumed.stdout.startswith("epoch   2/2"), resumed.stdout
