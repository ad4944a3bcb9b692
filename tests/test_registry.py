"""The registry and spec validation: every user-facing error message, asserted exactly."""

from __future__ import annotations

import re

import numpy as np
import pytest
from torch import nn

from ablate.errors import ConfigError
from ablate.models import REGISTRY, Registry, resolve_loss_spec, resolve_model_spec
from ablate.models.registry import POSITIVE


def _error(raw: dict, *, loss: bool = False) -> str:
    resolve = resolve_loss_spec if loss else resolve_model_spec
    with pytest.raises(ConfigError) as info:
        resolve(raw)
    message = str(info.value)
    assert "\n" not in message
    return message


# -- the registry itself ------------------------------------------------------------------------


@pytest.fixture
def registry() -> Registry:
    registry = Registry()
    registry.add_slot("block", group="model", default="a", optional=True, description="A block.")
    return registry


def test_register_as_decorator_and_as_call(registry: Registry) -> None:
    @registry.register("block", "a")
    class A(nn.Module):
        """Block A.

        Args:
            in_dim: Width (not an option).
            width: How wide it is,
                over two lines.
            flag: A switch.
        """

        constraints = {"width": POSITIVE}

        def __init__(self, in_dim: int, width: int = 3, flag: bool = False) -> None:
            super().__init__()

    class B(nn.Module):
        def __init__(self, in_dim: int) -> None:
            super().__init__()

    assert registry.register("block", "b", B) is B
    assert registry.components("block") == ["a", "b", "none"]
    assert registry.get("block", "a") is A
    assert registry.get("block", "none") is None
    assert registry.options("block", "a") == [
        ("width", "int", 3, "How wide it is, over two lines."),
        ("flag", "bool", False, "A switch."),
    ]
    assert registry.options("block", "b") == []
    assert registry.describe("block", "a") == "Block A."
    assert list(registry) == [("block", "a"), ("block", "b"), ("block", "none")]


def test_build_passes_the_callers_arguments_then_the_options(registry: Registry) -> None:
    registry.register("block", "linear", nn.Linear)
    layer = registry.build("block", {"type": "linear", "bias": False}, 4, out_features=2)
    assert isinstance(layer, nn.Linear) and layer.in_features == 4 and layer.bias is None
    assert registry.build("block", {"type": "none"}, 4) is None
    with pytest.raises(ConfigError, match="^model.block.type: unknown component 'linaer'"):
        registry.build("block", {"type": "linaer"}, 4)


def test_register_refuses_duplicates_reserved_names_and_unknown_slots(registry: Registry) -> None:
    registry.register("block", "a", nn.Identity)
    with pytest.raises(ValueError, match="'a' is already registered in slot 'block'"):
        registry.register("block", "a", nn.Identity)
    with pytest.raises(ValueError, match="reserved"):
        registry.register("block", "none", nn.Identity)
    with pytest.raises(ValueError, match="unknown slot 'blok'"):
        registry.register("blok", "c", nn.Identity)
    with pytest.raises(ValueError, match="already declared"):
        registry.add_slot("block", group="model", default="a", description="")


def test_options_must_be_explicit_keywords_with_defaults(registry: Registry) -> None:
    class Kwargs(nn.Module):
        def __init__(self, in_dim: int, **kwargs: int) -> None:
            super().__init__()

    registry.register("block", "kwargs", Kwargs)
    with pytest.raises(TypeError, match="explicit"):
        registry.options("block", "kwargs")


def test_get_unknown_component_suggests_and_lists() -> None:
    with pytest.raises(ConfigError) as info:
        REGISTRY.get("mil", "topk")
    assert str(info.value) == (
        "loss.mil.type: unknown component 'topk'; did you mean 'topk_bce'? "
        "Allowed: mil_ranking, topk_bce"
    )


def test_registry_lists_every_slot() -> None:
    assert REGISTRY.slots() == ["embed", "clav", "como", "head", "mil", "magnitude"]
    assert REGISTRY.slots("model") == ["embed", "clav", "como", "head"]
    assert REGISTRY.components("como") == ["como", "none"]
    assert REGISTRY.components("embed") == ["mlp"]


# -- the exact messages users see -----------------------------------------------------------------


