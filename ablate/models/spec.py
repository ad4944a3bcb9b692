"""Resolve and validate model and loss specs.

A spec maps each slot to a component spec ``{"type": name, **options}`` (a bare name is shorthand
for ``{"type": name}``). Resolving fills every missing slot with its default component and every
missing option with the constructor's default, checks each given value against the constructor's
type annotation and the component's constraints, and returns a plain, JSON-serialisable dict in a
canonical order. Resolving is idempotent, so a resolved spec can be resolved again (by
``build_model``) and two specs that build the same model resolve to the same dict.

Every error is a one-line :class:`~ablate.errors.ConfigError` naming the key path and the allowed
values; nothing unknown is dropped silently, because a typo in an ablation would otherwise run a
trial that ablates nothing.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

from ablate.errors import ConfigError, reject_unknown, short, type_error
from ablate.models.registry import NONE, REGISTRY
from ablate.typecheck import check, mapping

# Global loss options (not components): name -> (default, description).
LOSS_OPTIONS: dict[str, tuple[float, str]] = {
    "rd_weight": (0.1, "Weight of CLAV's relative distance loss; ignored when clav is none."),
    "gate_weight": (
        0.5,
        "Weight of the top-k MIL loss tying CLAV's gate to the video label; ignored when clav "
        "is none.",
    ),
}

# Removed loss options -> the component option that owns their term now. Sultani et al.'s
# smoothness and sparsity were once also global weights, so a spec could apply them twice.
MOVED_LOSS_OPTIONS: dict[str, str] = {
    "smooth_weight": "mil.smoothness",
    "sparse_weight": "mil.sparsity",
}

_MISSING_TYPE = "{path}: missing 'type'; allowed: {allowed}"
_NO_OPTIONS = "{path}: component 'none' takes no options"
_CONSTRAINT = "{path}: must be {requirement}, got {value}"
NUMERIC_LIMIT = 1e6


def resolve_model_spec(raw: Mapping[str, Any] | None, *, path: str = "model") -> dict[str, Any]:
    """Fill a (partial) model spec with defaults and validate it.

    Args:
        raw: Slot -> component spec; missing slots get their default component. None means all
            defaults (the full model).
        path: Key path of the spec, used as the prefix of error messages.

    Returns:
        ``{"embed": {...}, "clav": {...}, "como": {...}, "head": {...}}``, every component spec
        complete.

    Raises:
        ConfigError: Unknown slot, component or option, wrong type or out-of-range value.
    """
    raw = mapping(raw, path)
    slots = REGISTRY.slots("model")
    reject_unknown(raw, sorted(slots), path, "slot")
    return {slot: _resolve_component(slot, raw.get(slot), f"{path}.{slot}") for slot in slots}


def resolve_loss_spec(raw: Mapping[str, Any] | None, *, path: str = "loss") -> dict[str, Any]:
    """Fill a (partial) loss spec with defaults and validate it.

    Args:
        raw: ``{"mil": {...}, "magnitude": {...}, "rd_weight": ..., "gate_weight": ...}``, any
            key may be missing. None means all defaults.
        path: Key path of the spec, used as the prefix of error messages.

    Returns:
        The complete loss spec, loss slots first, then the global weights.

    Raises:
        ConfigError: Unknown or removed key, unknown component or option, wrong type or
            out-of-range value.
    """
    raw = mapping(raw, path)
    slots = REGISTRY.slots("loss")
    for key, owner in MOVED_LOSS_OPTIONS.items():
        if key in raw:
            raise ConfigError(f"{path}.{key}: removed; set {path}.{owner} instead (the term "
                              f"belongs to the MIL ranking loss, {path}.mil.type: mil_ranking)")
    reject_unknown(raw, sorted([*slots, *LOSS_OPTIONS]), path)
    resolved: dict[str, Any] = {
        slot: _resolve_component(slot, raw.get(slot), f"{path}.{slot}") for slot in slots
    }
    for name, (default, _) in LOSS_OPTIONS.items():
        value = _bounded(check(float, raw.get(name, default), f"{path}.{name}"), f"{path}.{name}")
        if value < 0:
            raise ConfigError(
                _CONSTRAINT.format(path=f"{path}.{name}", requirement=">= 0", value=short(value))
            )
        resolved[name] = value
    return resolved


def _resolve_component(slot: str, raw: Any, path: str) -> dict[str, Any]:
    """Resolve one slot's component spec, e.g. ``{"type": "como", "fusion": "sum"}``."""
    allowed = ", ".join(REGISTRY.components(slot))
    if raw is None:
        raw = {"type": REGISTRY.slot(slot).default}
    elif isinstance(raw, str):
        raw = {"type": raw}
    elif not isinstance(raw, Mapping):
        raise type_error(path, "a mapping with a 'type' or a component name", raw)
    if "type" not in raw:
        raise ConfigError(_MISSING_TYPE.format(path=path, allowed=allowed))
    name = check(str, raw["type"], f"{path}.type")
    REGISTRY.get(slot, name, path=f"{path}.type")  # raises on an unknown component

    given = {k: v for k, v in raw.items() if k != "type"}
    if name == NONE:
        if given:
            raise ConfigError(_NO_OPTIONS.format(path=f"{path}.{next(iter(given))}"))
        return {"type": NONE}

    params = REGISTRY.parameters(slot, name)
    reject_unknown(given, sorted(params), path, f"option for {name}")

    constraints = REGISTRY.constraints(slot, name)
    resolved: dict[str, Any] = {"type": name}
    for option, (annotation, default) in params.items():
        where = f"{path}.{option}"
        value = _bounded(check(annotation, given.get(option, default), where), where)
        constraint = constraints.get(option)
        if constraint is not None and value is not None and not constraint.check(value):
            raise ConfigError(
                _CONSTRAINT.format(path=where, requirement=constraint.requirement,
                                   value=short(value))
            )
        resolved[option] = value
    return resolved


def _bounded(value: Any, path: str) -> Any:
    """Every numeric option lies in one broad range: absurd magnitudes (a typo, ``1e9``) fail
    here, before any trial; components narrow it with constraints."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if abs(value) > NUMERIC_LIMIT:
            raise ConfigError(_CONSTRAINT.format(
                path=path, requirement=f"in [-{NUMERIC_LIMIT:g}, {NUMERIC_LIMIT:g}]",
                value=short(value)))
    return value


def require_resolved(spec: Mapping[str, Any] | None, kind: str) -> Mapping[str, Any]:
    """``spec`` if it is a resolved ``kind`` ("model" or "loss") spec: every slot present with
    its component's ``type`` (the builders never resolve again: a trial's config is resolved
    once, by :func:`~ablate.config.resolve_trial_config`).

    Raises:
        ValueError: A raw spec; resolve it first (``resolve_model_spec`` /
            ``resolve_loss_spec``).
    """
    slots = REGISTRY.slots(kind)
    if not isinstance(spec, Mapping) or any(
            not isinstance(spec.get(slot), Mapping) or "type" not in spec[slot] for slot in slots):
        raise ValueError(f"expected a resolved {kind} spec with the slots {', '.join(slots)}; "
                         f"pass it through resolve_{kind}_spec first")
    return spec
