"""The typed plan: resolved once, hashed over what the trials are, recorded for resume."""

from __future__ import annotations

import dataclasses
import pickle
import re
from pathlib import Path

import pytest

import ablate.config
import ablate.models.spec
from ablate.errors import AblateError
from ablate.models import build_model, build_objective
from ablate.study import plan as plan_module
from ablate.study import variants as variants_module
from ablate.study.plan import build_plan
from ablate.study.record import StudyRecord
from ablate.study.spec import parse_spec

STUDY = {"name": "plan", "base": "full", "seeds": [0, 1],
         "ablation": {"design": "leave_one_out",
                      "axes": {"model.como.relations": [["context"], ["motion"]]}}}


def test_each_trial_config_is_resolved_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def counting(real):
        def resolve(*args, **kwargs):
            calls.append(args)
            return real(*args, **kwargs)
        return resolve

    for name in ("resolve_model_spec", "resolve_loss_spec"):
        wrapped = counting(getattr(ablate.models.spec, name))
        for module in (ablate.models.spec, ablate.models):  # every module binding the name
            monkeypatch.setattr(module, name, wrapped)
    plan = build_plan(parse_spec(STUDY))
    # The base and the two changed variants, model and loss once each: seeds copy a resolved
    # config.
    assert len(plan.variants) == 3 and len(plan.trials) == 6
    assert len(calls) == 6
    calls.clear()
    shipped = pickle.loads(pickle.dumps(plan))  # what a Ray worker receives
    trial = shipped.trial({"trial_key": "como.relations=motion/seed1"})
    assert trial.config.seed == 1 and trial.config.model["como"]["relations"] == ["motion"]
    model = build_model(trial.config.model, in_dim=8)  # what the trainer builds from it
    build_objective(trial.config.loss, model)
    assert model.como.relations == ["motion"]
    assert calls == []


def test_builders_refuse_a_raw_spec() -> None:
    with pytest.raises(ValueError, match="resolve_model_spec first"):
        build_model({"como": {"type": "como", "relations": ["motion"]}}, in_dim=8)


def test_hash_covers_resolved_configs_not_raw_spelling() -> None:
    plain = build_plan(parse_spec(STUDY))
    default = ablate.config.TrainOptions().epochs
    spelled = build_plan(parse_spec({**STUDY, "overrides": {"train.epochs": default}}))
    changed = build_plan(parse_spec({**STUDY, "overrides": {"train.epochs": default + 1}}))
    assert plain.hash == spelled.hash != changed.hash
    assert _record(plain).changes_to(changed)[0] == (
        f"base: train.epochs {default!r} -> {default + 1!r}")


def test_a_changed_code_default_is_refused_on_resume_naming_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ablate.engine.runner import run_study
    from ablate.study.storage import StudyDir

    before = build_plan(parse_spec(STUDY))
    directory = StudyDir.at(str(tmp_path / "runs"), "plan")
    directory.write_record(_record(before))

    real = variants_module.resolve_trial_config

    def new_default(raw):  # as if a release changed the default CoMo width
        config = real(raw)
        como = {**config.model["como"], "hidden": 96}
        return dataclasses.replace(config, model={**config.model, "como": como})

    monkeypatch.setattr(variants_module, "resolve_trial_config", new_default)
    monkeypatch.setattr(plan_module, "resolve_trial_config", new_default)
    after = build_plan(parse_spec(STUDY))
    assert after.hash != before.hash
    with pytest.raises(AblateError) as error:
        run_study(after, str(tmp_path / "runs"), f"sqlite:///{tmp_path / 'm.db'}", None,
                  quiet=True)
    message = str(error.value)
    assert f"hash {before.hash}, now {after.hash}" in message
    assert "model.como.hidden" in message and "--name NEW_NAME" in message
    assert sorted(p.name for p in (tmp_path / "runs" / "plan").iterdir()) == ["study.json"]


def test_a_changed_selection_is_named() -> None:
    """Keys of the spec that select trials or how they run, not their configs: more seeds, or
    fusing, change the plan while every variant's config stays as it was."""
    before = build_plan(parse_spec(STUDY))
    record = _record(before)
    after = build_plan(parse_spec({**STUDY, "seeds": [0, 1, 2], "fuse": "seeds"}))
    assert record.changes_to(after) == ["fuse: 'none' -> 'seeds'", "seeds: [0, 1] -> [0, 1, 2]"]
    assert record.changes_to(before) == []


