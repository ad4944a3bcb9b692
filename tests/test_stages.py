"""A study's stages without Ray: which rounds adaptive seeds pin, from which results, and a
search's confirmation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ablate.engine.stages import Stages
from ablate.errors import AblateError
from ablate.study.plan import build_plan
from ablate.study.spec import parse_spec
from ablate.study.storage import StudyDir
from ablate.tracking.runs import TrialRun

ADAPTIVE = {"name": "a", "base": "full", "seeds": {"initial": 2, "max": 6, "step": 2},
            "ablation": {"design": "leave_one_out",
                         "axes": {"model.como.type": ["none"], "model.clav.type": ["none"]}}}


def _runs(values: dict[str, list[float]]) -> dict[str, TrialRun]:
    """Finished runs with a final test AUC per variant and seed."""
    return {f"{v}/seed{s}": TrialRun(f"r-{v}-{s}", f"{v}/seed{s}", v, s, "FINISHED",
                                     metrics={"auc": auc})
            for v, aucs in values.items() for s, auc in enumerate(aucs)}


def test_rounds_add_seeds_only_where_undecided(tmp_path: Path) -> None:
    plan = build_plan(parse_spec(ADAPTIVE))
    study_dir = StudyDir.at(str(tmp_path), "a")
    stages = Stages(plan, study_dir)
    first, = stages.pinned()
    assert first.directory == "tune" and first.name == "round 1 (2 seeds)"
    assert sorted(first.keys) == sorted(f"{v}/seed{s}" for v in ("base", "como=none",
                                                                 "clav=none") for s in (0, 1))
    assert stages.total == 6
    # como=none: identical to the base (equivalent); clav=none: undecided on 2 seeds.
    runs = _runs({"base": [0.80, 0.82], "como=none": [0.80, 0.82], "clav=none": [0.70, 0.81]})
    second = stages.after(first, runs, [])
    assert second is not None and second.directory == "tune-round-2"
    assert sorted(second.keys) == ["base/seed2", "base/seed3", "clav=none/seed2",
                                   "clav=none/seed3"]
    assert stages.total == 10
    # The pinned rounds come back, the same, for a resumed study.
    resumed = Stages(plan, study_dir)
    assert [s.keys for s in resumed.pinned()] == [first.keys, second.keys]
    assert resumed.after(first, {}, []) == second
    # All decided: no more rounds, whatever max says.
    runs = _runs({"base": [0.80, 0.82, 0.81, 0.83], "como=none": [0.80, 0.82],
                  "clav=none": [0.80, 0.82, 0.81, 0.83]})
    assert stages.after(second, runs, []) is None


def test_the_last_round_is_max(tmp_path: Path) -> None:
    plan = build_plan(parse_spec({**ADAPTIVE, "seeds": {"initial": 2, "max": 3, "step": 2}}))
    stages = Stages(plan, StudyDir.at(str(tmp_path), "a"))
    first, = stages.pinned()
    second = stages.after(first, _runs({"base": [0.8, 0.9], "como=none": [0.7, 0.9],
                                        "clav=none": [0.6, 0.9]}), [])
    assert second is not None and second.name == "round 2 (3 seeds)"
    assert {k.rsplit("/", 1)[1] for k in second.keys} == {"seed2"}
    assert stages.after(second, {}, []) is None  # max reached


def test_a_damaged_stages_record_is_refused_naming_it(tmp_path: Path) -> None:
    plan = build_plan(parse_spec(ADAPTIVE))
    study_dir = StudyDir.at(str(tmp_path), "a")
    stages = Stages(plan, study_dir)
    path = tmp_path / "a" / "stages.json"
    assert not path.exists()  # the first round is pinned when the study runs, not before
    stages.pin_first()
    body = json.loads(path.read_text())
    body["stages"][0]["directory"] = "../elsewhere"
    path.write_text(json.dumps(body))
    with pytest.raises(AblateError, match="stages.json: stage 0 is not a recorded stage"):
        Stages(plan, study_dir)
    body["stages"][0] = {**body["stages"][0], "directory": "tune", "trials": ["ghost/seed0"]}
    path.write_text(json.dumps(body))
    with pytest.raises(AblateError, match="lists trials the plan does not have: ghost/seed0"):
        Stages(plan, study_dir).pinned()


def test_a_search_confirms_its_best_configurations(tmp_path: Path) -> None:
    plan = build_plan(parse_spec({
        "name": "s", "base": "full", "seeds": [0, 1], "confirm": {"top_k": 2, "seeds": 2},
        "search": {"num_samples": 3, "space": {"train.lr": {"loguniform": [1e-4, 1e-2]}}}}))
    stages = Stages(plan, StudyDir.at(str(tmp_path), "s"))
    search, = stages.pinned()
    assert search.keys is None and stages.total == 6
    sampled = [{"train.lr": lr, "__trial_index__": i} for lr in (1e-3, 2e-3, 3e-3)
               for i in (0, 1)]
    trials = [plan.trial(c) for c in sampled]
    scores = {1e-3: 0.7, 2e-3: 0.9, 3e-3: 0.8}
    runs = {t.key: TrialRun(t.key, t.key, t.variant, t.seed, "FINISHED",
                            metrics={"val_auc": scores[c["train.lr"]]})
            for t, c in zip(trials, sampled, strict=True)}
    confirm = stages.after(search, runs, sampled)
    assert confirm is not None and confirm.directory == "tune-confirm"
    best = [plan.trial({"train.lr": lr}).variant for lr in (2e-3, 3e-3)]
    assert sorted(confirm.keys) == sorted(f"{v}/seed{s}" for v in best for s in (2, 3))
    assert confirm.plan.trial({"trial_key": confirm.keys[0]}).config.seed in (2, 3)
    assert stages.total == 10
    assert stages.after(confirm, runs, []) is None
