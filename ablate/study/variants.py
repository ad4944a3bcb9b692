"""Expanding an ablation study spec into its distinct variants (before seeds).

Designs:
- ``grid``: the Cartesian product of the axes.
- ``leave_one_out``: the base, plus the base with one axis changed to one of its values.
- ``add_one_in``: the reference, plus the reference with one axis changed to one of its values,
  plus the base.

Conditional axes: axes that set a component's ``type`` are applied first; an option axis whose
component is switched off (``type: none``) in a combination is skipped, and combinations that
resolve to the same config are one variant, so switched-off components never multiply trials.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ablate.config import TrialConfig, apply_overrides, resolve_trial_config
from ablate.errors import ConfigError, short

if TYPE_CHECKING:
    from ablate.study.spec import StudySpec


@dataclass(frozen=True)
class Variant:
    """One model/loss/training configuration of a study, before seeds."""

    name: str
    changes: dict[str, Any]  # dotted key -> value, relative to the base or the reference
    config: TrialConfig  # resolved, seed 0: a trial is this with its seed


def config_hash(config: TrialConfig) -> str:
    body = config.to_dict()
    body.pop("seed")
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


def _format_value(value: Any) -> str:
    if isinstance(value, list):
        return "+".join(_format_value(v) for v in value) or "[]"
    return str(value)


def _short_key(key: str) -> str:
    parts = key.split(".")
    if parts[0] in ("model", "loss") and len(parts) > 1:
        parts = parts[1:]
    if len(parts) > 1 and parts[-1] == "type":
        parts = parts[:-1]
    return ".".join(parts)


def variant_name(changes: dict[str, Any], default: str) -> str:
    if not changes:
        return default
    return ",".join(f"{_short_key(k)}={_format_value(v)}" for k, v in changes.items())


def _component_off(raw: dict[str, Any], key: str) -> bool:
    """True when ``key`` is an option of a component whose type is ``none`` in ``raw``."""
    parts = key.split(".")
    # A type key switches its own component on or off: only its parents can make it moot.
    parents = parts[:-2] if parts[-1] == "type" else parts[:-1]
    node: Any = raw
    for part in parents:
        if not isinstance(node, dict):
            return False
        node = node.get(part)
        if isinstance(node, dict) and node.get("type") == "none":
            return True
    return False


def _apply(start: dict[str, Any], changes: dict[str, Any]) -> tuple[dict[str, Any], dict]:
    """Applies type-setting keys first, then options of components that are on."""
    ordered = sorted(changes.items(), key=lambda kv: not kv[0].endswith(".type"))
    raw, applied = start, {}
    for key, value in ordered:
        if _component_off(raw, key):
            continue
        raw = apply_overrides(raw, {key: value})
        applied[key] = value
    return raw, applied


def _resolve(raw: dict[str, Any], where: str) -> TrialConfig:
    try:
        return resolve_trial_config({**raw, "seed": 0})
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _lookup(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def variants(spec: StudySpec, base_cfg: TrialConfig | None = None) -> list[Variant]:
    """The distinct variants of an ablation study, the base first (add_one_in: the reference).

    A variant's ``changes`` (and so its name) hold only the keys whose resolved value differs
    from the starting point: the base, or for ``add_one_in`` the reference. ``base_cfg`` is the
    resolved base when the caller has it (each raw config is resolved once).
    """
    if base_cfg is None:
        base_cfg = _resolve(spec.base, "base")
    start_cfg = (_resolve(spec.reference, "reference") if spec.design == "add_one_in"
                 and spec.reference is not None else base_cfg).to_dict()
    out: list[Variant] = []
    seen: dict[str, str] = {}

    def add(raw: dict[str, Any], applied: dict[str, Any], default: str, where: str,
            prefix: str = "") -> None:
        config = base_cfg if raw is spec.base else _resolve(raw, where)
        digest = config_hash(config)
        if digest in seen:
            return
        resolved = config.to_dict()
        changes = {k: _lookup(resolved, k) for k in applied
                   if _lookup(resolved, k) != _lookup(start_cfg, k)}
        name = spec.base_name if config == base_cfg else prefix + variant_name(changes, default)
        if name in (v.name for v in out):
            name = f"{name}#{len(out)}"
        seen[digest] = name
        out.append(Variant(name=name, changes=changes, config=config))

    keys = list(spec.axes)
    if spec.design == "grid":
        # A combination equal to the base is named after it; others by their axis values.
        for combo in itertools.product(*(spec.axes[k] for k in keys)):
            raw, applied = _apply(spec.base, dict(zip(keys, combo, strict=True)))
            add(raw, applied, spec.base_name,
                "ablation.axes " + ", ".join(f"{k}={short(v)}" for k, v in applied.items()))
        return out
    start = spec.reference if spec.design == "add_one_in" else spec.base
    assert start is not None
    ref_name = "reference"
    start_name = ref_name if spec.design == "add_one_in" else spec.base_name
    add(start, {}, start_name, "reference" if spec.design == "add_one_in" else "base")
    for key in keys:
        for value in spec.axes[key]:
            raw, applied = _apply(start, {key: value})
            prefix = f"{ref_name}+" if spec.design == "add_one_in" else ""
            add(raw, applied, start_name, f"ablation.axes.{key}={short(value)}", prefix)
    if spec.design == "add_one_in":
        add(spec.base, {}, spec.base_name, "base")
    return out
