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

import math
import numbers
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from ablate.errors import ConfigError, closest, unknown_message
from ablate.models.registry import NONE, REGISTRY

# Global loss options (not components): name -> (default, description).
LOSS_OPTIONS: dict[str, tuple[float, str]] = {
    "rd_weight": (0.1, "Weight of CLAV's relative distance loss; ignored when clav is none."),
    "gate_weight": (
        0.5,
        "Weight of the top-k MIL loss tying CLAV's gate to the video label; ignored when clav "
        "is none.",
    ),
    "smooth_weight": (
        0.0,
        "Weight of the temporal smoothness of abnormal videos' scores (Sultani et al. 2018).",
    ),
    "sparse_weight": (0.0, "Weight of the sparsity of abnormal videos' scores (Sultani et al.)."),
}

_TYPE_ERROR = "{path}: expected {expected}, got {got} ({value!r})"
_CHOICE_ERROR = "{path}: expected one of {allowed}, got {value!r}"
_MISSING_TYPE = "{path}: missing 'type'; allowed: {allowed}"
_NOT_A_MAPPING = "{path}: expected a mapping, got {got} ({value!r})"
_NOT_A_COMPONENT = (
    "{path}: expected a mapping with a 'type' or a component name, got {got} ({value!r})"
)
_NO_OPTIONS = "{path}: component 'none' takes no options"
_CONSTRAINT = "{path}: must be {requirement}, got {value!r}"
NUMERIC_LIMIT = 1e6
_EMPTY_LIST = "{path}: expected at least one {item}; allowed: {allowed}"
_DUPLICATE = "{path}: {item} '{value}' is listed twice"


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
    raw = _mapping(raw, path)
    slots = REGISTRY.slots("model")
    _reject_unknown_keys(raw, slots, path, "slot")
    return {slot: _resolve_component(slot, raw.get(slot), f"{path}.{slot}") for slot in slots}


def resolve_loss_spec(raw: Mapping[str, Any] | None, *, path: str = "loss") -> dict[str, Any]:
    """Fill a (partial) loss spec with defaults and validate it.

    Args:
        raw: ``{"mil": {...}, "magnitude": {...}, "rd_weight": ..., "smooth_weight": ...,
            "sparse_weight": ...}``, any key may be missing. None means all defaults.
        path: Key path of the spec, used as the prefix of error messages.

    Returns:
        The complete loss spec, loss slots first, then the global weights.

    Raises:
        ConfigError: Unknown key, component or option, wrong type or out-of-range value.
    """
    raw = _mapping(raw, path)
    slots = REGISTRY.slots("loss")
    _reject_unknown_keys(raw, [*slots, *LOSS_OPTIONS], path, "key")
    resolved: dict[str, Any] = {
        slot: _resolve_component(slot, raw.get(slot), f"{path}.{slot}") for slot in slots
    }
    for name, (default, _) in LOSS_OPTIONS.items():
        value = _check_type(float, raw.get(name, default), f"{path}.{name}")
        if value < 0:
            raise ConfigError(
                _CONSTRAINT.format(path=f"{path}.{name}", requirement=">= 0", value=value)
            )
        resolved[name] = value
    return resolved


def _mapping(raw: Any, path: str) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(_NOT_A_MAPPING.format(path=path, got=type(raw).__name__, value=raw))
    return raw


def _reject_unknown_keys(raw: Mapping[str, Any], allowed: list[str], path: str, what: str) -> None:
    for key in raw:
        if key not in allowed:
            names = sorted(allowed)
            tail = unknown_message(f"unknown {what}", names, closest(str(key), names))
            raise ConfigError(f"{path}.{key}: {tail}")


