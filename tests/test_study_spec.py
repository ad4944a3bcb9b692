"""Study specs: validation (before anything runs), expansion, conditional axes, dry runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from ablate.cli import cli
from ablate.study.plan import build_plan
from ablate.study.spec import load_spec, parse_spec
from ablate.study.variants import variants

SPECS = Path(__file__).resolve().parents[1] / "search_spaces"

MINIMAL = {
    "name": "t",
    "base": "full",
    "ablation": {"design": "grid", "axes": {"model.clav.type": ["clav", "none"]}},
    "seeds": [0, 1],
}


def _spec(**changes: object) -> dict:
    spec = yaml.safe_load(yaml.safe_dump(MINIMAL))
    spec.update(changes)
    return spec


@pytest.mark.parametrize(("name", "count", "n_variants"), [
    ("smoke", 6, 3), ("como", 112, 8), ("clav", 21, 7), ("full", 27, 9)])
def test_shipped_specs_expand(name: str, count: int, n_variants: int) -> None:
    trials = build_plan(load_spec(SPECS / f"{name}.yaml")).trials
    assert len(trials) == count
    assert len({t.variant for t in trials}) == n_variants
    assert len({t.key for t in trials}) == count  # no duplicate trials
    # Every variant runs the same seeds, so results pair.
    seeds = {t.variant: set() for t in trials}
    for t in trials:
        seeds[t.variant].add(t.seed)
    assert len({frozenset(s) for s in seeds.values()}) == 1


def test_every_shipped_spec_starts_with_its_question() -> None:
    for path in SPECS.glob("*.yaml"):
        assert path.read_text().startswith("# Question:"), path.name
        load_spec(path)


def test_switched_off_component_does_not_multiply_trials() -> None:
    spec = parse_spec(_spec(ablation={"design": "grid", "axes": {
        "model.clav.type": ["clav", "none"],
        "model.clav.margin": [0.5, 1.0, 2.0]}}))
    names = [v.name for v in variants(spec)]
    # 3 margins with CLAV on + 1 with CLAV off; not 6.
    assert len(names) == 4
    assert "clav=none" in names and "base" in names


def test_leave_one_out_and_add_one_in() -> None:
    loo = parse_spec(_spec(ablation={"design": "leave_one_out", "axes": {
        "model.clav.type": ["none"], "model.como.relations": [["motion"], ["context_motion"]]}}))
    assert [v.name for v in variants(loo)] == [
        "base", "clav=none", "como.relations=motion", "como.relations=context_motion"]
    add = parse_spec(_spec(reference="baseline", base_name="full", ablation={
        "design": "add_one_in", "axes": {"model.clav.type": ["clav"],
                                         "model.como.type": ["como"]}}))
    assert [v.name for v in variants(add)] == [
        "reference", "reference+clav=clav", "reference+como=como", "full"]


def test_relation_order_does_not_make_a_new_variant() -> None:
    spec = parse_spec(_spec(ablation={"axes": {"model.como.relations": [
        ["motion", "context"], ["context", "motion"]]}}))
    assert len(variants(spec)) == 1


def test_spec_hash_ignores_resources_but_not_seeds() -> None:
    a = parse_spec(_spec())
    b = parse_spec(_spec(resources={"cpu": 2, "gpu": 0.5}, max_concurrent=8))
    c = parse_spec(_spec(seeds=[0, 1, 2]))
    assert build_plan(a).hash == build_plan(b).hash != build_plan(c).hash


BAD_SPECS = [
    ("name: t\nbase: full\nseeds: [0, 1\n",
     "bad.yaml: line 4: invalid YAML: expected ',' or ']', but got '<stream end>'"),
    ("name: t\nbase: full\nseedz: 2\n",
     "seedz: unknown key; did you mean 'seeds'? Allowed: name, description, dataset, base, "
     "base_name, overrides, ablation, seeds, search, scheduler, metric, mode, resources, "
     "max_concurrent, max_failures, reference, select_on_test, fuse, fuse_members, decision, "
     "confirm"),
    ("name: t\nbase: full\nablation:\n  axes:\n    model.clav.type: [clv]\n",
     "ablation.axes model.clav.type='clv': model.clav.type: unknown component 'clv'; did you "
     "mean 'clav'? Allowed: clav, none"),
    ("name: t\nbase: full\nablation:\n  axes:\n    model.clav.margin: [big]\n",
     "ablation.axes model.clav.margin='big': model.clav.margin: expected float, got str ('big')"),
    ("name: t\nbase: full\nablation:\n  axes:\n    model.clav.margin: []\n",
     "ablation.axes.model.clav.margin: empty axis; give at least one value under 'values'"),
    ("name: t\nbase: full\nseeds: 0\n", "seeds: must be >= 1, got 0"),
    ("name: t\nbase: full\nmax_concurrent: two\n",
     "max_concurrent: expected int, got str ('two')"),
    ("name: t\nbase: fulll\n",
     "base: unknown preset 'fulll'; allowed: baseline, clav_only, como_only, full, mil_ranking, "
     "rtfm or a mapping with model, loss, train"),
    ("name: t\nbase: full\nablation:\n  design: factorial\n",
     "ablation.design: expected one of grid, leave_one_out, add_one_in, got 'factorial'"),
    ("name: t\nbase: full\nmode: maximum\n", "mode: expected one of max, min, got 'maximum'"),
    ("name: t\nbase: full\nmetric: acc\n",
     "metric: expected one of val_auc, val_ap, auc, ap, ap_sklearn, auc_abnormal, got 'acc'"),
    ("name: t\nbase: full\nscheduler: {type: hyperband}\n",
     "scheduler.type: expected one of none, asha, got 'hyperband'"),
    ("name: t\nbase: full\nscheduler: {type: asha, grace_perod: 2}\n",
     "scheduler.grace_perod: unknown key; did you mean 'grace_period'? Allowed: grace_period, "
     "reduction_factor, type"),
    ("name: t\nbase: full\nscheduler: {type: asha, reduction_factor: 1}\n",
     "scheduler.reduction_factor: must be >= 2, got 1"),
    ("name: t\nbase: full\nresources: {cpu: two}\n",
     "resources.cpu: expected float, got str ('two')"),
    ("name: t\nbase: full\nselect_on_test: yes please\n",
     "select_on_test: expected bool, got str ('yes please')"),
    ("name: t\nbase: full\nsearch:\n  algorithm: grid\n  space: {train.lr: {values: [1]}}\n",
     "search.algorithm: expected one of optuna, random, got 'grid'"),
    ("name: t\nbase: full\nsearch:\n  space:\n    train.epochs: {int: [1, 2.5]}\n",
     "search.space.train.epochs.int: expected int, got float (2.5)"),
    ("name: t\nbase: full\nsearch:\n  space:\n    train.lr: {normal: [0, 1]}\n",
     "search.space.train.lr: expected one of values, uniform, loguniform, int, got 'normal'"),
    ("name: t\nbase: full\nsearch:\n  space:\n    train.lr: {loguniform: [0, 1]}\n",
     "search.space.train.lr.loguniform: expected 0 < low < high for loguniform and low < high "
     "otherwise, got [0, 1]"),
]


@pytest.mark.parametrize(("text", "message"), BAD_SPECS)
def test_bad_spec_is_one_line_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 text: str, message: str) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text(text)
    result = CliRunner().invoke(cli, ["run", "bad.yaml"])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].endswith(message), lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]  # no mlflow.db, no runs/


def test_bad_spec_through_the_real_entry_point(tmp_path: Path) -> None:
    from tests.conftest import run_cli

    (tmp_path / "bad.yaml").write_text("name: t\nbase: full\nseeds: -1\n")
    result = run_cli("run", "bad.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["error: seeds: must be >= 1, got -1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_dry_run_prints_the_factorial() -> None:
    result = CliRunner().invoke(cli, ["run", str(SPECS / "full.yaml"), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == (
        "study 'full' (grid): 9 variants x 3 seed(s) = 27 trials")
    assert "clav=none,como=none" in result.output


@pytest.mark.parametrize("settings, line", [
    ({}, "fused (seeds; auto: at most 3 per Tune trial on CPU, 2 at a time): 16 Tune trial(s): "
         "full#1 (3); full#2 (3); como.relations=motion#1 (3)"),
    ({"resources": {"cpu": 1, "gpu": 0.5}},
     "fused (seeds; auto: whole groups on GPUs): 8 Tune trial(s): full (6); "),
    ({"fuse_members": 4}, "fused (seeds; fuse_members 4): 16 Tune trial(s): full#1 (3); "),
])
def test_dry_run_prints_the_fused_groups_and_their_sizing(tmp_path: Path, settings: dict,
                                                          line: str) -> None:
    raw = {**yaml.safe_load((SPECS / "como.yaml").read_text()), "fuse": "seeds", **settings}
    (tmp_path / "fused.yaml").write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(cli, ["run", str(tmp_path / "fused.yaml"), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert line in result.output


def test_dry_run_of_a_search() -> None:
    result = CliRunner().invoke(cli, ["run", str(SPECS / "hpo.yaml"), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "16 samples x 1 seed(s) = 16 trials; scheduler asha" in result.output


SEARCH = {"algorithm": "random", "num_samples": 2, "space": {"train.lr": {"values": [1e-3]}}}


def test_selection_defaults_to_validation() -> None:
    assert parse_spec(_spec()).metric == "val_auc"
    assert load_spec(SPECS / "hpo.yaml").metric == "val_auc"


@pytest.mark.parametrize("how, changes", [
    ("a search", {"search": SEARCH}),
    ("an early-stopping scheduler", {"scheduler": {"type": "asha"}}),
])
def test_selecting_on_test_must_be_said(how: str, changes: dict) -> None:
    raw = _spec(metric="auc", **changes)
    if "search" in changes:
        raw.pop("ablation")
    with pytest.raises(Exception) as caught:
        parse_spec(raw)
    assert str(caught.value) == (
        f"metric: 'auc' is a test metric, and this study selects ({how}); select on validation "
        "(val_auc, val_ap), or set select_on_test: true to select on test (the report then "
        "marks the results test-tuned)")
    spec = parse_spec({**raw, "select_on_test": True})
    assert spec.select_on_test and spec.metric == "auc"
    assert build_plan(spec).hash != build_plan(parse_spec({**raw, "metric": "val_auc"})).hash


def test_an_ablation_may_rank_by_a_test_metric_without_selecting() -> None:
    assert parse_spec(_spec(metric="ap")).metric == "ap"


def test_yaml_1_1_scientific_notation_reads_as_a_number() -> None:
    """PyYAML reads ``1e-4`` as a string; a numeric field reads it as the number it means."""
    raw = yaml.safe_load("name: t\nbase: full\nsearch:\n  algorithm: random\n  space:\n"
                         "    train.lr: {loguniform: [1e-4, 1e-2]}\nresources: {cpu: 5e-1}\n")
    spec = parse_spec(raw)
    assert spec.search is not None
    assert spec.search.space["train.lr"].args == (1e-4, 1e-2)
    assert spec.resources.cpu == 0.5


def test_enumerations_are_the_field_annotations() -> None:
    """The choices a spec accepts are read from the annotations of the fields they fill."""
    import typing

    from ablate.metrics import METRICS as TEST_METRICS
    from ablate.metrics import VALIDATION_METRICS
    from ablate.study import schedulers
    from ablate.study import spec as module

    hints = typing.get_type_hints(module.StudySpec)
    assert typing.get_args(hints["design"]) == module.DESIGNS
    assert typing.get_args(hints["mode"]) == module.MODES
    # The metric names are ablate.metrics' names: validation, then test.
    assert typing.get_args(hints["metric"]) == module.METRICS == (*VALIDATION_METRICS,
                                                                  *TEST_METRICS)
    assert typing.get_args(typing.get_type_hints(schedulers.SchedulerSpec)["type"]) == (
        schedulers.SCHEDULERS) == tuple(schedulers.SCHEDULES)
    assert typing.get_args(typing.get_type_hints(module.SearchSpec)["algorithm"]) == (
        module.ALGORITHMS)
    assert typing.get_args(typing.get_type_hints(module.Distribution)["kind"]) == (
        module.DISTRIBUTIONS)


# -- seeds, decisions, confirmation ---------------------------------------------------------------

def test_adaptive_seeds_are_part_of_the_identity() -> None:
    spec = parse_spec(_spec(seeds={"initial": 4, "max": 10, "step": 3}))
    assert spec.seeds == tuple(range(10)) and spec.adaptive.rounds == (4, 7, 10)
    assert spec.identity()["adaptive"] == {"initial": 4, "max": 10, "step": 3}
    fixed = build_plan(parse_spec(_spec(seeds=10))).hash
    assert build_plan(spec).hash != fixed
    assert build_plan(parse_spec(_spec(seeds={"initial": 4, "max": 10, "step": 2}))).hash != (
        build_plan(spec).hash)
    # Spelling out the default decision rule changes nothing the plan runs, but it is recorded.
    rule = parse_spec(_spec(decision={"metric": "auc", "alpha": 0.05, "delta": 0.01}))
    assert rule.rule == parse_spec(_spec()).rule and "decision" in rule.identity()
    assert "adaptive" not in parse_spec(_spec()).identity()


@pytest.mark.parametrize("settings, problem", [
    ({"seeds": {"initial": 1, "max": 4}}, "seeds.initial: must be >= 2, got 1"),
    ({"seeds": {"initial": 6, "max": 4}}, "seeds.max: must be >= 6, got 4"),
    ({"seeds": {"initial": 6}}, "seeds.max: missing; expected a count >= 1, a non-empty list of "
                                "seeds, or {initial, max, step}"),
    ({"seeds": {"initial": 2, "max": 4, "stride": 2}}, "seeds.stride: unknown key"),
    ({"seeds": 1000000000}, "seeds: must be <= 1000, got 1000000000"),
    ({"seeds": [99999999999999999999999]}, "seeds[0]: must be <= 2147483647"),
    ({"decision": {"alpha": 0.7}}, "decision.alpha: must be in (0, 0.5], got 0.7"),
    ({"decision": {"delta": 0}}, "decision.delta: must be in (0, 1) (the metric's units), got 0"),
    ({"decision": {"metric": "auroc"}}, "decision.metric: expected one of val_auc, val_ap, auc, "
                                        "ap, ap_sklearn, auc_abnormal, got 'auroc'"),
    ({"confirm": {"top_k": 2}}, "confirm: confirms a search's best configurations"),
])
def test_bad_design_keys_are_refused(settings: dict, problem: str) -> None:
    import re

    from ablate.errors import ConfigError

    with pytest.raises(ConfigError, match=re.escape(problem)):
        build_plan(parse_spec(_spec(**settings)))


SEARCH = {"name": "s", "base": "full", "seeds": [0, 1],
          "search": {"num_samples": 2, "space": {"train.lr": {"loguniform": [1e-4, 1e-2]}}}}


def test_a_confirmation_runs_on_fresh_seeds_only() -> None:
    import re

    from ablate.errors import ConfigError

    counted = parse_spec({**SEARCH, "confirm": {"top_k": 2, "seeds": 3}})
    assert counted.confirm.seeds == (2, 3, 4) and counted.confirm.top_k == 2
    assert parse_spec({**SEARCH, "confirm": {"seeds": [7, 9]}}).confirm.seeds == (7, 9)
    with pytest.raises(ConfigError, match=re.escape(
            "confirm.seeds: [1] were the search's seeds; confirming on them would measure the "
            "search again")):
        parse_spec({**SEARCH, "confirm": {"seeds": [1, 5]}})
    with pytest.raises(ConfigError, match="adaptive seeds decide an ablation's comparisons"):
        parse_spec({**SEARCH, "seeds": {"initial": 2, "max": 4}})


def test_adaptive_seeds_need_the_base_among_the_variants() -> None:
    from ablate.errors import ConfigError

    spec = _spec(seeds={"initial": 2, "max": 4}, base_name="other",
                 ablation={"design": "grid", "axes": {"model.clav.type": ["none"]}})
    with pytest.raises(ConfigError, match="adaptive seeds decide each variant against the base "
                                          "'other', which this study does not run"):
        build_plan(parse_spec(spec))
