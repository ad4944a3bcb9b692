"""Every registered component, built into a model, runs forward and backward cleanly.

One parametrized test covers the whole registry (timm's ``test_models.py`` pattern): every slot x
every component, and every value of every enumerated or boolean option (each relation type alone
and all four together, every fusion, both distances, every loss), each swapped into the full model
and objective. A new component or option value is tested without touching this file.
"""

from __future__ import annotations

import math
import typing
from typing import Any

import pytest
import torch

from ablate.errors import ConfigError
from ablate.models import (
    LOSS_OPTIONS,
    REGISTRY,
    AnomalyModel,
    ModelOutput,
    Objective,
    build_model,
    build_objective,
    resolve_loss_spec,
    resolve_model_spec,
)
from ablate.models.losses import smoothness, sparsity
from ablate.models.registry import NONE

B, T, D = 4, 8, 16
LABELS = torch.tensor([0.0, 0.0, 1.0, 1.0])


def model_of(raw: dict[str, Any] | None) -> AnomalyModel:
    """The model of a raw (partial) spec, resolved as a trial config resolves it."""
    return build_model(resolve_model_spec(raw), in_dim=D)


def objective_of(raw: dict[str, Any] | None, model: AnomalyModel) -> Objective:
    return build_objective(resolve_loss_spec(raw), model)


# Every loss term on, so the whole objective is exercised alongside each component (the MIL
# ranking loss's own terms run in its case, mil-mil_ranking).
FULL_LOSS: dict[str, Any] = {
    "mil": {"type": "topk_bce"},
    "magnitude": {"type": "rtfm"},
    "rd_weight": 0.1,
}

# What the built-in modules register, written out rather than read from the registry: a
# component whose module is no longer imported is never registered, and the parametrized test
# would then silently run one case fewer instead of failing.
BUILT_IN: dict[str, set[str]] = {
    "embed": {"mlp"},
    "clav": {"clav", "none"},
    "como": {"como", "none"},
    "head": {"mlp"},
    "mil": {"topk_bce", "mil_ranking"},
    "magnitude": {"rtfm", "none"},
}


