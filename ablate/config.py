"""Trial configuration: model and loss specs (validated by the registry) plus training options.

A trial config is a mapping with the top-level keys ``model``, ``loss``, ``train`` and ``seed``;
it comes from a YAML file, a preset name, or a study's variant. It is validated once, here, into
a frozen :class:`TrialConfig`; variants are derived from raw mappings with :func:`apply_overrides`
before validation, never by mutating a validated config.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablate.errors import ConfigError

TOP_LEVEL_KEYS = ("model", "loss", "train", "seed")


@dataclass(frozen=True)
class TrainOptions:
    """Optimisation options of one trial.

    Args:
        epochs: Passes over the abnormal training videos; the test split is evaluated after each.
        batch_size: Videos per step, half normal and half abnormal (must be even).
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        segments: Segments each training video is resampled to (the field uses 32).
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        amp: Mixed precision on CUDA (bfloat16); ignored on CPU.
        threads: CPU threads for torch; 0 picks the cores Ray or the machine grants.
    """

    epochs: int = 15
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 5e-4
    segments: int = 32
    device: str = "auto"
    amp: bool = True
    threads: int = 0

    def __post_init__(self) -> None:
        _check_positive(self, ("epochs", "batch_size", "segments"))
        if self.batch_size % 2:
            raise ConfigError(f"train.batch_size: must be even (half normal, half abnormal), "
                              f"got {self.batch_size}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr: must be > 0, got {self.lr}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"train.device: expected one of auto, cpu, cuda, got {self.device!r}")
        if self.threads < 0:
            raise ConfigError(f"train.threads: must be >= 0, got {self.threads}")


@dataclass(frozen=True)
class TrialConfig:
    """A fully resolved trial: every slot and option explicit, defaults filled in."""

    model: dict[str, Any]
    loss: dict[str, Any]
    train: TrainOptions = field(default_factory=TrainOptions)
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"model": copy.deepcopy(self.model), "loss": copy.deepcopy(self.loss),
                "train": dataclasses.asdict(self.train), "seed": self.seed}


def _check_positive(obj: object, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(obj, name)
        if value < 1:
            raise ConfigError(f"train.{name}: must be >= 1, got {value}")


def _typed_options(cls: type, raw: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Checks a mapping against a dataclass's fields: unknown keys and wrong types are errors."""
    from ablate.models.registry import closest, unknown_message

    fields = {f.name: f for f in dataclasses.fields(cls)}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in fields:
            message = unknown_message("unknown option", sorted(fields), closest(str(key), fields))
            raise ConfigError(f"{prefix}.{key}: {message}")
        expected = type(fields[key].default)
        ok = isinstance(value, expected) and not (expected is int and isinstance(value, bool))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise ConfigError(f"{prefix}.{key}: expected {expected.__name__}, "
                              f"got {type(value).__name__} ({value!r})")
        out[key] = value
    return out


def resolve_trial_config(raw: Mapping[str, Any]) -> TrialConfig:
    """Validates a raw trial mapping into a :class:`TrialConfig`.

    Raises:
        ConfigError: An unknown key, a wrong type, an unknown component or option; the message
            names the key path and what is allowed.
    """
    from ablate.models import resolve_loss_spec, resolve_model_spec

    if not isinstance(raw, Mapping):
        raise ConfigError(f"trial config: expected a mapping, got {type(raw).__name__}")
    for key in raw:
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError(f"{key}: unknown key; allowed: {', '.join(TOP_LEVEL_KEYS)}")
    train_raw = raw.get("train") or {}
    if not isinstance(train_raw, Mapping):
        raise ConfigError(f"train: expected a mapping, got {type(train_raw).__name__}")
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed: expected a non-negative int, got {seed!r}")
    return TrialConfig(
        model=resolve_model_spec(raw.get("model")),
        loss=resolve_loss_spec(raw.get("loss")),
        train=TrainOptions(**_typed_options(TrainOptions, train_raw, "train")),
        seed=seed,
    )


def apply_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Returns a deep copy of ``raw`` with dotted keys set (``model.como.relations``).

    A component's options are replaced wholesale when its ``type`` changes, so switching
    ``model.como.type`` to ``none`` does not leave CoMo options behind.
    """
    out = copy.deepcopy(dict(raw))
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"{dotted}: {part} is not a mapping")
            node = child
        if parts[-1] == "type" and node.get("type") != value:
            node.clear()
        node[parts[-1]] = copy.deepcopy(value)
    return out


def parse_set_option(item: str) -> tuple[str, Any]:
    """Parses ``key=value`` from ``--set``; the value is read as YAML (``[a, b]``, ``1e-3``)."""
    import yaml

    key, sep, text = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {item}: expected key=value")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item}: value is not valid YAML "
                          f"({exc.__class__.__name__})") from None
    if isinstance(value, str):
        try:  # YAML reads 1e-3 as a string; numbers in scientific notation are meant as floats
            value = float(value) if any(c in value for c in "eE.") else value
        except ValueError:
            pass
    return key, value


def load_raw_config(config_or_preset: str) -> dict[str, Any]:
    """A raw trial mapping from a YAML file path or a preset name."""
    from ablate.models import PRESETS

    if config_or_preset in PRESETS:
        return copy.deepcopy(dict(PRESETS[config_or_preset]))
    path = Path(config_or_preset)
    if not path.exists():
        raise ConfigError(f"{config_or_preset}: neither a file nor a preset; presets: "
                          f"{', '.join(sorted(PRESETS))}")
    return read_yaml(path)


def read_yaml(path: Path) -> dict[str, Any]:
    """Safely loads a YAML mapping; syntax errors name the file and line."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or exc.__class__.__name__
        raise ConfigError(f"{path}:{where}: invalid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got "
                          f"{type(data).__name__}")
    return data