def test_unknown_component() -> None:
    assert _error({"como": {"type": "cmo"}}) == (
        "model.como.type: unknown component 'cmo'; did you mean 'como'? Allowed: como, none"
    )
    assert _error({"como": {"type": "graph"}}) == (
        "model.como.type: unknown component 'graph'; allowed: como, none"
    )


def test_unknown_option_suggests_and_lists_the_constructor_options() -> None:
    assert _error({"como": {"type": "como", "fusoin": "sum"}}) == (
        "model.como.fusoin: unknown option for como; did you mean 'fusion'? Allowed: "
        "attention_temperature, context_window, dropout, fusion, hidden, layer_norm, relations, "
        "temporal_sigma"
    )
    assert _error({"embed": {"type": "mlp", "depth": 2}}) == (
        "model.embed.depth: unknown option for mlp; allowed: dropout, hidden"
    )
    assert _error({"clav": {"type": "none", "margin": 2.0}}) == (
        "model.clav.margin: component 'none' takes no options"
    )


def test_wrong_types() -> None:
    assert _error({"embed": {"type": "mlp", "hidden": "big"}}) == (
        "model.embed.hidden: expected int, got str ('big')"
    )
    assert _error({"embed": {"type": "mlp", "hidden": True}}) == (
        "model.embed.hidden: expected int, got bool (True)"
    )
    assert _error({"embed": {"type": "mlp", "hidden": 64.0}}) == (
        "model.embed.hidden: expected int, got float (64.0)"
    )
    assert _error({"embed": {"type": "mlp", "dropout": "0.1"}}) == (
        "model.embed.dropout: expected float, got str ('0.1')"  # quoted in YAML: meant a string
    )
    assert _error({"clav": {"type": "clav", "residual": 1}}) == (
        "model.clav.residual: expected bool, got int (1)"
    )
    assert _error({"como": {"type": "como", "hidden": "wide"}}) == (
        "model.como.hidden: expected int or null, got str ('wide')"
    )
    assert _error({"como": {"type": 3}}) == "model.como.type: expected str, got int (3)"


def test_enumerations() -> None:
    assert _error({"clav": {"type": "clav", "distance": "manhattan"}}) == (
        "model.clav.distance: expected one of euclidean, cosine, got 'manhattan'"
    )
    assert _error({"como": {"type": "como", "fusion": "max"}}) == (
        "model.como.fusion: expected one of concat, sum, gated, got 'max'"
    )


def test_relations() -> None:
    allowed = "allowed: temporal, context, motion, context_motion"
    assert _error({"como": {"type": "como", "relations": ["foo"]}}) == (
        f"model.como.relations: unknown relation 'foo'; {allowed}"
    )
    assert _error({"como": {"type": "como", "relations": []}}) == (
        f"model.como.relations: expected at least one relation; {allowed}"
    )
    assert _error({"como": {"type": "como", "relations": ["motion", "motion"]}}) == (
        "model.como.relations: relation 'motion' is listed twice"
    )
    assert _error({"como": {"type": "como", "relations": "motion"}}) == (
        "model.como.relations: expected list of one of temporal, context, motion, "
        "context_motion, got str ('motion')"
    )


def test_unknown_slot_and_missing_type() -> None:
    assert _error({"foo": {"type": "mlp"}}) == (
        "model.foo: unknown slot; allowed: clav, como, embed, head"
    )
    assert _error({"clv": {"type": "clav"}}) == (
        "model.clv: unknown slot; did you mean 'clav'? Allowed: clav, como, embed, head"
    )
    assert _error({"como": {"fusion": "sum"}}) == "model.como: missing 'type'; allowed: como, none"
    assert _error({"como": 3}) == (
        "model.como: expected a mapping with a 'type' or a component name, got int (3)"
    )
    with pytest.raises(ConfigError, match=re.escape("model: expected a mapping, got list")):
        resolve_model_spec([])  # type: ignore[arg-type]


