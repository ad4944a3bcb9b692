"""A trial's identity comes from the plan, never from Ray: the same (variant, seed, resolved
config) finds the same MLflow run and the same checkpoints, and what Tune is given when its
state is gone is decided from MLflow (real SQLite stores, real Tune-shaped directories)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from ablate.engine.adopt import plan_attempt
from ablate.engine.tunestate import TuneState, checkpoints_of, tune_state
from ablate.errors import AblateError
from ablate.study.plan import Plan, build_plan
from ablate.study.spec import parse_spec

ABLATION = {"name": "ident", "base": "full", "seeds": [0, 1],
            "ablation": {"design": "leave_one_out", "axes": {"model.como.type": ["none"]}}}
SEARCH = {"name": "srch", "base": "full", "seeds": [0, 1],
          "search": {"num_samples": 4, "space": {"train.lr": {"loguniform": [1e-4, 1e-2]}}}}


def _plan(raw: dict) -> tuple[Plan, list[str]]:
    plan = build_plan(parse_spec(raw))
    return plan, plan.keys


def test_ablation_trials_are_their_plan_keys() -> None:
    plan, keys = _plan(ABLATION)
    assert keys == ["base/seed0", "base/seed1", "como=none/seed0", "como=none/seed1"]
    trial = plan.trial({"trial_key": "como=none/seed1"})
    assert (trial.key, trial.variant, trial.seed) == ("como=none/seed1", "como=none", 1)
    assert trial.config.seed == 1 and trial.config.model["como"]["type"] == "none"
    assert trial.identity.config_hash == plan.trial({"trial_key": "como=none/seed0"}
                                                    ).identity.config_hash


def test_search_trials_are_named_by_their_config_and_seed() -> None:
    plan, _ = _plan(SEARCH)
    a = plan.trial({"train.lr": 0.001, "__trial_index__": 0}).identity
    # Another driver's plan, or a worker's unpickled copy, names the same point the same way.
    again, _ = _plan(SEARCH)
    b = again.trial({"train.lr": 0.001, "__trial_index__": 0}).identity
    assert b == a and b is not a
    assert pickle.loads(pickle.dumps(again)).trial({"train.lr": 0.001}).identity == a
    assert a.key == f"{a.variant}/seed0" and a.variant.startswith("cfg-")
    other_seed = plan.trial({"train.lr": 0.001, "__trial_index__": 1}).identity
    assert other_seed.variant == a.variant and other_seed.key.endswith("/seed1")
    assert plan.trial({"train.lr": 0.002, "__trial_index__": 0}).identity.variant != a.variant


def _trial_dir(tune: Path, name: str, key: str, epochs: list[int]) -> Path:
    directory = tune / name
    directory.mkdir(parents=True)
    (directory / "params.json").write_text(json.dumps({"trial_key": key}))
    for epoch in epochs:
        ckpt = directory / f"checkpoint_{epoch - 1:06d}"
        ckpt.mkdir()
        (ckpt / "history.json").write_text(json.dumps([{"epoch": e} for e in
                                                       range(1, epoch + 1)]))
    return directory


def test_checkpoints_are_found_by_identity_across_ray_trial_ids(tmp_path: Path) -> None:
    plan, _ = _plan(ABLATION)
    tune = tmp_path / "tune"
    old = _trial_dir(tune, "train_trial_aaaaa_00000_0_old", "base/seed0", [1, 2])
    _trial_dir(tune, "train_trial_bbbbb_00000_0_new", "base/seed0", [1])
    _trial_dir(tune, "train_trial_aaaaa_00001_1_other", "como=none/seed0", [1, 2, 3])
    (tune / "train_trial_ccccc_00000_0_junk").mkdir()
    (tune / "train_trial_ccccc_00000_0_junk" / "params.json").write_text("{not json")
    found = checkpoints_of(str(tune), "base/seed0", plan)
    assert [(epochs, path.parent) for epochs, path in found][0] == (2, old)
    assert sorted(e for e, _ in found) == [1, 1, 2]


def test_tune_state_is_read_without_unpickling(tmp_path: Path) -> None:
    tune = tmp_path / "tune"
    assert tune_state(str(tune)) is TuneState.NONE
    tune.mkdir()
    marker = tmp_path / "unpickled"
    whole = pickle.dumps(_Planted(marker))  # a whole pickle: its opcodes are read, never run
    (tune / "tuner.pkl").write_bytes(whole)
    assert tune_state(str(tune)) is TuneState.CORRUPT  # no snapshot at all
    (tune / "experiment_state-2026-01-01_00-00-00.json").write_text(
        json.dumps({"trial_data": [], "runner_data": "80"}))
    assert tune_state(str(tune)) is TuneState.RESTORABLE
    (tune / "tuner.pkl").write_bytes(whole[:-1])  # truncated before its STOP
    assert tune_state(str(tune)) is TuneState.CORRUPT
    assert not marker.exists()
    (tune / "tuner.pkl").write_bytes(whole)
    newer = tune / "experiment_state-2026-01-02_00-00-00.json"
    newer.write_text('{"trial_data": [["{\\"stub\\"')  # truncated mid-write
    assert tune_state(str(tune)) is TuneState.CORRUPT
    newer.unlink()
    # The grid's search state: Tune unpickles the newest by name, so a cut one fails the restore.
    (tune / "basic-variant-state-2026-01-01_00-00-00.json").write_bytes(whole)
    assert tune_state(str(tune)) is TuneState.RESTORABLE
    (tune / "basic-variant-state-2026-01-02_00-00-00.json").write_bytes(whole[:-1])
    assert tune_state(str(tune)) is TuneState.CORRUPT
    assert not marker.exists()


class _Planted:
    """A pickle that makes a directory when it is unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return os.mkdir, (str(self.marker),)


