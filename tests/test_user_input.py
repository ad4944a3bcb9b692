"""What users hand the tool, and what it must answer: one plain line and a non-zero exit, before
anything is written, for values that parse but cannot train, files that are not what they
should be, and study records that are not records."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from ablate.cli import cli
from tests.conftest import run_cli
from tests.studykit import study_tracker, write_spec, write_study_json


def _invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


def _one_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def _spec_file(directory: Path, **changes: object) -> Path:
    spec = {"name": "vals", "base": "full", "seeds": [0],
            "ablation": {"design": "leave_one_out", "axes": {"model.como.type": ["none"]}}}
    spec.update(changes)
    path = directory / "vals.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


# -- values that parse but cannot train -------------------------------------------------------

@pytest.mark.parametrize(("overrides", "message"), [
    ({"train.lr": math.nan}, "base: train.lr: expected a finite number, got nan"),
    ({"train.lr": math.inf}, "base: train.lr: expected a finite number, got inf"),
    ({"train.lr": 0.0}, "base: train.lr: must be in (0, 1], got 0.0"),
    ({"train.lr": 5.0}, "base: train.lr: must be in (0, 1], got 5.0"),
    ({"train.weight_decay": -1}, "base: train.weight_decay: must be in [0, 1], got -1.0"),
    ({"train.epochs": 10**9}, "base: train.epochs: must be in [1, 100000], got 1000000000"),
    ({"train.threads": -2}, "base: train.threads: must be in [0, 1024], got -2"),
    ({"model.clav.margin": math.inf}, "base: model.clav.margin: expected a finite number, got inf"),
    ({"model.clav.margin": 1e9},
     "base: model.clav.margin: must be in [-1e+06, 1e+06], got 1000000000.0"),
    ({"loss.rd_weight": math.nan}, "base: loss.rd_weight: expected a finite number, got nan"),
    ({"train.device": "gpu"}, "base: train.device: expected one of auto, cpu, cuda, got 'gpu'"),
    ({"train.batch_size": 33},
     "base: train.batch_size: must be even (half normal, half abnormal), got 33"),
    ({"train.val_fraction": 1.0}, "base: train.val_fraction: must be in [0, 1), got 1.0"),
    ({"train.lr": "1e-3x"}, "base: train.lr: expected float, got str ('1e-3x')"),
])
def test_values_that_cannot_train_fail_the_dry_run(tmp_path: Path, overrides: dict,
                                                    message: str) -> None:
    result = _invoke("run", str(_spec_file(tmp_path, overrides=overrides)), "--dry-run")
    assert _one_line(result) == f"error: {message}"


@pytest.mark.parametrize(("space", "message"), [
    ({"train.lr": {"loguniform": [1e-4, 10.0]}},
     "search.space.train.lr=10.0: train.lr: must be in (0, 1], got 10.0"),
    ({"model.clav.margin": {"uniform": [0.5, math.inf]}},
     "search.space.model.clav.margin.uniform: expected a finite number, got inf"),
    ({"train.weight_decay": {"values": [0.0, -0.5]}},
     "search.space.train.weight_decay=-0.5: train.weight_decay: must be in [0, 1], got -0.5"),
])
def test_every_point_a_search_may_sample_is_checked(tmp_path: Path, space: dict,
                                                    message: str) -> None:
    path = _spec_file(tmp_path, ablation=None, search={"num_samples": 4, "space": space})
    assert _one_line(_invoke("run", str(path), "--dry-run")) == f"error: {message}"


def test_resources_must_be_finite(tmp_path: Path) -> None:
    path = _spec_file(tmp_path, resources={"cpu": math.inf})
    assert _one_line(_invoke("run", str(path), "--dry-run")).startswith(
        "error: resources.cpu: expected a finite number, got inf")


@pytest.mark.parametrize(("option", "message"), [
    ("train.lr=.nan", "error: train.lr: expected a finite number, got nan"),
    ("train.lr=1e999", "error: train.lr: expected a finite number, got inf"),
    ("train.weight_decay=-1", "error: train.weight_decay: must be in [0, 1], got -1.0"),
    ("train.amp=1", "error: train.amp: expected bool, got int (1)"),
])
def test_set_values_that_cannot_train_are_one_line(tmp_path: Path, option: str,
                                                   message: str) -> None:
    result = run_cli("train", "full", "--set", option, "--out", str(tmp_path / "out"),
                     cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip() == message
    assert not (tmp_path / "out").exists()


# -- files that are not what they should be ---------------------------------------------------

def test_a_spec_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: latin1\nbase: full\ndescription: caf\xe9\n")
    result = run_cli("run", str(path), "--dry-run", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == (f"error: {path}: line 3: not UTF-8 text (byte 0xe9); save the "
                             f"file as UTF-8\n")


def test_a_spec_path_that_is_a_directory_says_so(tmp_path: Path) -> None:
    assert _one_line(_invoke("run", str(tmp_path), "--dry-run")) == (
        f"error: {tmp_path}: is a directory; give a study file (search_spaces/*.yaml)")


@pytest.mark.parametrize("body", ["{}", "[]", '{"name": "rec", "spec_hash": 3, "trials": []}'])
def test_a_study_record_that_is_not_one_is_one_line(tmp_path: Path, body: str) -> None:
    spec = write_spec(tmp_path, "rec")
    record = tmp_path / "runs" / "rec" / "study.json"
    record.parent.mkdir(parents=True)
    record.write_text(body)
    expected = (f"error: {record} is not a study record (expected a JSON object with name, "
                f"spec_hash, trials); move it away to start the study again")
    status = _invoke("status", "rec", "--storage", str(tmp_path / "runs"))
    assert _one_line(status) == expected
    run = _invoke("run", str(spec), "--storage", str(tmp_path / "runs"), "--tracking-uri",
                  f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert _one_line(run) == expected


# -- refusals leave nothing behind --------------------------------------------------------------

def test_a_changed_spec_refused_by_mlflow_writes_no_study_directory(tmp_path: Path) -> None:

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    study_tracker(uri, "changed", "0123456789ab")  # the study, under another spec
    spec = write_spec(tmp_path, "changed")
    fresh = tmp_path / "fresh"
    result = _invoke("run", str(spec), "--storage", str(fresh), "--tracking-uri", uri)
    line = _one_line(result)
    assert line.startswith("error: MLflow experiment 'changed' holds study runs of another spec "
                           "(hash 0123456789ab, now ")
    assert line.endswith("); start a new study with --name NEW_NAME")
    assert not fresh.exists()


def test_status_of_a_search_counts_its_planned_trials(tmp_path: Path) -> None:

    write_study_json(str(tmp_path), "hpo", {
        "name": "hpo", "spec_hash": "abc", "trials": [], "dataset": "synthetic",
        "spec": {"search": {"algorithm": "optuna", "num_samples": 16, "space": {}},
                 "seeds": [0, 1]}})
    result = _invoke("status", "hpo", "--storage", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"study 'hpo' at {tmp_path}/hpo (spec abc, search of 16 samples x 2 seed(s) = 32 "
        f"planned trials; dataset synthetic)",
        "no progress recorded yet (ablate run records it in trials.json as trials run)"]


def test_a_new_tracking_store_prints_no_mlflow_chatter(tmp_path: Path) -> None:
    """MLflow announces a new SQLite database at INFO; a user sees only the error that
    matters (the real entry point: logging is configured when MLflow is imported)."""
    spec = write_spec(tmp_path, "chatter")
    spec.write_text(spec.read_text().replace("dataset: synthetic",
                                             f"dataset: {tmp_path / 'nostore'}"))
    db = tmp_path / "new.db"
    result = run_cli("run", str(spec), "--storage", str(tmp_path / "runs"), "--tracking-uri",
                     f"sqlite:///{db}", cwd=tmp_path)
    assert not db.exists()  # created quietly, and removed with the refused study
    assert result.returncode == 1
    assert result.stderr == (f"error: dataset: {tmp_path / 'nostore'} is not a feature store "
                             f"(no manifest.json); create one with `ablate data import` or "
                             f"`ablate data synth`\n")
    assert not json.dumps(result.stdout).count("INFO")
