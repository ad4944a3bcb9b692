"""The driver's progress line over a study's rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from ablate.engine.context import StudyContext
from ablate.study.plan import GROUP_KEY, build_plan
from ablate.study.record import DONE, RUNNING
from ablate.study.spec import parse_spec
from ablate.study.storage import StudyDir


@pytest.mark.parametrize("fuse, running", [
    ({"fuse": "seeds", "fuse_members": 2}, "4 running in 2 fused Tune trials,"),
    ({"fuse": "seeds", "fuse_members": 1}, "2 running,"),  # one member each: no more to say
    ({}, "2 running,"),
])
def test_progress_counts_running_members_and_their_tune_trials(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], fuse: dict, running: str) -> None:
    plan = build_plan(parse_spec({
        "name": "p", "base": "full", "seeds": [0, 1, 2, 3], **fuse,
        "ablation": {"design": "leave_one_out", "axes": {"model.como.type": ["none"]}}}))
    ctx = StudyContext(plan=plan, tracker=None, study_dir=StudyDir.at(str(tmp_path), "p"),
                       total=plan.total)
    configs = ([{GROUP_KEY: name} for name in plan.groups] if plan.fused
               else [{"trial_key": key} for key in plan.keys])
    for i, config in enumerate(configs[:3]):
        for member in ctx.members(f"t{i}", config):  # the first done, the next two running
            ctx.update(member, state=DONE if i == 0 else RUNNING)
    ctx.progress(force=True)
    done = len(plan.members(configs[0]))
    assert f"trials {done}/8 done, {running} 0 failed" in capsys.readouterr().err
