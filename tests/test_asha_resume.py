"""ASHA decides the same however a study is timed or interrupted.

The study keeps ASHA's rungs itself for every trial, fused or not (Tune runs first in, first
out), compares a trial at a milestone with the trials before it in Tune's creation order rather
than with those that happened to get there first, and writes the rungs to ``rungs.json`` before
a trial acts on a decision. The fast tests drive the rungs with simulated timings; the slow one
SIGKILLs a real ``ablate run`` of an Optuna + ASHA search after its first decision, resumes it,
and compares every trial with an uninterrupted run.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from mlflow import MlflowClient
from ray.tune.schedulers import TrialScheduler
from ray.tune.schedulers.async_hyperband import _Bracket

from ablate.engine.asha import STALL_SECONDS, RungsKeeper
from ablate.study.record import DONE, PENDING, RUNNING
from ablate.study.rungs import Rungs
from ablate.study.storage import StudyDir
from tests.studykit import (
    TRACKING_STORES,
    run,
    start,
    study_env,
    trial_runs,
    wait_for,
)

GRACE, MAX_T, FACTOR = 1, 8, 2


def _values(trials: int, seed: int) -> dict[str, list[float]]:
    """Each trial's metric per epoch (a few ties, to exercise them)."""
    rng = random.Random(seed)
    return {f"t{i:02d}": [round(rng.random(), 1 if rng.random() < 0.3 else 6)
                          for _ in range(MAX_T)] for i in range(trials)}


def _simulate(values: dict[str, list[float]], timing: int, tmp_path: Path) -> dict[str, int]:
    """Runs every trial through a :class:`RungsKeeper` at once, advancing a random one by an
    epoch at each step (``timing`` seeds which), as Tune trials on uneven hardware do; a trial
    the rungs make wait advances no further until they answer. Returns each trial's last
    epoch."""
    rng = random.Random(timing)
    keeper = RungsKeeper(Rungs.asha(GRACE, MAX_T, FACTOR, "max"), StudyDir(str(tmp_path)))
    keeper.observe([(key, RUNNING) for key in values])
    epoch = dict.fromkeys(values, 0)
    waiting: set[str] = set()
    ended: set[str] = set()

    def ask(key: str) -> None:
        e = epoch[key]
        stopped, still = keeper.ask({key: (e, values[key][e - 1], e == MAX_T)})
        waiting.discard(key)
        if still:
            waiting.add(key)
        elif stopped or e == MAX_T:
            ended.add(key)

    while len(ended) < len(values):
        for key in sorted(waiting):
            ask(key)
        runnable = sorted(set(values) - ended - waiting)
        if runnable:
            key = rng.choice(runnable)
            epoch[key] += 1
            ask(key)
    return epoch


def _in_order(values: dict[str, list[float]]) -> dict[str, int]:
    """Tune's ASHA bracket given each milestone's results in trial order: every trial reaches a
    milestone after the trials before it."""
    bracket = _Bracket(GRACE, MAX_T, FACTOR, s=0)
    last = dict.fromkeys(values, MAX_T)
    for epoch in range(1, MAX_T + 1):
        for key in values:
            if last[key] >= epoch and bracket.on_result(
                    SimpleNamespace(trial_id=key), epoch,
                    values[key][epoch - 1]) == TrialScheduler.STOP and epoch < MAX_T:
                last[key] = epoch
    return last


@pytest.mark.parametrize("seed", range(4))
def test_decisions_do_not_depend_on_timing(seed: int, tmp_path: Path) -> None:
    """Five random timings of the same trials end every trial at the same epoch: Tune's ASHA
    bracket's decisions with every trial reaching each milestone in trial order."""
    values = _values(12, seed)
    expected = _in_order(values)
    assert min(expected.values()) < MAX_T  # the values do exercise stopping
    for timing in range(5):
        assert _simulate(values, timing, tmp_path) == expected, timing