def _variants(annotation: Any) -> list[Any]:
    """Values worth a case of their own: enumerations, booleans, each item of a subset."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is bool:
        return [True, False]
    if origin is typing.Literal:
        return list(args)
    if args and typing.get_origin(args[0]) is typing.Literal:  # a subset: each item alone
        return [[item] for item in typing.get_args(args[0])]
    return []


def _cases() -> list[Any]:
    cases = []
    for slot, name in REGISTRY:
        cases.append(pytest.param(slot, {"type": name}, id=f"{slot}-{name}"))
        if name == NONE:
            continue
        for option, (annotation, default) in REGISTRY.parameters(slot, name).items():
            for value in _variants(annotation):
                if value == default:
                    continue
                label = "+".join(value) if isinstance(value, list) else value
                spec = {"type": name, option: value}
                cases.append(pytest.param(slot, spec, id=f"{slot}-{name}-{option}={label}"))
    # Non-default widths take the projection paths that the defaults skip.
    cases.append(
        pytest.param(
            "como",
            {"type": "como", "hidden": 8, "fusion": "sum", "context_window": 1},
            id="como-como-hidden=8-sum",
        )
    )
    return cases


def _build(slot: str, spec: dict[str, Any]) -> tuple[torch.nn.Module, Any]:
    model_spec: dict[str, Any] = {}
    loss_spec = dict(FULL_LOSS)
    if slot in REGISTRY.slots("model"):
        model_spec[slot] = spec
    else:
        loss_spec[slot] = spec
    model = build_model(resolve_model_spec(model_spec), in_dim=D)
    return model, build_objective(resolve_loss_spec(loss_spec), model)


@pytest.mark.parametrize(("slot", "spec"), _cases())
def test_component_forward_backward(slot: str, spec: dict[str, Any]) -> None:
    torch.manual_seed(0)
    model, objective = _build(slot, spec)
    model.train()
    x = torch.randn(B, T, D)
    out = model(x)

    assert isinstance(out, ModelOutput)
    assert out.scores.shape == (B, T)
    assert out.features.shape[:2] == (B, T)
    assert torch.isfinite(out.scores).all()
    assert ((out.scores > 0) & (out.scores < 1)).all()

    loss, parts = objective(out, LABELS)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert math.isclose(parts["total"], loss.item(), rel_tol=1e-5)
    assert math.isclose(sum(v for k, v in parts.items() if k != "total"), loss.item(), rel_tol=1e-5)

    loss.backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, f"{name} received no gradient"
        assert torch.isfinite(param.grad).all(), f"{name} has a non-finite gradient"
        # An all-zero gradient means the parameter does not influence the loss: a dead branch.
        assert param.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


def test_cases_cover_every_built_in_component() -> None:
    ids = {case.id for case in _cases()}
    assert REGISTRY.slots() == list(BUILT_IN)
    for slot, names in BUILT_IN.items():
        for name in names:
            assert f"{slot}-{name}" in ids, f"{slot}-{name} is not registered"
    for relation in ("temporal", "context", "motion", "context_motion"):
        assert f"como-como-relations={relation}" in ids
    for fusion in ("concat", "sum"):  # gated is the default, covered by como-como
        assert f"como-como-fusion={fusion}" in ids
    assert "clav-clav-distance=cosine" in ids


def test_only_the_projections_a_relation_reads_are_built() -> None:
    def params(relations: list[str]) -> set[str]:
        model = model_of({"como": {"type": "como", "relations": relations}})
        return {n.split(".")[0] for n, _ in model.como.named_parameters()}

    assert "phi_context" not in params(["temporal"]) and "phi_motion" not in params(["temporal"])
    assert "phi_motion" not in params(["context"])
    assert "phi_context" not in params(["motion"])
    assert {"phi_context", "phi_motion"} <= params(["context_motion"])


def test_motion_graph_does_not_see_the_scene() -> None:
    """A motion-only CoMo is blind to a constant offset (a scene) added to every input snippet,
    while a context graph is not."""
    torch.manual_seed(0)
    x = torch.randn(1, T, D)
    scene = 3 * torch.randn(1, 1, D)
    for relations, blind in ((["motion"], True), (["context"], False)):
        model = model_of(
            {"clav": NONE, "como": {"type": "como", "relations": relations, "layer_norm": False}}
        ).eval()
        h = torch.randn(1, T, model.embed.out_dim)
        branch = model.como(h, x) - h  # the fused relation branch alone
        shifted = model.como(h, x + scene) - h
        assert torch.allclose(branch, shifted, atol=1e-5) is blind, relations


def test_variable_length_at_eval() -> None:
    torch.manual_seed(0)
    model = model_of(None).eval()
    with torch.no_grad():
        for t in (1, 2, 300):
            out = model(torch.randn(1, t, D))
            assert out.scores.shape == (1, t)
            assert torch.isfinite(out.scores).all()


def test_same_seed_same_output() -> None:
    def run() -> tuple[torch.Tensor, float]:
        torch.manual_seed(7)
        model = model_of(None)
        objective = objective_of(FULL_LOSS, model)
        x = torch.randn(B, T, D)
        out = model(x)
        loss, _ = objective(out, LABELS)
        return out.scores, loss.item()

    (a, la), (b, lb) = run(), run()
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert la == lb


def test_objective_parts_name_the_active_terms() -> None:
    torch.manual_seed(0)
    x = torch.randn(B, T, D)
    full = model_of(None)
    _, parts = objective_of(None, full)(full(x), LABELS)
    assert set(parts) == {"mil", "rd", "gate", "total"}

    baseline = model_of({"clav": NONE, "como": NONE})
    _, parts = objective_of(FULL_LOSS, baseline)(baseline(x), LABELS)
    assert set(parts) == {"mil", "magnitude", "total"}  # no clav, no rd


def test_each_score_regulariser_has_one_owner() -> None:
    """Sultani et al.'s smoothness and sparsity can each be set in exactly one place (the MIL
    ranking loss's options), so no spec can apply a term twice."""
    keys = [f"loss.{key}" for key in LOSS_OPTIONS] + [
        f"loss.{slot}.{name}.{option}"
        for slot in REGISTRY.slots("loss")
        for name in REGISTRY.components(slot)
        for option in REGISTRY.parameters(slot, name)
    ]
    assert [k for k in keys if "smooth" in k] == ["loss.mil.mil_ranking.smoothness"]
    assert [k for k in keys if "spars" in k] == ["loss.mil.mil_ranking.sparsity"]


