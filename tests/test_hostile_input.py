"""Hostile input and damaged records: each is one short line on stderr, exit 1, and nothing
written, however the file was made to hurt.

- YAML alias bombs (nine levels of ten aliases: a billion values from a few hundred bytes) in
  a spec's seeds, description or axis values, a trial config and a ``--set`` value are refused
  before they expand: fast, in little memory, with a short line.
- Counts at absurd sizes (seeds, samples, epochs, seed values, concurrency) fail validation.
- The study's records (``study.json``, ``trials.json``, ``rungs.json``), edited or damaged,
  stop ``ablate status``, ``ablate run`` and ``ablate report`` with a line naming the file.
- An unreachable ``--address`` is one line within 30 s; ``ray://`` without Ray Client says what
  to install.
- Ray's ``tuner.pkl`` truncated under a stopped study: the finished trials are adopted from
  MLflow and the study finishes, each trial once. A finished study reruns without unpickling it.

Records are written by the project's own writers (``StudyDir``, ``StudyRecord.of_plan``) or by
real studies run on a local Ray with a SQLite MLflow store; every command runs as a subprocess
of the installed ``ablate`` entry point.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from ablate.cli import cli
from tests.studykit import (
    ABLATE,
    TRACKING_STORES,
    PlantedPickle,
    assert_ran,
    assert_study_complete,
    run_in_process,
    start,
    study_env,
    trial_runs,
    wait_for,
    write_spec,
)
from tests.studykit import run as run_ablate

NAME = "hostile"
SHORT_LINE = 400  # characters: an error line that names a file and a remedy fits


def _env() -> dict[str, str]:
    """A subprocess's environment: the session's data cache, no ambient Ray or MLflow."""
    return study_env(Path(os.environ["ABLATE_CACHE"]))


def _one_line(result: subprocess.CompletedProcess, *names: str) -> str:
    """The single stderr line of a refused command (exit 1), naming each of ``names``."""
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    line = lines[0]
    assert line.startswith("error: ") and len(line) < SHORT_LINE * 2, line[:3000]
    for name in names:
        assert name in line, line
    return line


def _spec(directory: Path, **changes: Any) -> Path:
    """A fused leave-one-out study with ASHA (2 variants x 2 seeds, 4 epochs): one of each
    record kind (``rungs.json`` too)."""
    spec = {"name": NAME, "dataset": "synthetic", "base": "full",
            "overrides": {"train.epochs": 4},
            "ablation": {"design": "leave_one_out", "axes": {"model.como.type": ["none"]}},
            "seeds": [0, 1], "metric": "val_auc", "mode": "max",
            "resources": {"cpu": 1, "gpu": 0}, "max_concurrent": 2, "fuse": "seeds",
            "fuse_members": 2, "scheduler": {"type": "asha", "grace_period": 2,
                                             "reduction_factor": 2}}
    spec.update(changes)
    path = directory / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


# -- YAML alias bombs ------------------------------------------------------------------------

def _bomb(levels: int = 9) -> list[str]:
    """Flow YAML items: ``&a0 [1 x 10]`` then ``&aN [*aN-1 x 10]``: 10**levels values."""
    items = ["&a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    items += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels + 1)]
    return items


def _bomb_spec(directory: Path, where: str) -> Path:
    """A valid spec whose ``where`` holds the bomb (its anchors defined in place)."""
    text = _spec(directory).read_text()
    bomb = "[" + ", ".join(_bomb()) + "]"
    if where == "seeds":
        text = text.replace("seeds:\n- 0\n- 1\n", f"seeds: {bomb}\n")
    elif where == "description":
        text = text.replace("dataset:", f"description: {bomb}\ndataset:")
    else:  # an axis's values
        text = text.replace("model.como.type:\n    - none", f"model.como.type: {bomb}")
    assert bomb in text
    path = directory / f"bomb-{where}.yaml"
    path.write_text(text)
    return path


def _run_measured(args: list[str], cwd: Path, timeout: float = 60) -> tuple[
        subprocess.CompletedProcess, int]:
    """``ablate ARGS`` and its peak resident memory in KiB (from the kernel's accounting)."""
    with open(cwd / "out.log", "w") as out, open(cwd / "err.log", "w") as err:
        proc = subprocess.Popen([ABLATE, *args], cwd=cwd, env=_env(), stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while (waited := os.wait4(proc.pid, os.WNOHANG))[0] == 0:
            if time.monotonic() > deadline:
                proc.kill()
                os.wait4(proc.pid, 0)
                pytest.fail(f"ablate {args[0]} still ran after {timeout:.0f} s")
            time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(waited[1])
    result = subprocess.CompletedProcess(args, proc.returncode, (cwd / "out.log").read_text(),
                                         (cwd / "err.log").read_text())
    return result, waited[2].ru_maxrss


@pytest.mark.parametrize("where", ["seeds", "description", "axis values"])
def test_an_alias_bomb_in_a_spec_is_refused_fast_in_one_short_line(tmp_path: Path,
                                                                   where: str) -> None:
    path = _bomb_spec(tmp_path, where)
    result, peak_kib = _run_measured(["run", str(path), "--dry-run"], tmp_path)
    line = _one_line(result, str(path), "expands to more than 100,000 values")
    assert len(line) < SHORT_LINE
    assert peak_kib < 1024 * 1024, f"{peak_kib} KiB"  # the unbounded load took 1.4-3.3 GB


def test_an_alias_bomb_in_a_trial_config_or_a_set_value_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "bomb.yaml"
    config.write_text(f"model: {{como: {{type: como, relations: [{', '.join(_bomb())}]}}}}\n")
    result, peak_kib = _run_measured(["train", str(config), "--out", str(tmp_path / "a")],
                                     tmp_path)
    assert len(_one_line(result, str(config), "expands to more than")) < SHORT_LINE
    assert peak_kib < 1024 * 1024
    value = "[" + ", ".join(_bomb()) + "]"
    result, peak_kib = _run_measured(["train", "full", "--set", f"model.como.relations={value}",
                                      "--out", str(tmp_path / "b")], tmp_path)
    assert _one_line(result, "--set model.como.relations", "expands to more than")
    assert peak_kib < 1024 * 1024
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize(("text", "problem"), [
    ("name: deep\nbase: full\ndescription: " + "[" * 40 + "]" * 40 + "\n",
     "nests deeper than 32 levels"),
    ("name: loop\nbase: full\ndescription: &a [1, *a]\n", "has a recursive alias"),
])
def test_deep_or_recursive_yaml_is_one_line(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "odd.yaml"
    path.write_text(text)
    _one_line(run_ablate(["run", str(path), "--dry-run"], tmp_path, _env()), str(path), problem)


def test_a_few_anchors_and_aliases_still_work(tmp_path: Path) -> None:
    """Bounded, not banned: a spec may share values through an anchor."""
    path = _spec(tmp_path)
    path.write_text(path.read_text().replace(
        "model.como.type:\n    - none", "model.como.type: &off [none]\n    model.clav.type: *off"))
    result = CliRunner().invoke(cli, ["run", str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "3 variants x 2 seed(s) = 6 trials" in result.stdout


# -- extreme counts ----------------------------------------------------------------------------

SEARCH = {"algorithm": "random", "num_samples": 4,
          "space": {"train.lr": {"loguniform": [1e-4, 1e-2]}}}


@pytest.mark.parametrize(("changes", "message"), [
    ({"seeds": 1_000_000_000}, "seeds: must be <= 1000, got 1000000000"),
    ({"seeds": [99999999999999999999999]},
     "seeds[0]: must be <= 2147483647, got 99999999999999999999999"),
    ({"seeds": list(range(1001))}, "seeds: at most 1000 seeds, got 1001"),
    ({"seeds": {"initial": 6, "max": 10**12}}, "seeds.max: must be <= 1000, got 1000000000000"),
    ({"fuse": "none", "fuse_members": "auto", "scheduler": "none", "ablation": None,
      "search": SEARCH, "confirm": {"top_k": 2, "seeds": 10**9}},
     "confirm.seeds: must be <= 1000, got 1000000000"),
    ({"fuse": "none", "fuse_members": "auto", "scheduler": "none", "ablation": None,
      "search": {**SEARCH, "num_samples": 10**12}},
     "search.num_samples: must be <= 10000, got 1000000000000"),
    ({"overrides": {"train.epochs": 10**12}},
     "base: train.epochs: must be in [1, 100000], got 1000000000000"),
    ({"overrides": {"model.embed.hidden": 10**12}},
     "base: model.embed.hidden: must be in [-1e+06, 1e+06], got 1000000000000"),
    ({"scheduler": {"type": "asha", "grace_period": 10**9}},
     "scheduler.grace_period: must be <= 100000, got 1000000000"),
    ({"max_concurrent": 10**9}, "max_concurrent: must be <= 1024, got 1000000000"),
    ({"max_failures": 10**9}, "max_failures: must be <= 100, got 1000000000"),
    ({"ablation": {"design": "grid", "axes": {"train.eval_every": list(range(1, 101)),
                                              "train.segments": list(range(1, 101)),
                                              "train.threads": list(range(0, 100))}}},
     "ablation.axes: 1,000,000 combinations, more than the 10,000 variants a study may have"),
])
def test_extreme_counts_fail_the_dry_run_in_one_line(tmp_path: Path, changes: dict,
                                                     message: str) -> None:
    path = _spec(tmp_path, **changes)
    if changes.get("ablation", "") is None:
        raw = yaml.safe_load(path.read_text())
        path.write_text(yaml.safe_dump({k: v for k, v in raw.items() if v is not None}))
    result = CliRunner().invoke(cli, ["run", str(path), "--dry-run"])
    assert result.exit_code == 1, result.output
    assert result.stderr == f"error: {message}\n"


def test_huge_seeds_and_epochs_of_a_real_command_are_one_line(tmp_path: Path) -> None:
    path = _spec(tmp_path, seeds=1_000_000_000)
    _one_line(run_ablate(["run", str(path), "--dry-run"], tmp_path, _env()),
              "seeds: must be <= 1000")
    for option in (["--seed", "99999999999999999999"], ["--set", "seed=99999999999999999999"]):
        result = run_ablate(["train", "full", "--out", str(tmp_path / "out"), *option],
                            tmp_path, _env())
        assert _one_line(result) == ("error: seed: must be in [0, 2147483647], got "
                                     "99999999999999999999")
    _one_line(run_ablate(["train", "full", "--out", str(tmp_path / "out"), "--epochs",
                          "1000000000"], tmp_path, _env()),
              "train.epochs: must be in [1, 100000], got 1000000000")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args", [["run", "SPEC", "--name", "nl\n", "--dry-run"],
                                  ["status", "nl\n"], ["report", "nl\n"]])
def test_a_study_name_with_a_trailing_newline_is_refused(tmp_path: Path, args: list) -> None:
    args = [str(_spec(tmp_path)) if a == "SPEC" else a for a in args]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert "expected letters, digits, '_', '.', '-', got 'nl\\n'" in result.output


# -- an unreachable Ray address ----------------------------------------------------------------

@pytest.mark.parametrize(("address", "problem"), [
    ("127.0.0.1:1", "nothing answers on port 1 of 127.0.0.1"),
    ("nosuchhost.invalid:6379", "the host nosuchhost.invalid does not resolve"),
    ("ray://127.0.0.1:1", 'pip install "ray[client]"'),
])
def test_an_unreachable_address_is_one_line_within_30_s(tmp_path: Path, address: str,
                                                        problem: str) -> None:
    pytest.importorskip("ray")
    if address.startswith("ray://"):
        try:
            import grpc  # noqa: F401
            pytest.skip("Ray Client is installed here")
        except ImportError:
            pass
    path = _spec(tmp_path)
    result = run_ablate(["run", str(path), "--storage", str(tmp_path / "runs"),
                         "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                         "--address", address], tmp_path, _env(), timeout=30)
    _one_line(result, address, problem)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow.db").exists()


# -- damaged records -------------------------------------------------------------------------

@pytest.fixture
def records(tmp_path: Path) -> Path:
    """A study's ``study.json``, ``trials.json`` (an interrupted run) and ``rungs.json`` under
    ``tmp_path/runs``, written as ``ablate run`` writes them; returns the study directory."""
    from ablate.cli.run import load_plan
    from ablate.study.record import DONE, INTERRUPTED, ProgressRecord, StudyRecord
    from ablate.study.storage import StudyDir

    plan = load_plan(_spec(tmp_path), None)
    study_dir = StudyDir.at(str(tmp_path / "runs"), NAME)
    study_dir.write_record(StudyRecord.of_plan(plan, "synthetic", "0" * 64))
    first, *rest = StudyRecord.of_plan(plan, "synthetic", "").trials
    trials = (first.updated(state=DONE, epoch=4, metrics={"auc": 0.8, "ap": 0.4}),
              *(t.updated(state=INTERRUPTED, epoch=2) for t in rest))
    study_dir.write_progress(ProgressRecord("interrupted", time.time(), len(trials), trials))
    rungs = plan.member_rungs()
    rungs.decide(first.key, 2, 0.8)
    study_dir.write_rungs(rungs.to_json())
    return Path(study_dir.root)


def _nest(depth: int) -> str:
    return "[" * depth + "]" * depth


def _edit(path: Path, change: Callable[[Any], Any] | str) -> None:
    """Rewrites a record: ``change`` edits its parsed body, or a string replaces the text."""
    if isinstance(change, str):
        path.write_text(change)
        return
    body = json.loads(path.read_text())
    change(body)
    path.write_text(json.dumps(body))


def _set(path: str, value: Any) -> Callable[[Any], None]:
    """An edit that sets the dotted ``path`` (``trials.0.epoch``) of a record to ``value``."""
    def change(body: Any) -> None:
        *parents, last = path.split(".")
        for part in parents:
            body = body[int(part)] if isinstance(body, list) else body[part]
        body[int(last) if isinstance(body, list) else last] = value
    return change


DAMAGED_PROGRESS = [  # trials.json: what ablate status tracebacked on, and the rest
    ("epoch is {}", _set("trials.0.epoch", {}), "trials[0]: epoch is {}, not a whole number"),
    ("key is a list", _set("trials.0.key", ["a"]),
     "trials[0]: not an object with a key, variant and seed"),
    ("updated 1e308", _set("updated", 1e308), "updated is 1e+308, not a time"),
    ("auc 1e308", _set("trials.0.auc", 1e308), "trials[0]: auc is 1e+308, not a number in"),
    ("unknown key", _set("trials.0.colour", "red"), "trials[0]: unknown key 'colour'"),
    ("driver", _set("driver", "bored"), "driver is 'bored', not one of"),
    ("deep nesting", '{"trials": ' + _nest(100_000) + "}", "nests deeper than 64 levels"),
]
DAMAGED_STUDY = [  # study.json
    ("epoch is {}", _set("trials.0.epoch", {}), "trials[0]: epoch is {}, not a whole number"),
    ("seed 1e30", _set("trials.0.seed", 10**30), "trials[0]: seed is 1000000000"),
    ("created 1e308", _set("created", 1e308), "created is 1e+308, not a time"),
    ("unknown key", _set("colour", "red"), "unknown key 'colour'"),
    ("groups", _set("groups", {"full": "x"}), "fused groups are not a mapping"),
    ("deep nesting", _nest(100_000), "nests deeper than 64 levels"),
    ("deep spec", lambda body: body.update(spec={"base": json.loads(_nest(70))}),
     "nests deeper than 64 levels"),
]


@pytest.mark.parametrize(("file", "change", "problem"), [
    *(pytest.param("trials.json", c, p, id=f"trials.json {i}") for i, c, p in DAMAGED_PROGRESS),
    *(pytest.param("study.json", c, p, id=f"study.json {i}") for i, c, p in DAMAGED_STUDY),
])
def test_status_of_a_damaged_record_is_one_line(records: Path, file: str, change: Any,
                                                problem: str) -> None:
    _edit(records / file, change)
    result = run_ablate(["status", NAME, "--storage", str(records.parent)], records, _env())
    line = _one_line(result, f"{records}/{file}", problem)
    assert line.endswith("move it away (the next `ablate run` of the study writes it anew)"
                         if file == "trials.json" else "to start the study again"
                         if "groups" not in problem else "under another --name")


def _grace_skipped(body: dict) -> None:
    body["stopped"]["full/seed1"] = 1  # below the grace period, where ASHA decides nothing


DAMAGED_RUN = [  # what ablate run reads before it writes
    ("trials.json", _set("trials.0.epoch", {}), "epoch is {}"),
    ("trials.json", '{"trials": ' + _nest(100_000) + "}", "nests deeper than 64 levels"),
    ("study.json", _nest(5000), "nests deeper than 64 levels"),
    ("rungs.json", _grace_skipped, "'full/seed1' is stopped at epoch 1, where no milestone"),
    ("rungs.json", _set("recorded.2.full/seed0", 1e308), "is 1e+308, not a metric in [-1, 1]"),
    ("rungs.json", _set("recorded.2.other/seed9", 0.5), "trial 'other/seed9' is not one of"),
    ("rungs.json", _set("colour", "red"), "unknown key 'colour'"),
    ("rungs.json", _nest(100), "nests deeper than 64 levels"),
]


@pytest.mark.parametrize(("file", "change", "problem"), DAMAGED_RUN,
                         ids=[f"{f} {p[:24]}" for f, _, p in DAMAGED_RUN])
def test_run_with_a_damaged_record_is_one_line_and_writes_nothing(
        records: Path, file: str, change: Any, problem: str) -> None:
    _edit(records / file, change)
    before = _snapshot(records)
    spec = records.parent.parent / f"{NAME}.yaml"
    uri = f"sqlite:///{records.parent.parent / 'mlflow.db'}"
    result = run_ablate(["run", str(spec), "--storage", str(records.parent), "--tracking-uri",
                         uri], records.parent.parent, _env(), timeout=120)
    _one_line(result, f"{records}/{file}", problem)
    assert _snapshot(records) == before
    assert not (records.parent.parent / "mlflow.db").exists()


# -- real studies: Ray's pickles, and groups renamed ----------------------------------------------

@pytest.fixture(scope="module")
def finished_study(tmp_path_factory: pytest.TempPathFactory, local_ray) -> Path:
    """The fused ASHA study of :func:`_spec`, run to the end in this process: its directory
    (``runs/``, ``mlflow.db``, the spec)."""
    workdir = tmp_path_factory.mktemp("finished")
    TRACKING_STORES.new(workdir)
    result = run_in_process(["run", str(_spec(workdir)), "--quiet"], workdir)
    assert_ran(result, "the fused study")
    return workdir


def _copy(study: Path, tmp_path: Path) -> Path:
    shutil.copytree(study, tmp_path / "study")
    return tmp_path / "study"


def _rerun(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return run_ablate(["run", str(workdir / f"{NAME}.yaml"), "--storage", str(workdir / "runs"),
                       "--tracking-uri", f"sqlite:///{workdir / 'mlflow.db'}", *args], workdir,
                      _env(), timeout=300)


def _run_ids(workdir: Path) -> dict[str, str]:
    runs = trial_runs(f"sqlite:///{workdir / 'mlflow.db'}", NAME)
    return {r.data.tags["ablate.trial_key"]: r.info.run_id for r in runs}


@pytest.mark.faults
@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "planted"])
def test_a_finished_study_reruns_without_unpickling_tune_state(finished_study: Path,
                                                                tmp_path: Path,
                                                                damage: str) -> None:
    workdir = _copy(finished_study, tmp_path)
    tuner = workdir / "runs" / NAME / "tune" / "tuner.pkl"
    marker = tmp_path / "unpickled"
    tuner.write_bytes(tuner.read_bytes()[:40] if damage == "truncated"
                      else pickle.dumps(PlantedPickle(marker)))
    planted, before = tuner.read_bytes(), _run_ids(workdir)
    result = _rerun(workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "4/4 trials done, 0 failed" in result.stdout
    assert result.stderr == ""
    assert not marker.exists() and tuner.read_bytes() == planted
    assert _run_ids(workdir) == before


@pytest.mark.faults
@pytest.mark.slow
def test_a_finished_search_reruns_without_unpickling_either_stage(tmp_path: Path,
                                                                  local_ray) -> None:
    """A search and its confirmation (two Tune experiments), finished: the rerun adopts both
    from MLflow (a search's trials by its seeds) and runs, samples and unpickles nothing."""
    search = {"algorithm": "random", "num_samples": 3,
              "space": {"train.lr": {"loguniform": [1.0e-4, 3.0e-3]}}}
    path = _spec(tmp_path, name="searched", overrides={"train.epochs": 2}, ablation=None,
                 search=search, seeds=[0], confirm={"top_k": 2, "seeds": 2}, fuse="none",
                 fuse_members="auto", scheduler="none")
    path.write_text(path.read_text().replace("ablation: null\n", ""))
    TRACKING_STORES.new(tmp_path)
    assert_ran(run_in_process(["run", str(path), "--quiet"], tmp_path), "the search")
    root, marker = tmp_path / "runs" / "searched", tmp_path / "unpickled"
    planted = pickle.dumps(PlantedPickle(marker))
    for stage in ("tune", "tune-confirm"):
        (root / stage / "tuner.pkl").write_bytes(planted)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    before = {r.info.run_id for r in trial_runs(uri, "searched")}
    result = run_ablate(["run", str(path), "--storage", str(tmp_path / "runs"),
                         "--tracking-uri", uri], tmp_path, _env(), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "7/7 trials done, 0 failed" in result.stdout and "(resumed)" in result.stdout
    assert not marker.exists()
    assert {r.info.run_id for r in trial_runs(uri, "searched")} == before


@pytest.mark.faults
@pytest.mark.slow
def test_a_renamed_group_is_one_line_naming_the_record(finished_study: Path,
                                                       tmp_path: Path) -> None:
    workdir = _copy(finished_study, tmp_path)
    record = workdir / "runs" / NAME / "study.json"
    _edit(record, lambda body: body["groups"].update(renamed=body["groups"].pop("base")))
    before = _snapshot(workdir / "runs")
    line = _one_line(_rerun(workdir), str(record), "do not include 'base'")
    assert line.endswith("restore that file from a backup, or run the study anew under "
                         "another --name")
    assert _snapshot(workdir / "runs") == before


@pytest.mark.faults
@pytest.mark.slow
def test_report_of_a_damaged_record_is_one_line(finished_study: Path, tmp_path: Path) -> None:
    workdir = _copy(finished_study, tmp_path)
    record = workdir / "runs" / NAME / "study.json"
    record.write_text(_nest(10_000))
    result = run_ablate(["report", NAME, "--storage", str(workdir / "runs"), "--tracking-uri",
                         f"sqlite:///{workdir / 'mlflow.db'}", "--out", str(tmp_path / "out")],
                        workdir, _env(), timeout=300)
    _one_line(result, str(record), "nests deeper than 64 levels")


@pytest.mark.faults
@pytest.mark.slow
def test_a_truncated_tuner_pkl_of_a_stopped_study_adopts_from_mlflow(tmp_path: Path) -> None:
    """The study is stopped (SIGTERM) after its first trial finished; ``tuner.pkl`` is then cut
    short. The rerun adopts the finished trial, continues the other, and MLflow ends with one
    run per trial."""
    spec = write_spec(tmp_path, "trunc", epochs=3, max_concurrent=1)
    uri = TRACKING_STORES.new(tmp_path)
    args = ["run", str(spec), "--storage", str(tmp_path / "runs"), "--tracking-uri", uri,
            "--quiet"]
    root = tmp_path / "runs" / "trunc"

    def one_done() -> bool:
        try:
            progress = json.loads((root / "trials.json").read_text())
        except (OSError, ValueError):
            return False
        return any(t["state"] == "done" for t in progress["trials"])

    driver = start(args, tmp_path, _env())
    wait_for(one_done, driver, 600, "the first finished trial", interval=0.2)
    driver.proc.send_signal(signal.SIGTERM)
    assert driver.wait(timeout=120) == 143, driver.output()
    finished = {r.data.tags["ablate.trial_key"] for r in trial_runs(uri, "trunc")
                if r.info.status == "FINISHED"}
    assert len(finished) == 1, finished
    tuner = root / "tune" / "tuner.pkl"
    tuner.write_bytes(tuner.read_bytes()[: tuner.stat().st_size // 2])

    result = run_ablate(args[:-1], tmp_path, _env(), timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert (f"Ray's state under {root}/tune is unreadable: 1 finished trial(s) adopted from "
            f"MLflow, 1 to run (from their checkpoints where they have some)") in result.stderr
    assert "Traceback" not in result.stderr and "UnpicklingError" not in result.stderr
    assert "2/2 trials done, 0 failed" in result.stdout
    assert_study_complete(uri, root, 3)