def test_every_decision_is_on_disk_before_the_trial_acts_on_it(tmp_path: Path) -> None:
    study_dir = StudyDir(str(tmp_path))
    keeper = RungsKeeper(Rungs.asha(2, 8, 2, "max"), study_dir)
    keeper.observe([("a", RUNNING), ("b", RUNNING)])
    assert Rungs.from_json(study_dir.read_rungs()).order == ["a", "b"]
    assert keeper.ask({"b": (2, 0.5, False)}) == ([], ["b"])  # waits for "a"
    assert keeper.ask({"a": (2, 0.9, False)}) == ([], [])
    assert study_dir.read_rungs()["recorded"]["2"] == {"a": 0.9}
    assert keeper.ask({"b": (2, 0.5, False)}) == (["b"], [])
    snapshot = Rungs.from_json(study_dir.read_rungs())
    assert snapshot.stopped == {"b": 2} and snapshot.recorded[2] == {"a": 0.9, "b": 0.5}

    # A driver killed before "b" checkpointed epoch 2: "b" resumes at epoch 1, trains epoch 2
    # again and stops there, whatever it reports then; "a" asks again and goes on.
    resumed = RungsKeeper(snapshot, study_dir)
    assert resumed.stopped_at({"a": 1, "b": 1}) == []
    assert resumed.ask({"b": (2, 0.99, False), "a": (2, 0.1, False)}) == (["b"], [])
    assert resumed.stopped_at({"a": 2, "b": 2}) == ["b"]
    assert Rungs.from_json(study_dir.read_rungs()) == snapshot  # nothing decided again


def test_the_last_epoch_waits_for_no_one_and_ended_trials_are_not_waited_for(
        tmp_path: Path) -> None:
    keeper = RungsKeeper(Rungs.asha(1, 4, 2, "max"), StudyDir(str(tmp_path)))
    keeper.observe([("a", RUNNING), ("b", RUNNING), ("c", RUNNING)])
    assert keeper.ask({"c": (4, 0.5, True)}) == ([], [])  # first at 4: no cutoff
    assert keeper.ask({"b": (1, 0.5, False)}) == ([], ["b"])
    keeper.observe([("a", DONE), ("b", RUNNING), ("c", RUNNING)])  # "a" failed or finished
    assert keeper.ask({"b": (1, 0.5, False)}) == ([], [])


def test_an_earlier_trial_tune_does_not_run_is_waited_for_a_while_only(tmp_path: Path) -> None:
    keeper = RungsKeeper(Rungs.asha(1, 4, 2, "max"), StudyDir(str(tmp_path)))
    keeper.observe([("a", PENDING), ("b", RUNNING)])
    assert keeper.ask({"b": (1, 0.5, False)}) == ([], ["b"])
    keeper.idle_since["a"] -= STALL_SECONDS  # Tune has not run "a" for that long
    assert keeper.ask({"b": (1, 0.5, False)}) == ([], [])
    keeper.observe([("a", RUNNING), ("b", RUNNING), ("c", RUNNING)])
    assert keeper.ask({"c": (1, 0.1, False)}) == ([], ["c"])  # "a" runs again: waited for


def test_a_trial_not_yet_in_the_order_waits_and_old_snapshots_load(tmp_path: Path) -> None:
    old = Rungs.asha(1, 4, 2, "max").to_json()
    del old["order"]  # a fused study's snapshot from before the order was kept
    rungs = Rungs.from_json(old)
    assert rungs.order == []
    keeper = RungsKeeper(rungs, StudyDir(str(tmp_path)))
    assert keeper.ask({"a": (1, 0.5, False)}) == ([], ["a"])
    keeper.observe([("a", PENDING)])
    assert keeper.ask({"a": (1, 0.5, False)}) == ([], [])
    with pytest.raises(ValueError, match="'order' must list the trial keys"):
        Rungs.from_json({**old, "order": [1]})


# -- a real search, killed and resumed -------------------------------------------------------

EPOCHS = 6  # milestones 1, 2 and 4: every decision stops a trial that had epochs to go
SAMPLES = 8  # Optuna's TPE samples its first 10 at random: the same configs whatever the timing
CONFIRMED = 2  # seeds the best configuration is confirmed on