def test_out_of_range_values() -> None:
    assert _error({"embed": {"type": "mlp", "hidden": 0}}) == (
        "model.embed.hidden: must be > 0, got 0"
    )
    assert _error({"embed": {"type": "mlp", "dropout": 1.0}}) == (
        "model.embed.dropout: must be in [0, 1), got 1.0"
    )
    assert _error({"como": {"type": "como", "context_window": 4}}) == (
        "model.como.context_window: must be an odd number >= 1, got 4"
    )
    assert _error({"rd_weight": -1}, loss=True) == "loss.rd_weight: must be >= 0, got -1.0"
    assert _error({"clav": {"type": "clav", "margin": 1e9}}) == (
        "model.clav.margin: must be in [-1e+06, 1e+06], got 1000000000.0"
    )
    assert _error({"clav": {"type": "clav", "margin": float("nan")}}) == (
        "model.clav.margin: expected a finite number, got nan"
    )


def test_loss_spec_errors() -> None:
    assert _error({"mil": {"type": "ranking"}}, loss=True) == (
        "loss.mil.type: unknown component 'ranking'; did you mean 'mil_ranking'? "
        "Allowed: mil_ranking, topk_bce"
    )
    assert _error({"rd_wieght": 0.1}, loss=True) == (
        "loss.rd_wieght: unknown key; did you mean 'rd_weight'? "
        "Allowed: gate_weight, magnitude, mil, rd_weight"
    )
    assert _error({"mil": {"type": "topk_bce", "k": "4"}}, loss=True) == (
        "loss.mil.k: expected int, got str ('4')"
    )
    assert _error({"magnitude": {"type": "none"}, "rd_weight": "x"}, loss=True) == (
        "loss.rd_weight: expected float, got str ('x')"
    )


def test_a_removed_loss_option_names_its_replacement() -> None:
    assert _error({"smooth_weight": 8e-5}, loss=True) == (
        "loss.smooth_weight: removed; set loss.mil.smoothness instead (the term belongs to the "
        "MIL ranking loss, loss.mil.type: mil_ranking)"
    )
    assert _error({"sparse_weight": 0.0}, loss=True) == (
        "loss.sparse_weight: removed; set loss.mil.sparsity instead (the term belongs to the "
        "MIL ranking loss, loss.mil.type: mil_ranking)"
    )


# -- resolution ----------------------------------------------------------------------------------


def test_resolve_fills_defaults_and_is_idempotent() -> None:
    spec = resolve_model_spec({"como": {"type": "como", "fusion": "sum"}})
    assert list(spec) == ["embed", "clav", "como", "head"]
    assert spec["embed"] == {"type": "mlp", "hidden": 64, "dropout": 0.3}
    assert spec["como"]["fusion"] == "sum"
    assert spec["como"]["relations"] == ["temporal", "context", "motion", "context_motion"]
    assert resolve_model_spec(spec) == spec
    assert resolve_model_spec(None) == resolve_model_spec({})

    loss = resolve_loss_spec({"mil": {"type": "topk_bce", "k": 8}})
    assert loss == {
        "mil": {"type": "topk_bce", "k": 8, "weight": 1.0},
        "magnitude": {"type": "none"},
        "rd_weight": 0.1,
        "gate_weight": 0.5,
    }
    assert resolve_loss_spec(loss) == loss


def test_resolve_canonicalises_values() -> None:
    spec = resolve_model_spec(
        {
            "clav": "none",  # a bare name is shorthand for {"type": name}
            "como": {
                "type": "como",
                "relations": ("context_motion", "motion"),
                "temporal_sigma": 2,
            },
            "embed": {"type": "mlp", "hidden": np.int64(32), "dropout": np.float32(0.5)},
        }
    )
    assert spec["clav"] == {"type": "none"}
    assert spec["como"]["relations"] == ["motion", "context_motion"]
    assert spec["como"]["temporal_sigma"] == 2.0 and type(spec["como"]["temporal_sigma"]) is float
    assert type(spec["embed"]["hidden"]) is int and spec["embed"]["hidden"] == 32
    assert type(spec["embed"]["dropout"]) is float


def test_scientific_notation_is_a_float_in_any_spec() -> None:
    """PyYAML (YAML 1.1) reads ``1e-4`` as a string; a float option reads it as the number."""
    import yaml

    raw = yaml.safe_load("mil: {type: mil_ranking, smoothness: 1e-4}\nrd_weight: 2e-1\n")
    assert raw["mil"]["smoothness"] == "1e-4"
    loss = resolve_loss_spec(raw)
    assert loss["mil"]["smoothness"] == 1e-4 and loss["rd_weight"] == 0.2