def test_mil_ranking_applies_its_regularisers_once() -> None:
    torch.manual_seed(0)
    model = model_of({"clav": NONE, "como": NONE})
    out = model(torch.randn(B, T, D))

    def loss_of(smooth: float, sparse: float) -> torch.Tensor:
        spec = {"mil": {"type": "mil_ranking", "smoothness": smooth, "sparsity": sparse}}
        return objective_of(spec, model)(out, LABELS)[0]

    abnormal = out.scores[LABELS > 0.5]
    expected = loss_of(0.0, 0.0) + 0.5 * smoothness(abnormal) + 0.25 * sparsity(abnormal)
    torch.testing.assert_close(loss_of(0.5, 0.25), expected)
    for removed, owner in (("smooth_weight", "smoothness"), ("sparse_weight", "sparsity")):
        with pytest.raises(ConfigError, match=rf"set loss\.mil\.{owner} instead"):
            objective_of({"mil": {"type": "mil_ranking"}, removed: 0.5}, model)


def test_the_default_objective_is_unchanged_by_the_ranking_loss_terms() -> None:
    """The default MIL loss is top-k BCE: the ranking loss's 8e-5 defaults never reach it."""
    assert resolve_loss_spec(None)["mil"] == {"type": "topk_bce", "k": 4, "weight": 1.0}
    assert resolve_loss_spec({"mil": "mil_ranking"})["mil"] == {
        "type": "mil_ranking", "smoothness": 8e-5, "sparsity": 8e-5, "weight": 1.0}


def test_losses_tolerate_a_batch_with_one_class() -> None:
    torch.manual_seed(0)
    model = model_of(None)
    for mil in ("topk_bce", "mil_ranking"):
        objective = objective_of({**FULL_LOSS, "mil": {"type": mil}}, model)
        loss, _ = objective(model(torch.randn(2, T, D)), torch.zeros(2))
        assert torch.isfinite(loss)
        loss.backward()


def test_input_width_is_checked() -> None:
    model = model_of(None)
    with pytest.raises(ValueError, match=r"expected input \(B, T, 16\), got \(2, 8, 4\)"):
        model(torch.randn(2, 8, 4))


def test_relation_table_names_what_each_relation_reads() -> None:
    from ablate.models.como import RELATIONS

    assert set(RELATIONS) == {"temporal", "context", "motion", "context_motion"}
    assert RELATIONS["motion"].reads == {"motion"}  # never the scene
    assert RELATIONS["context_motion"].reads >= {"context", "motion"}


def test_interrelation_output_depends_on_the_interaction_of_context_and_motion() -> None:
    """The mixed second difference f(c1, m1) - f(c1, m2) - f(c2, m1) + f(c2, m2) is zero for any
    branch that is a sum of a context term and a motion term; the interrelation's is not."""
    from ablate.models.como import Inputs

    torch.manual_seed(0)
    model = model_of({"clav": NONE, "como": {"type": "como", "relations": ["context_motion"],
                                                 "layer_norm": False}})
    branch = model.como.branches["context_motion"].eval()
    torch.nn.init.normal_(branch.gamma.weight, std=0.5)  # a trained-size modulation
    d = model.como.d
    h = torch.randn(1, T, model.embed.out_dim)
    c1, c2 = torch.randn(1, T, d), torch.randn(1, T, d)
    m1, m2 = torch.randn(1, T, d), torch.randn(1, T, d)

    def f(c: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return branch(Inputs(h, c, m))[0]

    mixed = f(c1, m1) - f(c1, m2) - f(c2, m1) + f(c2, m2)
    assert mixed.norm() > 0.1 * f(c1, m1).norm()

    context_only = model_of({"clav": NONE, "como": {"type": "como", "relations": ["context"]}}
                            ).como.branches["context"].eval()
    with torch.no_grad():
        assert torch.equal(context_only(Inputs(h, c1, m1))[0], context_only(Inputs(h, c1, m2))[0])


def test_como_reports_attention_diagnostics_in_eval_mode() -> None:
    torch.manual_seed(0)
    model = model_of(None).eval()
    with torch.no_grad():
        model(torch.randn(1, T, D))
    stats = model.como.diagnostics()
    for relation in ("context", "motion", "context_motion"):
        assert 0 < stats[f"como.{relation}.entropy"] <= 1
        assert stats[f"como.{relation}.temperature"] == pytest.approx(10.0)
    assert "como.temporal.entropy" not in stats  # a fixed graph, not attention
    assert model.como.diagnostics() == {k: v for k, v in stats.items() if "temperature" in k}
