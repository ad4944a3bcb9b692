"""The fused trials' rungs decide as Tune's ASHA does, and survive a snapshot."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import pytest
from ray.tune.schedulers import TrialScheduler
from ray.tune.schedulers.async_hyperband import _Bracket

from ablate.study.rungs import Rungs


def _stream(rng: random.Random, trials: int, max_t: int) -> list[tuple[str, int, float]]:
    """Every trial's results epoch by epoch, interleaved at random as asynchronous trials'
    results reach a scheduler; a few values repeat, to exercise ties."""
    pending = {f"t{i}": 1 for i in range(trials)}
    out = []
    while pending:
        key = rng.choice(sorted(pending))
        epoch = pending[key]
        out.append((key, epoch, round(rng.random(), 1 if rng.random() < 0.3 else 6)))
        pending[key] += 1
        if pending[key] > max_t:
            del pending[key]
    return out


@pytest.mark.parametrize("grace, max_t, factor, mode", [
    (1, 10, 2, "max"), (2, 20, 2, "max"), (2, 20, 3, "min"), (1, 9, 3, "max"), (3, 4, 2, "min"),
])
@pytest.mark.parametrize("seed", range(5))
def test_decisions_match_tunes_asha_bracket(grace: int, max_t: int, factor: int, mode: str,
                                            seed: int) -> None:
    rng = random.Random(seed)
    bracket = _Bracket(grace, max_t, factor, s=0)
    rungs = Rungs.asha(grace, max_t, factor, mode)
    assert rungs.milestones == tuple(m for m, _ in bracket._rungs)
    sign = 1.0 if mode == "max" else -1.0
    alive_tune: set[str] = set()
    alive_ours: set[str] = set()
    stops = 0
    for key, epoch, value in _stream(rng, trials=12, max_t=max_t):
        if epoch == 1:
            alive_tune.add(key)
            alive_ours.add(key)
        if key in alive_tune:  # Tune sends a stopped trial no more results
            if bracket.on_result(SimpleNamespace(trial_id=key), epoch,
                                 sign * value) == TrialScheduler.STOP:
                alive_tune.discard(key)
                stops += 1
        if key in alive_ours and not rungs.decide(key, epoch, value):
            alive_ours.discard(key)
        assert alive_ours == alive_tune, (key, epoch)
    assert stops > 0  # the streams do exercise stopping


def test_a_stopped_trial_stays_stopped_across_a_snapshot() -> None:
    rungs = Rungs.asha(2, 8, 2, "max")
    assert rungs.decide_all({"a": (2, 0.9), "b": (2, 0.5)}) == ["b"]
    restored = Rungs.from_json(json.loads(json.dumps(rungs.to_json())))
    assert restored == rungs
    assert restored.stopped == {"b": 2}
    assert restored.stopped_at({"a": 2, "b": 2, "c": 2}) == ["b"]
    assert not restored.decide("b", 3, 1.0)  # a better value later changes nothing
    assert restored.decide("c", 2, 0.95)
    assert restored.decide_all({"a": (4, 0.2), "c": (4, 0.99)}) == []  # first at 4: no cutoff
    assert restored.decide_all({"d": (2, 0.1)}) == ["d"]


def test_a_missing_metric_records_nothing() -> None:
    rungs = Rungs.asha(1, 4, 2, "min")
    assert rungs.decide("a", 1, None)
    assert rungs.recorded[1] == {}
    assert rungs.decide("b", 1, 0.5) and not rungs.decide("c", 1, 0.7)  # min: larger is worse


@pytest.mark.parametrize("body, problem", [
    ({"recorded": {}, "stopped": {}}, "no 'milestones'"),
    ([1, 2], "expected a JSON object, got list"),
    ({"milestones": [4, 2], "reduction_factor": 2, "sign": 1, "recorded": {"2": []},
      "stopped": {}}, "'recorded' must map each milestone to"),
    ({"milestones": [4, "x"], "reduction_factor": 2, "sign": 1, "recorded": {},
      "stopped": {}}, "could not convert string to float: 'x'"),
    ({"milestones": [4.5, 2], "reduction_factor": 2, "sign": 1, "recorded": {},
      "stopped": {}}, "4.5 is not a whole number of epochs"),
    ({"milestones": [4, 2], "reduction_factor": 2, "sign": 1, "recorded": {"2": {}},
      "stopped": {}}, r"'recorded' has milestones \[2\], not the rungs' \[2, 4\]"),
    ({"milestones": [4, 2], "reduction_factor": 2, "sign": 0, "recorded": {},
      "stopped": {}}, "sign must be 1 or -1, got 0"),
])
def test_a_damaged_snapshot_is_refused_naming_the_problem(body: object, problem: str,
                                                          tmp_path) -> None:
    from ablate.engine.tune_setup import start_rungs
    from ablate.errors import AblateError
    from ablate.study.plan import build_plan
    from ablate.study.spec import parse_spec
    from ablate.study.storage import StudyDir

    with pytest.raises(ValueError, match=problem):
        Rungs.from_json(body)
    plan = build_plan(parse_spec({
        "name": "r", "base": "full", "seeds": [0, 1], "fuse": "seeds",
        "scheduler": {"type": "asha"},
        "ablation": {"design": "leave_one_out", "axes": {"model.como.type": ["none"]}}}))
    study_dir = StudyDir.at(str(tmp_path), "r")
    study_dir.write_rungs(body)
    with pytest.raises(AblateError, match=f"rungs.json is not a snapshot of the study's ASHA "
                                          f"rungs \\({problem}.*; restore it"):
        start_rungs(plan, study_dir)  # before any Ray actor is started


def test_a_snapshot_of_other_rungs_is_refused(tmp_path) -> None:
    """A readable snapshot whose schedule is not the one the study's spec gives now."""
    from ablate.engine.tune_setup import start_rungs
    from ablate.errors import AblateError
    from ablate.study.plan import build_plan
    from ablate.study.spec import parse_spec
    from ablate.study.storage import StudyDir

    plan = build_plan(parse_spec({
        "name": "r", "base": "full", "seeds": [0, 1], "fuse": "seeds",
        "overrides": {"train.epochs": 16}, "scheduler": {"type": "asha", "grace_period": 2},
        "ablation": {"design": "leave_one_out", "axes": {"model.como.type": ["none"]}}}))
    assert plan.member_rungs().same_schedule(Rungs.asha(2, 16, 2, "max"))
    assert not plan.member_rungs().same_schedule(Rungs.asha(1, 8, 2, "max"))
    study_dir = StudyDir.at(str(tmp_path), "r")
    study_dir.write_rungs(Rungs.asha(1, 8, 2, "max").to_json())
    with pytest.raises(AblateError, match=r"milestones \[8, 4, 2, 1\], reduction factor 2, "
                                          r"sign 1; the spec gives \[16, 8, 4, 2\], 2, 1"):
        start_rungs(plan, study_dir)