@pytest.fixture
def tracked(tracking_uri: str):
    """An MLflow study with base/seed0 FINISHED and como=none/seed0 cut short after 2 epochs."""
    from ablate.study.identity import TrialIdentity
    from ablate.tracking.connect import connect
    from ablate.tracking.runs import chosen_trial_runs
    from ablate.tracking.study import StudyTracker

    client = connect(tracking_uri)
    tracker = StudyTracker(client, "ident", "hash", {})
    done = tracker.child(TrialIdentity("base/seed0", "base", 0, "h0"), "t0", {"seed": 0})
    tracker.log_epochs(done, [{"epoch": e, "loss": 1.0 / e} for e in (1, 2, 3)])
    tracker.finish(done, [])
    cut = tracker.child(TrialIdentity("como=none/seed0", "como=none", 0, "h1"), "t1",
                        {"seed": 0})
    tracker.log_epochs(cut, [{"epoch": e, "loss": 1.0 / e} for e in (1, 2)])
    tracker.stop(cut, "KILLED")
    return client, chosen_trial_runs(client, "ident"), cut


def test_lost_ray_state_adopts_finished_and_resumes_covered_trials(tracked,
                                                                   tmp_path: Path) -> None:
    client, runs, _ = tracked
    plan, _ = _plan(ABLATION)
    tune = tmp_path / "runs" / "ident" / "tune"
    _trial_dir(tune, "train_trial_aaaaa_00001_1_x", "como=none/seed0", [1, 2])
    attempt = plan_attempt(plan, runs, TuneState.CORRUPT, str(tune), client, _keys(plan))
    assert not attempt.restore
    assert attempt.keys == ("base/seed1", "como=none/seed0", "como=none/seed1")
    assert attempt.note == (f"Ray's state under {tune} is unreadable: 1 finished trial(s) "
                            f"adopted from MLflow, 3 to run (from their checkpoints where they "
                            f"have some)")
    assert plan_attempt(plan, runs, TuneState.RESTORABLE, str(tune), client, _keys(plan)).restore


def test_lost_checkpoints_of_logged_epochs_are_refused(tracked, tmp_path: Path) -> None:
    client, runs, cut = tracked
    plan, _ = _plan(ABLATION)
    tune = tmp_path / "elsewhere" / "ident" / "tune"
    with pytest.raises(AblateError) as error:
        plan_attempt(plan, runs, TuneState.NONE, str(tune), client, _keys(plan))
    assert str(error.value) == (
        f"study 'ident': Ray's state under {tune} is gone, and 1 unfinished trial(s) logged "
        f"epochs that no checkpoint covers: como=none/seed0 (run {cut}, 2 epoch(s) logged); "
        f"delete their MLflow runs (mlflow runs delete --run-id ID) to train them again from "
        f"scratch, or run the spec as a new study with --name NEW_NAME")


def test_a_search_without_its_ray_state_is_refused_once_it_has_trials(tracked,
                                                                      tmp_path: Path) -> None:
    client, runs, _ = tracked
    plan, _ = _plan(SEARCH)
    tune = tmp_path / "tune"
    assert not plan_attempt(plan, {}, TuneState.NONE, str(tune), client, _keys(plan)).restore
    with pytest.raises(AblateError, match=r"^study 'srch': Ray's state under .* is gone, and a "
                                          r"search cannot continue without it .* while MLflow "
                                          r"holds 2 of its trials; "):
        plan_attempt(plan, runs, TuneState.NONE, str(tune), client, _keys(plan))


def _keys(plan: Plan) -> list[str] | None:
    """The trials a plan's only stage runs: its planned trials, none for a search."""
    return None if plan.spec.search is not None else plan.keys


def test_epochs_filled_in_from_a_checkpoint_log_what_a_live_report_logs(tracking_uri: str) -> None:
    """A checkpoint's history also holds the loss terms; an epoch logged from it (the driver
    was down when it was reported) records the same metrics as one logged live."""
    from mlflow import MlflowClient

    from ablate.study.identity import TrialIdentity
    from tests.studykit import study_tracker

    tracker = study_tracker(tracking_uri, "fill", "hash")
    run = tracker.child(TrialIdentity("base/seed0", "base", 0, "h0"), "t0", {"seed": 0})
    tracker.log_epochs(run, [{"epoch": 1, "loss": 0.5, "mil": 0.3, "total": 0.6, "auc": 0.7,
                              "val_auc": 0.8, "gate_abnormal": 0.2}])
    assert set(MlflowClient(tracking_uri).get_run(run).data.metrics) == {
        "loss", "auc", "val_auc", "gate_abnormal"}