def test_record_names_each_trials_variant_and_seed() -> None:
    record = _record(build_plan(parse_spec(STUDY))).to_json()
    assert record["trials"][:2] == [{"key": "base/seed0", "variant": "base", "seed": 0},
                                    {"key": "base/seed1", "variant": "base", "seed": 1}]
    assert set(record["configs"]) == {"base", "como.relations=context",
                                      "como.relations=motion"}
    assert StudyRecord.from_json(record, "study.json") == _record(build_plan(parse_spec(STUDY)),
                                                                  created=record["created"])


def test_search_trials_resolve_once_per_sampled_config() -> None:
    plan = build_plan(parse_spec({
        "name": "s", "base": "full", "seeds": [3, 4],
        "search": {"num_samples": 2, "space": {"train.lr": {"loguniform": [1e-4, 1e-2]}}}}))
    assert plan.trials == () and plan.total == 4
    first = plan.trial({"train.lr": 0.003, "__trial_index__": 1})
    assert first is plan.trial({"__trial_index__": 1, "train.lr": 0.003})  # memoised
    assert first.seed == 4 and first.config.train.lr == 0.003


@pytest.mark.parametrize("fuse, groups", [
    ("seeds", {"base": ["base/seed0", "base/seed1"],
               "como=none": ["como=none/seed0", "como=none/seed1"],
               "train.lr=0.0003": ["train.lr=0.0003/seed0", "train.lr=0.0003/seed1"],
               "rd_weight=0.5": ["rd_weight=0.5/seed0", "rd_weight=0.5/seed1"]}),
    ("compatible", {"base+2": ["base/seed0", "base/seed1", "train.lr=0.0003/seed0",
                               "train.lr=0.0003/seed1", "rd_weight=0.5/seed0",
                               "rd_weight=0.5/seed1"],
                    "como=none": ["como=none/seed0", "como=none/seed1"]}),
])
def test_fused_groups_share_one_model(fuse: str, groups: dict[str, list[str]]) -> None:
    """``seeds`` fuses a variant's seeds; ``compatible`` also fuses variants that differ only
    in numeric training options or the loss, never different architectures."""
    from ablate.study.plan import GROUP_KEY
    from ablate.train.fused import check_fusable

    plan = build_plan(parse_spec({
        "name": "g", "base": "full", "seeds": [0, 1], "fuse": fuse, "fuse_members": 6,
        "ablation": {"design": "leave_one_out", "axes": {
            "model.como.type": ["none"], "train.lr": [3e-4], "loss.rd_weight": [0.5]}}}))
    found = {name: [t.key for t in members] for name, members in plan.groups.items()}
    assert found == groups
    assert _record(plan).to_json()["groups"] == groups
    assert plan.units(plan.keys) == (GROUP_KEY, list(groups))
    assert plan.units(["como=none/seed1"]) == (GROUP_KEY, ["como=none"])
    for name, members in plan.groups.items():
        assert plan.members({GROUP_KEY: name}) == members
        check_fusable([t.config for t in members])  # the fused trainer accepts each group
    unfused = build_plan(parse_spec({"name": "g", "base": "full", "seeds": [0, 1],
                                     "ablation": {"design": "leave_one_out",
                                                  "axes": {"model.como.type": ["none"]}}}))
    assert not unfused.fused and unfused.groups == {}
    assert "groups" not in _record(unfused).to_json()


FUSED = {"name": "g", "base": "full", "seeds": [0, 1, 2, 3, 4], "fuse": "seeds",
         "ablation": {"design": "leave_one_out", "axes": {"model.como.type": ["none"]}}}


@pytest.mark.parametrize("settings, sizes", [
    ({"fuse_members": 2}, {"base#1": 2, "base#2": 2, "base#3": 1,
                           "como=none#1": 2, "como=none#2": 2, "como=none#3": 1}),
    ({"fuse_members": 5}, {"base": 5, "como=none": 5}),
    ({"resources": {"cpu": 1, "gpu": 0.25}}, {"base": 5, "como=none": 5}),  # auto, GPUs
    ({"max_concurrent": 1, "seeds": 16},  # auto, CPU: 32 trials, 1 slot -> 4 per Tune trial
     {f"{v}#{i}": 4 for v in ("base", "como=none") for i in range(1, 5)}),
    ({}, {f"{v}#{i}": 1 for v in ("base", "como=none") for i in range(1, 6)}),  # 10 on 2 slots
])
def test_fused_groups_are_split_to_the_members_per_trial(settings: dict,
                                                         sizes: dict[str, int]) -> None:
    """A group larger than ``fuse_members`` (auto: a whole group on GPUs; on CPU about 8 Tune
    trials per slot) splits into consecutive parts whose sizes differ by at most one."""
    plan = build_plan(parse_spec({**FUSED, **settings}))
    assert {name: len(members) for name, members in plan.groups.items()} == sizes
    for variant in ("base", "como=none"):  # every seed once, in order, in its variant's parts
        keys = [t.key for name, members in plan.groups.items() for t in members
                if name.split("#")[0] == variant]
        assert keys == [t.key for t in plan.trials if t.variant == variant]


