"""Studies in stages: adaptive seeds (rounds that add seeds where comparisons are undecided) and
a search's confirmation on fresh seeds, each stage pinned before it runs and resumed exactly."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from mlflow import MlflowClient

from ablate.cli import cli
from tests.studykit import (
    TRACKING_STORES,
    assert_ran,
    run,
    run_in_process,
    start,
    study_env,
    trial_runs,
    wait_for,
)

pytestmark = pytest.mark.slow


def adaptive_spec(directory: Path, name: str) -> Path:
    """Three variants, 2 epochs: ``train.eval_every=1`` trains exactly as the base (test is
    scored more often; scoring draws no random numbers), so it is decided equivalent in round
    1; ``como=none`` is not decided on 2 seeds, so round 2 gives it and the base 2 more."""
    spec = {"name": name, "dataset": "synthetic", "base": "full",
            "overrides": {"train.epochs": 2, "train.eval_every": 2},
            "ablation": {"design": "leave_one_out",
                         "axes": {"train.eval_every": [1], "model.como.type": ["none"]}},
            "seeds": {"initial": 2, "max": 4, "step": 2}, "metric": "val_auc",
            "decision": {"metric": "auc", "alpha": 0.05, "delta": 0.01},
            "resources": {"cpu": 1, "gpu": 0}, "max_concurrent": 2}
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


EXPECTED_TRIALS = {"base/seed0", "base/seed1", "base/seed2", "base/seed3",
                   "train.eval_every=1/seed0", "train.eval_every=1/seed1",
                   "como=none/seed0", "como=none/seed1", "como=none/seed2", "como=none/seed3"}


def check_stages(root: Path, uri: str, name: str) -> dict[str, float]:
    """Two rounds pinned, one FINISHED run per trial of them; each trial's final test AUC."""
    stages = json.loads((root / "stages.json").read_text())["stages"]
    assert [(s["kind"], s["name"], s["directory"]) for s in stages] == [
        ("round", "round 1 (2 seeds)", "tune"), ("round", "round 2 (4 seeds)", "tune-round-2")]
    assert set(stages[1]["trials"]) == {"base/seed2", "base/seed3", "como=none/seed2",
                                        "como=none/seed3"}
    runs = trial_runs(uri, name)
    keys = Counter(r.data.tags["ablate.trial_key"] for r in runs)
    assert set(keys) == EXPECTED_TRIALS and set(keys.values()) == {1}, keys
    assert {r.info.status for r in runs} == {"FINISHED"}
    return {r.data.tags["ablate.trial_key"]: r.data.metrics["auc"] for r in runs}


@pytest.fixture(scope="module")
def adaptive_study(tmp_path_factory: pytest.TempPathFactory, local_ray) -> tuple[Path, str]:
    """The adaptive study run once, uninterrupted, in this process: (directory, tracking URI)."""
    workdir = tmp_path_factory.mktemp("adaptive")
    spec = adaptive_spec(workdir, "adaptive")
    uri = TRACKING_STORES.new(workdir)
    dry = CliRunner().invoke(cli, ["run", str(spec), "--dry-run"])
    assert "round 1 runs 6 trials (2 seeds each), then rounds at 4 seeds" in dry.stdout
    result = run_in_process(["run", str(spec), "--quiet"], workdir)
    assert_ran(result, "ablate run adaptive")
    assert "10/10 trials done, 0 failed" in result.stdout
    return workdir, uri


def test_adaptive_seeds_go_only_where_undecided(adaptive_study: tuple[Path, str]) -> None:
    workdir, uri = adaptive_study
    check_stages(workdir / "runs" / "adaptive", uri, "adaptive")
    # The report replays the rounds: the decision and where it was reached; the savings.
    out = workdir / "report"
    report = run_in_process(["report", "adaptive", "--out", str(out)], workdir)
    assert_ran(report, "ablate report adaptive")
    rows = {r["variant"]: r for r in json.loads((out / "ablation.json").read_text())}
    assert rows["train.eval_every=1"]["comparison"]["decision"] == "equivalent"
    assert rows["train.eval_every=1"]["comparison"]["decided_at"] == 2
    assert rows["train.eval_every=1"]["n"] == 2 and rows["como=none"]["n"] == 4
    assert ("note: adaptive seeds: 10 trials run of the 12 that 4 seeds for every variant "
            "would take (2 saved); decided at train.eval_every=1 equivalent at 2") in report.stderr
    # One summary run per variant, beside the trials, written again in place.
    again = run_in_process(["report", "adaptive", "--out", str(out)], workdir)
    assert_ran(again, "ablate report adaptive, again")
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("adaptive")
    summaries = client.search_runs([experiment.experiment_id],
                                   "tags.`ablate.role` = 'summary'")
    decisions = {r.data.tags["ablate.variant"]: r.data.tags["ablate.decision"]
                 for r in summaries}
    assert decisions == {"base": "base", "train.eval_every=1": "equivalent",
                         "como=none": rows["como=none"]["comparison"]["decision"]}
    parent, = client.search_runs([experiment.experiment_id], "tags.`ablate.role` = 'study'")
    assert {r.data.tags["mlflow.parentRunId"] for r in summaries} == {parent.info.run_id}
    assert {r.data.tags["ablate.variant"]: r.data.metrics["n"] for r in summaries} == {
        "base": 4.0, "train.eval_every=1": 2.0, "como=none": 4.0}


