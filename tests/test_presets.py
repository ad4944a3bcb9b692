"""Presets resolve and build; ``ablate list`` shows every slot, component and preset."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from ablate.models import (
    PRESET_SUMMARIES,
    PRESETS,
    REGISTRY,
    build_model,
    build_objective,
    resolve_loss_spec,
    resolve_model_spec,
)

D = 16


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_resolves_builds_and_trains(name: str) -> None:
    preset = PRESETS[name]
    assert set(preset) == {"model", "loss"}
    model_spec = resolve_model_spec(preset["model"])
    loss_spec = resolve_loss_spec(preset["loss"])

    torch.manual_seed(0)
    model = build_model(model_spec, in_dim=D)
    objective = build_objective(loss_spec, model)
    out = model(torch.randn(4, 32, D))
    loss, _ = objective(out, torch.tensor([0.0, 0.0, 1.0, 1.0]))
    loss.backward()
    assert torch.isfinite(loss)

    model.eval()
    with torch.no_grad():
        scores = model(torch.randn(1, 300, D)).scores  # one whole video of any length
    assert scores.shape == (1, 300)
    assert torch.isfinite(scores).all()


def test_presets_differ_where_they_should() -> None:
    full = build_model(resolve_model_spec(PRESETS["full"]["model"]), in_dim=D)
    assert full.clav is not None and full.como is not None
    assert full.spec["como"]["relations"] == ["temporal", "context", "motion", "context_motion"]
    baseline = build_model(resolve_model_spec(PRESETS["baseline"]["model"]), in_dim=D)
    assert baseline.clav is None and baseline.como is None
    assert build_model(resolve_model_spec(PRESETS["clav_only"]["model"]), in_dim=D).como is None
    assert build_model(resolve_model_spec(PRESETS["como_only"]["model"]), in_dim=D).clav is None
    assert resolve_loss_spec(PRESETS["mil_ranking"]["loss"])["mil"]["type"] == "mil_ranking"
    assert resolve_loss_spec(PRESETS["rtfm"]["loss"])["magnitude"]["type"] == "rtfm"
    assert set(PRESET_SUMMARIES) == set(PRESETS)


def test_a_preset_with_one_changed_key() -> None:
    raw = PRESETS["full"]["model"]
    changed = {**raw, "como": {**raw["como"], "relations": ["context_motion"]}}
    spec = resolve_model_spec(changed)
    assert spec["como"]["relations"] == ["context_motion"]
    assert spec["clav"] == resolve_model_spec(raw)["clav"]
    assert PRESETS["full"]["model"]["como"] == {"type": "como"}  # the preset is untouched


def test_ablate_list_shows_everything() -> None:
    from ablate.cli import cli

    result = CliRunner().invoke(cli, ["list"])
    assert result.exit_code == 0, result.output
    for slot in REGISTRY.slots():
        group = REGISTRY.slot(slot).group
        assert f"{group}.{slot} " in result.output
        for name in REGISTRY.components(slot):
            assert f"  {name}: " in result.output
            for option in REGISTRY.options(slot, name):
                assert f"    {option.name}: {option.type} = " in result.output
    for preset in PRESETS:
        assert f"  {preset} " in result.output
    assert "relations: list[temporal|context|motion|context_motion] = [temporal," in result.output


def test_ablate_list_one_slot_and_an_unknown_one() -> None:
    from ablate.cli import cli

    result = CliRunner().invoke(cli, ["list", "como"])
    assert result.exit_code == 0
    assert "model.como " in result.output and "model.clav " not in result.output

    result = CliRunner().invoke(cli, ["list", "cmo"])
    assert result.exit_code == 1
    assert result.output.strip() == (
        "error: cmo: unknown slot; did you mean 'como'? "
        "Allowed: clav, como, embed, head, magnitude, mil"
    )