def test_a_resumed_study_keeps_its_recorded_groups() -> None:
    """Auto sizing follows resources and concurrency, which a resume may change: the record's
    groups win; a record from before groups were recorded had whole groups; a record that does
    not partition the plan is refused."""
    on_gpus = build_plan(parse_spec({**FUSED, "resources": {"cpu": 1, "gpu": 0.5}}))
    on_cpu = build_plan(parse_spec(FUSED))
    assert on_gpus.hash == on_cpu.hash and len(on_gpus.groups) != len(on_cpu.groups)
    resumed = on_cpu.regrouped(_record(on_gpus).groups)
    assert resumed.groups == on_gpus.groups and resumed.hash == on_cpu.hash
    assert resumed.members({"group_key": "base"}) == on_gpus.groups["base"]
    assert on_gpus.regrouped(_record(on_cpu).groups).groups == on_cpu.groups
    assert on_cpu.regrouped(None).groups == on_gpus.groups  # a record from before groups
    recorded = _record(on_gpus).groups
    assert recorded is not None
    with pytest.raises(AblateError, match="exactly once"):
        on_cpu.regrouped({**recorded, "base": recorded["base"][:-1]})
    mixed = {"a": recorded["base"][:1] + recorded["como=none"][:1],
             "b": recorded["base"][1:] + recorded["como=none"][1:]}
    with pytest.raises(AblateError, match="'a' mixes models"):
        on_cpu.regrouped(mixed)
    body = _record(on_gpus).to_json()
    for damaged in (list(recorded), {"base": "base/seed0"}, {"base": [0, 1]}):
        with pytest.raises(AblateError, match="not a mapping of group names to lists of trial"):
            StudyRecord.from_json({**body, "groups": damaged}, "study.json")


def test_compatible_parts_are_named_after_their_own_variants() -> None:
    plan = build_plan(parse_spec({
        "name": "g", "base": "full", "seeds": [0, 1], "fuse": "compatible", "fuse_members": 4,
        "ablation": {"design": "leave_one_out", "axes": {
            "model.como.type": ["none"], "train.lr": [3e-4], "loss.rd_weight": [0.5]}}}))
    assert {name: [t.key for t in members] for name, members in plan.groups.items()} == {
        "base+1#1": ["base/seed0", "base/seed1", "train.lr=0.0003/seed0"],
        "train.lr=0.0003+1#2": ["train.lr=0.0003/seed1", "rd_weight=0.5/seed0",
                                "rd_weight=0.5/seed1"],
        "como=none": ["como=none/seed0", "como=none/seed1"]}


@pytest.mark.parametrize("settings, problem", [
    ({"fuse": "none", "fuse_members": 2}, "applies to fused studies"),
    ({"fuse_members": 0}, "must be >= 1, got 0"),
    ({"fuse_members": "all"}, "expected int or one of auto, got str ('all')"),
    ({"fuse_members": True}, "expected int or one of auto, got bool (True)"),
])
def test_bad_fuse_members_is_refused(settings: dict, problem: str) -> None:
    with pytest.raises(AblateError, match=re.escape(f"fuse_members: {problem}")):
        parse_spec({**FUSED, **settings})


def test_fuse_members_given_is_part_of_the_plan_hash() -> None:
    auto = build_plan(parse_spec(FUSED)).hash
    assert build_plan(parse_spec({**FUSED, "fuse_members": "auto"})).hash == auto
    assert build_plan(parse_spec({**FUSED, "fuse_members": 2})).hash != auto


def _record(plan, created: float | None = None) -> StudyRecord:
    """The record a study of ``plan`` writes when it first runs."""
    record = StudyRecord.of_plan(plan, "synthetic", "sha")
    return record if created is None else dataclasses.replace(record, created=created)