@pytest.mark.faults
def test_adaptive_study_killed_mid_round_resumes_with_the_same_decisions(
        adaptive_study: tuple[Path, str], tmp_path: Path) -> None:
    """SIGKILL while round 2 trains, then the same command: the pinned round runs to the end,
    no trial twice, and the results equal the uninterrupted study's."""
    from tests.test_faults import kill

    name = "adaptive"
    workdir, uri = adaptive_study
    expected = check_stages(workdir / "runs" / name, uri, name)
    uri = TRACKING_STORES.new(tmp_path)
    spec = adaptive_spec(tmp_path, name)
    args = ["run", str(spec), "--storage", str(tmp_path / "runs"), "--tracking-uri", uri]
    root = tmp_path / "runs" / name
    env = study_env(tmp_path / "cache")
    driver = start(args, tmp_path, env)

    def round_two_training() -> bool:
        return any(p.is_dir() for p in (root / "tune-round-2").glob("train_trial_*/checkpoint_*"))

    wait_for(round_two_training, driver, 300, "a checkpoint of round 2", interval=0.2)
    kill(driver)
    result = run(args, tmp_path, env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "10/10 trials done, 0 failed" in result.stdout
    assert check_stages(root, uri, name) == expected


def search_spec(directory: Path, name: str) -> Path:
    spec: dict[str, Any] = {
        "name": name, "dataset": "synthetic", "base": "full",
        "overrides": {"train.epochs": 2},
        "search": {"algorithm": "random", "num_samples": 3,
                   "space": {"train.lr": {"loguniform": [1.0e-4, 3.0e-3]}}},
        "seeds": [0], "confirm": {"top_k": 2, "seeds": 2}, "metric": "val_auc",
        "resources": {"cpu": 1, "gpu": 0}, "max_concurrent": 2}
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_a_search_confirms_its_winners_on_fresh_seeds(tmp_path: Path, local_ray) -> None:
    spec = search_spec(tmp_path, "confirmed")
    uri = TRACKING_STORES.new(tmp_path)
    result = run_in_process(["run", str(spec), "--quiet"], tmp_path)
    assert_ran(result, "ablate run confirmed")
    assert "7/7 trials done, 0 failed" in result.stdout  # 3 searched, 2 configs x 2 seeds
    stages = json.loads((tmp_path / "runs" / "confirmed" / "stages.json").read_text())["stages"]
    assert [s["kind"] for s in stages] == ["search", "confirm"]
    confirm = stages[1]
    assert len(confirm["configs"]) == 2 and len(confirm["trials"]) == 4
    assert {t.rsplit("/", 1)[1] for t in confirm["trials"]} == {"seed1", "seed2"}
    runs = trial_runs(uri, "confirmed")
    assert len(runs) == 7 and {r.info.status for r in runs} == {"FINISHED"}
    # The confirmed configurations are the search's two best by val_auc.
    searched = {r.data.tags["ablate.variant"]: r.data.metrics["val_auc"] for r in runs
                if r.data.tags["ablate.seed"] == "0"}
    best = sorted(searched, key=lambda v: -searched[v])[:2]
    assert sorted(confirm["configs"]) == sorted(best)

    out = tmp_path / "report"
    report = run_in_process(["report", "confirmed", "--out", str(out)], tmp_path)
    assert_ran(report, "ablate report confirmed")
    body = json.loads((out / "search.json").read_text())
    rows = body["confirmed"]
    assert sorted(r["variant"] for r in rows) == sorted(best)
    assert [r["winner"] for r in rows] == [True, False]
    assert rows[0]["confirmed_val_auc_mean"] >= rows[1]["confirmed_val_auc_mean"]
    for row in rows:
        assert row["gap"] == pytest.approx(row["search_mean"] - row["confirmed_val_auc_mean"])
        assert row["confirmed_n"] == 2
    assert "winner's curse, measured" in report.stderr
    assert "## Confirmed on fresh seeds" in (out / "ablation.md").read_text()