def _resolve_component(slot: str, raw: Any, path: str) -> dict[str, Any]:
    """Resolve one slot's component spec, e.g. ``{"type": "como", "fusion": "sum"}``."""
    allowed = ", ".join(REGISTRY.components(slot))
    if raw is None:
        raw = {"type": REGISTRY.slot(slot).default}
    elif isinstance(raw, str):
        raw = {"type": raw}
    elif not isinstance(raw, Mapping):
        raise ConfigError(_NOT_A_COMPONENT.format(path=path, got=type(raw).__name__, value=raw))
    if "type" not in raw:
        raise ConfigError(_MISSING_TYPE.format(path=path, allowed=allowed))
    name = _check_type(str, raw["type"], f"{path}.type")
    REGISTRY.get(slot, name, path=f"{path}.type")  # raises on an unknown component

    given = {k: v for k, v in raw.items() if k != "type"}
    if name == NONE:
        if given:
            raise ConfigError(_NO_OPTIONS.format(path=f"{path}.{next(iter(given))}"))
        return {"type": NONE}

    params = REGISTRY.parameters(slot, name)
    for key in given:
        if key not in params:
            options = sorted(params)
            tail = unknown_message(
                f"unknown option for {name}", options, closest(str(key), options)
            )
            raise ConfigError(f"{path}.{key}: {tail}")

    constraints = REGISTRY.constraints(slot, name)
    resolved: dict[str, Any] = {"type": name}
    for option, (annotation, default) in params.items():
        where = f"{path}.{option}"
        value = _check_type(annotation, given.get(option, default), where, option)
        constraint = constraints.get(option)
        if constraint is not None and value is not None and not constraint.check(value):
            raise ConfigError(
                _CONSTRAINT.format(path=where, requirement=constraint.requirement, value=value)
            )
        resolved[option] = value
    return resolved


def _check_type(annotation: Any, value: Any, path: str, option: str = "") -> Any:
    """Check ``value`` against a constructor annotation; return it in canonical form.

    Supported annotations: int, float (an int is accepted and converted), str, bool, Literal[...],
    ``X | None``, and sequences of these (``Sequence[Literal[...]]`` for a subset of choices, whose
    item is named after the option: ``relations`` -> ``relation``). bool is not an int.
    """
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)

    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            try:
                return _check_type(inner[0], value, path, option)
            except ConfigError:
                expected = f"{_expected(inner[0])} or null"
                raise ConfigError(_type_error(path, expected, value)) from None
        raise TypeError(f"{path}: unsupported annotation {annotation!r}")

    if origin is typing.Literal:
        if isinstance(value, str) and value in args:
            return value
        allowed = ", ".join(str(a) for a in args)
        raise ConfigError(_CHOICE_ERROR.format(path=path, allowed=allowed, value=value))

    if origin in (list, tuple, Sequence):
        return _check_list(args[0], value, path, option)

    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return _bounded(int(value), path)
    elif annotation is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            return _bounded(float(value), path)
    elif annotation is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"{path}: unsupported annotation {annotation!r}")
    raise ConfigError(_type_error(path, _expected(annotation), value))


def _bounded(value: float, path: str) -> Any:
    """Every numeric option lies in a finite range: NaN, infinities and absurd magnitudes (a
    typo, ``1e999``) fail here, before any trial; components narrow it with constraints."""
    if not math.isfinite(value) or abs(value) > NUMERIC_LIMIT:
        raise ConfigError(_CONSTRAINT.format(
            path=path, requirement=f"a finite number in [-{NUMERIC_LIMIT:g}, {NUMERIC_LIMIT:g}]",
            value=value))
    return value


def _check_list(item: Any, value: Any, path: str, option: str) -> list[Any]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise ConfigError(_type_error(path, f"list of {_expected(item)}", value))
    if typing.get_origin(item) is not typing.Literal:
        return [_check_type(item, v, f"{path}[{i}]") for i, v in enumerate(value)]

    # A subset of choices: report unknown items by name, and return the subset in declared
    # order so that [motion, context] and [context, motion] resolve (and dedupe) identically.
    choices = typing.get_args(item)
    noun = option[:-1] if option.endswith("s") else option or "value"
    allowed = ", ".join(choices)
    if not value:
        raise ConfigError(_EMPTY_LIST.format(path=path, item=noun, allowed=allowed))
    seen: set[str] = set()
    for v in value:
        if not isinstance(v, str) or v not in choices:
            raise ConfigError(f"{path}: unknown {noun} {v!r}; allowed: {allowed}")
        if v in seen:
            raise ConfigError(_DUPLICATE.format(path=path, item=noun, value=v))
        seen.add(v)
    return [c for c in choices if c in seen]


def _expected(annotation: Any) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return "one of " + ", ".join(str(a) for a in typing.get_args(annotation))
    return getattr(annotation, "__name__", str(annotation))


def _type_error(path: str, expected: str, value: Any) -> str:
    return _TYPE_ERROR.format(path=path, expected=expected, got=type(value).__name__, value=value)