def _write_search(directory: Path) -> Path:
    """``search_spaces/hpo.yaml`` (Optuna over the same space, ASHA, 2 trials at once), shorter:
    fewer samples and epochs, and its best configuration confirmed on 2 fresh seeds."""
    spec = yaml.safe_load((Path(__file__).parents[1] / "search_spaces" / "hpo.yaml").read_text())
    spec["confirm"] = {"top_k": 1, "seeds": CONFIRMED}
    spec["overrides"]["train.epochs"] = EPOCHS
    spec["search"]["num_samples"] = SAMPLES
    spec["scheduler"] = {"type": "asha", "grace_period": 1, "reduction_factor": 2}
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "hpo.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _outcome(tracking_uri: str, root: Path) -> dict[str, tuple[int, dict[str, float]]]:
    """Each trial's last epoch and final metrics, by trial key."""
    runs = trial_runs(tracking_uri, "hpo")
    return {r.data.tags["ablate.trial_key"]: (int(r.data.tags["ablate.final_epoch"]),
                                              r.data.metrics) for r in runs}


def _search(directory: Path, cache: Path) -> tuple[list[str], dict[str, str], Path, str]:
    spec = _write_search(directory)
    uri = TRACKING_STORES.new(directory)
    args = ["run", str(spec), "--storage", str(directory / "runs"), "--tracking-uri", uri]
    return args, study_env(cache), directory / "runs" / "hpo", uri


@pytest.mark.faults
@pytest.mark.slow
def test_search_killed_after_its_first_asha_decision_decides_as_an_uninterrupted_one(
        tmp_path: Path) -> None:
    from tests.test_faults import kill

    cache = tmp_path / "cache"
    args, env, root, uri = _search(tmp_path / "whole", cache)
    whole = run(args, tmp_path / "whole", env, timeout=900)
    assert whole.returncode == 0, whole.stdout + whole.stderr
    expected = _outcome(uri, root)
    rungs = json.loads((root / "rungs.json").read_text())
    assert len(expected) == SAMPLES + CONFIRMED and rungs["stopped"], rungs  # ASHA did stop
    confirmed = [key for key in expected if not key.endswith("/seed0")]
    assert [expected[key][0] for key in confirmed] == [EPOCHS] * CONFIRMED  # to the end
    assert len(rungs["order"]) == SAMPLES and not set(confirmed) & set(rungs["order"])

    args, env, root, uri = _search(tmp_path / "killed", cache)
    driver = start(args, tmp_path / "killed", env)

    def stopped_one() -> bool:  # the first stop decision is on disk, with trials to go
        path = root / "rungs.json"
        return path.exists() and bool(json.loads(path.read_text())["stopped"])

    wait_for(stopped_one, driver, 600, "ASHA's first stop decision", interval=0.02)
    kill(driver)
    resumed = run(args, tmp_path / "killed", env, timeout=900)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming study 'hpo'" in resumed.stderr
    done = SAMPLES + CONFIRMED
    assert f"{done}/{done} trials done, 0 failed" in resumed.stdout + resumed.stderr

    outcome = _outcome(uri, root)
    assert sorted(outcome) == sorted(expected)  # the same sampled configurations
    for key, (epoch, metrics) in expected.items():
        assert outcome[key][0] == epoch, (key, outcome[key][0], epoch)
        assert outcome[key][1] == metrics, key  # exactly: CPU training resumes bit for bit
    assert json.loads((root / "rungs.json").read_text()) == rungs  # and the same rungs
    stops = {k: e for k, (e, _) in outcome.items() if e < EPOCHS}
    assert stops == {k: e for k, e in rungs["stopped"].items() if e < EPOCHS}
    _assert_recorded_once(uri, stops)


def _assert_recorded_once(uri: str, stops: dict[str, int]) -> None:
    """One FINISHED run per trial, marked stopped early where ASHA stopped it, with a value of
    each epoch it trained, and test scored at its own last epoch."""
    client = MlflowClient(uri)
    runs = trial_runs(uri, "hpo")
    assert len(runs) == len({r.data.tags["ablate.trial_key"] for r in runs}) == SAMPLES + CONFIRMED
    for run_ in runs:
        key, tags = run_.data.tags["ablate.trial_key"], run_.data.tags
        final = stops.get(key, EPOCHS)
        assert run_.info.status == "FINISHED", key
        assert (tags["ablate.final_epoch"], tags["ablate.stopped_early"]) == (
            str(final), str(final < EPOCHS).lower()), key
        steps = [m.step for m in client.get_metric_history(run_.info.run_id, "val_auc")]
        assert sorted(steps) == list(range(1, final + 1)), key
        assert final in {m.step for m in client.get_metric_history(run_.info.run_id, "auc")}
