"""``fuse: seeds``: one Tune trial trains a variant's seeds as one model, and every seed is still
its own trial: one FINISHED MLflow run each, its own metrics per epoch, its own checkpoint, and
the exact results of the unfused study on CPU (one member per vectorised call there)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow import MlflowClient

from tests.studykit import (
    TRACKING_STORES,
    assert_ran,
    assert_study_complete,
    latest_experiment_state,
    results,
    run,
    run_in_process,
    start,
    study_env,
    trial_dirs,
    trial_runs,
    wait_for,
)

pytestmark = pytest.mark.slow

SEEDS = [0, 1, 2]


ASHA = {"type": "asha", "grace_period": 1, "reduction_factor": 2}


def write_study(directory: Path, name: str, fuse: bool | str, epochs: int = 2,
                seeds: list[int] = SEEDS, scheduler: dict | None = None,
                axes: dict | None = None, eval_every: int = 1,
                fuse_members: int | str = 3) -> Path:
    """Two variants (full, no CoMo) × ``seeds``: 6 trials; fused, 2 Tune trials of 3 (whole
    groups: auto sizing would split them on CPU). Test scored every ``eval_every`` epochs."""
    spec = {"name": name, "dataset": "synthetic", "base": "full",
            "overrides": {"train.epochs": epochs, "train.eval_every": eval_every},
            "ablation": {"design": "leave_one_out",
                         "axes": axes or {"model.como.type": ["none"]}},
            "seeds": seeds, "metric": "val_auc", "mode": "max",
            "resources": {"cpu": 1, "gpu": 0}, "max_concurrent": 2}
    if fuse:
        spec["fuse"] = "seeds" if fuse is True else fuse
        spec["fuse_members"] = fuse_members
    if scheduler:
        spec["scheduler"] = scheduler
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def final_metrics(tracking_uri: str, study: str) -> dict[str, dict[str, float]]:
    runs = trial_runs(tracking_uri, study)
    return {r.data.tags["ablate.trial_key"]: r.data.metrics for r in runs}


def run_complete_study(workdir: Path, name: str, fuse: bool | str, trials: int,
                       **study: Any) -> dict[str, dict[str, float]]:
    """Runs a new 2-epoch study (:func:`write_study`) in this process and checks that all its
    ``trials`` completed exactly once; returns each trial's final metrics by trial key."""
    spec = write_study(workdir, name, fuse, **study)
    uri = TRACKING_STORES.new(workdir)
    result = run_in_process(["run", str(spec), "--quiet"], workdir)
    assert_ran(result, f"ablate run {name}")
    assert f"{trials}/{trials} trials done, 0 failed" in result.stdout
    assert_study_complete(uri, workdir / "runs" / name, epochs=2)
    return final_metrics(uri, name)


def assert_same_results(fused: dict[str, dict[str, float]],
                        separate: dict[str, dict[str, float]]) -> None:
    """Bit-identical on CPU: each member runs its separate trial's own kernels."""
    assert sorted(fused) == sorted(separate)
    for key, apart in separate.items():
        for metric in ("auc", "ap", "val_auc", "loss"):
            assert fused[key][metric] == apart[metric], (key, metric)


def test_fused_study_records_each_seed_once_with_the_unfused_results(
        tmp_path: Path, local_ray) -> None:
    metrics = {}
    for fuse in (False, True):
        name = "fused" if fuse else "separate"
        metrics[name] = run_complete_study(tmp_path / name, name, fuse, trials=6)
        tune_trials = list((tmp_path / name / "runs" / name / "tune").glob("train_trial_*"))
        assert len(tune_trials) == (2 if fuse else 6)
    assert_same_results(metrics["fused"], metrics["separate"])
    # A resumed study trains the groups its record names; a record whose groups lost a trial
    # is refused, naming it, and nothing is run or rewritten.
    workdir, record = tmp_path / "fused", tmp_path / "fused" / "runs" / "fused" / "study.json"
    saved = json.loads(record.read_text())
    first = next(iter(saved["groups"]))
    saved["groups"][first] = saved["groups"][first][:-1]
    record.write_text(json.dumps(saved))
    result = run_in_process(["run", str(workdir / "fused.yaml"), "--quiet"], workdir)
    assert result.exit_code == 1
    assert "fused groups do not cover the plan's trials exactly once" in result.stderr
    assert json.loads(record.read_text()) == saved


def test_compatible_variants_fuse_into_one_model_with_the_separate_results(
        tmp_path: Path, local_ray) -> None:
    """``fuse: compatible``: variants that differ only in the learning rate or a loss weight
    share one fused model with the base; another architecture (no CoMo) gets its own."""
    axes = {"model.como.type": ["none"], "train.lr": [3e-4], "loss.rd_weight": [0.5]}
    metrics = {}
    for fuse in (False, "compatible"):
        name = "compatible" if fuse else "apart"
        metrics[name] = run_complete_study(tmp_path / name, name, fuse, trials=4, seeds=[0],
                                           axes=axes)
        if fuse:
            root = tmp_path / name / "runs" / name
            groups = json.loads((root / "study.json").read_text())["groups"]
            assert groups == {"base+2": ["base/seed0", "train.lr=0.0003/seed0",
                                         "rd_weight=0.5/seed0"],
                              "como=none": ["como=none/seed0"]}
            assert len(trial_dirs(root)) == 2
    assert_same_results(metrics["compatible"], metrics["apart"])


@pytest.mark.faults
def test_fused_study_killed_mid_trial_resumes_every_member(tmp_path: Path) -> None:
    from tests.test_faults import kill

    epochs = 5
    cache = tmp_path / "cache"
    spec = write_study(tmp_path, "fusedkill", fuse=True, epochs=epochs, seeds=[0, 1])
    root = tmp_path / "runs" / "fusedkill"
    uri = TRACKING_STORES.new(tmp_path)
    args = ["run", str(spec), "--storage", str(tmp_path / "runs"), "--tracking-uri", uri]
    env = study_env(cache)
    driver = start(args, tmp_path, env)

    def running_with_checkpoint() -> list[str]:
        return [t["trial_id"] for t in latest_experiment_state(root)
                if t["status"] == "RUNNING"
                and (t.get("last_result") or {}).get("checkpoint_dir_name")
                and t["last_result"]["epoch"] <= epochs - 2]

    wait_for(running_with_checkpoint, driver, 300, "a fused trial with a checkpoint")
    kill(driver)
    interrupted = running_with_checkpoint()  # per the killed driver's last snapshot
    assert interrupted
    result = run(args, tmp_path, env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4/4 trials done, 0 failed" in result.stdout and "(resumed)" in result.stdout
    assert_study_complete(uri, root, epochs)
    by_id = {results(d)[0]["trial_id"]: results(d) for d in trial_dirs(root)}
    assert len(by_id) == 2  # one Tune trial per variant
    for rows in by_id.values():
        members = rows[-1]["members"]
        assert sorted(members) == [f"{rows[-1]['variant']}/seed{s}" for s in (0, 1)]
        assert all(m["epoch"] == epochs for m in members.values())
    for trial_id in interrupted:
        rows = by_id[trial_id]
        final = [r for r in rows if r["pid"] == rows[-1]["pid"]]
        assert all(r["start_epoch"] > 0 for r in final), rows  # continued, not restarted


def assert_test_scored_at_the_final_epoch(uri: str, study: str, scored: set[int]) -> list[int]:
    """Every trial's run has test metrics at its final epoch, stopped early or not (test is
    scored at the scheduler's milestones), and at no epoch outside ``scored``; returns the
    final epochs."""
    client, finals = MlflowClient(uri), []
    for run_ in trial_runs(uri, study):
        final = int(run_.data.tags["ablate.final_epoch"])
        for metric in ("auc", "ap"):
            steps = {m.step for m in client.get_metric_history(run_.info.run_id, metric)}
            key = run_.data.tags["ablate.trial_key"]
            assert final in steps and steps <= scored, (key, metric, final, steps)
        finals.append(final)
    return finals


def test_fused_members_stop_on_their_own_asha_rungs(tmp_path: Path, local_ray) -> None:
    """With ASHA, each member of a fused trial is stopped at a rung on its own: it trains no
    further (its history ends there) while the other members of its Tune trial go on. Test is
    scored every 5 epochs, and at the milestones, where a member may stop."""
    epochs = 4
    spec = write_study(tmp_path, "fusedasha", fuse=True, epochs=epochs, scheduler=ASHA,
                       eval_every=5)
    uri = TRACKING_STORES.new(tmp_path)
    result = run_in_process(["run", str(spec), "--quiet"], tmp_path)
    assert_ran(result, "ablate run fusedasha")
    assert "6/6 trials done, 0 failed" in result.stdout
    root = tmp_path / "runs" / "fusedasha"
    rungs = json.loads((root / "rungs.json").read_text())
    stopped = rungs["stopped"]
    assert rungs["milestones"] == [4, 2, 1]
    # Stopped at a milestone (at 4, the last epoch, as Tune's ASHA stops a trial there too).
    assert all(epoch in (1, 2, 4) for epoch in stopped.values()), stopped
    assert any(epoch < epochs for epoch in stopped.values()), stopped
    assert_study_complete(uri, root, epochs, stopped=stopped)
    by_trial: dict[str, list[int]] = {}
    for run_ in trial_runs(uri, "fusedasha"):
        by_trial.setdefault(run_.data.tags["ablate.trial_id"], []).append(
            int(run_.data.tags["ablate.final_epoch"]))
    # Some fused trial kept training a member after stopping another: masked, not ended.
    assert any(min(finals) < max(finals) == epochs for finals in by_trial.values()), by_trial
    # Every value the rungs recorded is the member's validation AUC at that milestone.
    histories = {r.data.tags["ablate.trial_key"]: {m.step: m.value for m in MlflowClient(
        uri).get_metric_history(r.info.run_id, "val_auc")} for r in trial_runs(uri, "fusedasha")}
    for milestone, recorded in rungs["recorded"].items():
        for key, value in recorded.items():
            assert value == histories[key][int(milestone)], (key, milestone)
    assert_test_scored_at_the_final_epoch(uri, "fusedasha", {1, 2, 4})  # never at 3
    again = run_in_process(["run", str(spec), "--quiet"], tmp_path)  # finished: nothing reruns
    assert_ran(again, "ablate run fusedasha again")
    assert json.loads((root / "rungs.json").read_text())["stopped"] == stopped
    assert_study_complete(uri, root, epochs, stopped=stopped)


def test_trials_tune_asha_stops_report_test_scores_of_their_final_epoch(
        tmp_path: Path, local_ray) -> None:
    """Unfused, Tune's ASHA stops whole trials: they too score test at the milestones, so
    every trial's test metrics are of its final epoch, not of an earlier scored one."""
    spec = write_study(tmp_path, "asha", fuse=False, epochs=4, scheduler=ASHA, eval_every=5)
    uri = TRACKING_STORES.new(tmp_path)
    result = run_in_process(["run", str(spec), "--quiet"], tmp_path)
    assert_ran(result, "ablate run asha")
    assert "6/6 trials done, 0 failed" in result.stdout
    finals = assert_test_scored_at_the_final_epoch(uri, "asha", {1, 2, 4})  # never at 3
    assert max(finals) == 4 and min(finals) < 4 and set(finals) <= {1, 2, 4}, finals


def test_auto_sized_fused_study_with_asha_on_cpu(tmp_path: Path, local_ray) -> None:
    """``fuse_members: auto`` on 2 CPU slots: each variant's 3 seeds become Tune trials of one
    member (6 trials are too few to fuse without idling a slot), still stopped by the study's
    own rungs, with test scores of each trial's final epoch."""
    spec = write_study(tmp_path, "autoasha", fuse=True, epochs=4, scheduler=ASHA, eval_every=5,
                       fuse_members="auto")
    uri = TRACKING_STORES.new(tmp_path)
    result = run_in_process(["run", str(spec), "--quiet"], tmp_path)
    assert_ran(result, "ablate run autoasha")
    assert "6/6 trials done, 0 failed" in result.stdout
    root = tmp_path / "runs" / "autoasha"
    groups = json.loads((root / "study.json").read_text())["groups"]
    assert groups == {f"{variant}#{i + 1}": [f"{variant}/seed{seed}"]
                      for variant in ("base", "como=none") for i, seed in enumerate(SEEDS)}
    assert len(trial_dirs(root)) == 6
    stopped = json.loads((root / "rungs.json").read_text())["stopped"]
    assert_study_complete(uri, root, 4, stopped=stopped)
    finals = assert_test_scored_at_the_final_epoch(uri, "autoasha", {1, 2, 4})
    assert sorted(finals) == sorted(stopped.get(k, 4) for g in groups.values() for k in g)


@pytest.mark.faults
def test_fused_asha_study_killed_keeps_its_decisions(tmp_path: Path) -> None:
    """Killed mid-study and run again: the rungs come back from their snapshot, so no member
    trains past the epoch it was stopped at, and every trial still has one complete run."""
    from tests.test_faults import kill

    epochs = 8  # time to snapshot a stop while work remains
    spec = write_study(tmp_path, "fusedashakill", fuse=True, epochs=epochs, scheduler=ASHA)
    root = tmp_path / "runs" / "fusedashakill"
    uri = TRACKING_STORES.new(tmp_path)
    args = ["run", str(spec), "--storage", str(tmp_path / "runs"), "--tracking-uri", uri]
    env = study_env(tmp_path / "cache")
    driver = start(args, tmp_path, env)

    def snapshot_with_a_stop() -> bool:  # the driver wrote a rung decision, with work to go
        path = root / "rungs.json"
        return (path.exists() and bool(json.loads(path.read_text())["stopped"])
                and any(t["status"] == "RUNNING" for t in latest_experiment_state(root)))

    wait_for(snapshot_with_a_stop, driver, 300, "a snapshot of the rungs with a stop",
             interval=0.2)
    before = json.loads((root / "rungs.json").read_text())["stopped"]
    kill(driver)
    result = run(args, tmp_path, env, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6/6 trials done, 0 failed" in result.stdout
    stopped = json.loads((root / "rungs.json").read_text())["stopped"]
    assert before.items() <= stopped.items()  # decisions made before the kill stand
    assert_study_complete(uri, root, epochs, stopped=stopped)
