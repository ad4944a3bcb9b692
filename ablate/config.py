"""Trial configuration: model and loss specs (validated by the registry) plus training options.

A trial config is a mapping with the top-level keys ``model``, ``loss``, ``train`` and ``seed``;
it comes from a YAML file, a preset name, or a study's variant. It is validated once, here, into
a frozen :class:`TrialConfig`; variants are derived from raw mappings with :func:`apply_overrides`
before validation, never by mutating a validated config.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ablate.bounded import TooLarge, load_yaml
from ablate.errors import ConfigError, reject_unknown, short
from ablate.typecheck import check, check_fields, mapping, yaml_float

TOP_LEVEL_KEYS = ("model", "loss", "train", "seed")

# The range of every numeric training option: (low, high, low excluded). Outside it a trial
# cannot train (a NaN or zero learning rate, negative decay) or cannot finish (1e9 epochs).
TRAIN_RANGES: dict[str, tuple[float, float, bool]] = {
    "epochs": (1, 100_000, False),
    "batch_size": (2, 65_536, False),
    "lr": (0.0, 1.0, True),
    "weight_decay": (0.0, 1.0, False),
    "segments": (1, 65_536, False),
    "eval_every": (1, 100_000, False),
    "threads": (0, 1_024, False),
    "eval_chunk": (0, 1_000_000, False),
}

MAX_SEED = 2**31 - 1  # torch and numpy take 32-bit seeds

Device = Literal["auto", "cpu", "cuda"]
LrSchedule = Literal["constant", "cosine"]


@dataclass(frozen=True)
class TrainOptions:
    """Optimisation options of one trial.

    Args:
        epochs: Passes over the abnormal training videos; validation and test are evaluated after
            each.
        batch_size: Videos per step, half normal and half abnormal (must be even); RTFM's 32 + 32.
        lr: Adam learning rate; the peak of a schedule (RTFM: 1e-3, constant).
        lr_schedule: ``cosine`` or ``constant`` (RTFM's): under ``cosine`` each epoch e of E
            trains at ``lr * (1 + cos(pi * e / E)) / 2``, so late epochs take small steps and
            the final epoch's numbers settle instead of jumping with the last batches.
        weight_decay: Adam weight decay (RTFM's).
        segments: Segments each training video is resampled to (the field uses 32).
        val_fraction: Share of each label's train videos held out as the validation split that
            searches and early stopping select on (video-level labels only); 0 disables it.
        eval_every: Score the test split every this many epochs, and always after the last
            (validation is scored every epoch).
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        amp: Mixed precision on CUDA (bfloat16); ignored on CPU.
        threads: CPU threads for torch; 0 picks the cores Ray or the machine grants.
        eval_chunk: Score validation and test videos longer than this in windows of at most this
            many snippets, each on its own (bounds CoMo's O(T^2) graphs); 0 scores them whole.
    """

    # 32 cosine epochs from a 3e-3 peak: long enough that the default study's variants converge
    # (the report's criterion), short enough that it finishes within 15 minutes on 2 cores.
    epochs: int = 32
    batch_size: int = 64
    lr: float = 3e-3
    lr_schedule: LrSchedule = "cosine"
    weight_decay: float = 5e-3
    segments: int = 32
    val_fraction: float = 0.1
    eval_every: int = 5
    device: Device = "auto"
    amp: bool = True
    threads: int = 0
    eval_chunk: int = 0

    def __post_init__(self) -> None:
        # Types are checked where a mapping becomes options (check_fields); values here.
        _check_ranges(self, TRAIN_RANGES)
        if self.batch_size % 2:
            raise ConfigError(f"train.batch_size: must be even (half normal, half abnormal), "
                              f"got {self.batch_size}")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"train.val_fraction: must be in [0, 1), got {self.val_fraction}")


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


def _check_ranges(obj: object, ranges: Mapping[str, tuple[float, float, bool]]) -> None:
    """Each named field within its range; NaN is in none."""
    for name, (low, high, open_low) in ranges.items():
        value = getattr(obj, name)
        inside = (low < value if open_low else low <= value) and value <= high
        if not inside:  # also NaN, which compares false to everything
            bracket = "(" if open_low else "["
            raise ConfigError(f"train.{name}: must be in {bracket}{low:g}, {high:g}], "
                              f"got {short(value)}")


def resolve_trial_config(raw: Mapping[str, Any]) -> TrialConfig:
    """Validates a raw trial mapping into a :class:`TrialConfig`.

    Raises:
        ConfigError: An unknown key, a wrong type, an unknown component or option; the message
            names the key path and what is allowed.
    """
    from ablate.models import resolve_loss_spec, resolve_model_spec

    raw = mapping(raw, "trial config")
    reject_unknown(raw, TOP_LEVEL_KEYS, "")
    seed = check(int, raw.get("seed", 0), "seed")
    if not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"seed: must be in [0, {MAX_SEED}], got {seed}")
    return TrialConfig(
        model=resolve_model_spec(raw.get("model")),
        loss=resolve_loss_spec(raw.get("loss")),
        train=TrainOptions(**check_fields(TrainOptions, raw.get("train"), "train",
                                          what="option")),
        seed=seed,
    )


def dotted(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys: ``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}`` (an empty
    mapping stays a value)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            flat.update(dotted(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


FUSABLE = ("seed", "train.epochs", "train.lr", "train.lr_schedule", "train.weight_decay",
           "train.eval_every", "loss")
"""Config keys (with everything under them) in which the members of a fused trial may differ:
each member has its own seed, Adam, epoch count and objective. Everything else (the model, the
batch layout, the device) is shared by the one vectorised forward pass."""


def is_fusable(key: str) -> bool:
    """Whether the dotted config ``key`` may differ between the members of a fused trial."""
    return any(key == allowed or key.startswith(f"{allowed}.") for allowed in FUSABLE)


def _shared(config: TrialConfig) -> dict[str, Any]:
    """The dotted keys and values of ``config`` that fused trials share (all but FUSABLE)."""
    return {k: v for k, v in dotted(config.to_dict()).items() if not is_fusable(k)}


def shared_part(config: TrialConfig) -> str:
    """What trials fused as one model must have in common (canonical JSON): equal for two
    configs exactly when they may fuse (:func:`unshared_keys` names what differs)."""
    return json.dumps(_shared(config), sort_keys=True, default=str)


def unshared_keys(first: TrialConfig, second: TrialConfig) -> list[str]:
    """The dotted keys, sorted, that keep two configs from fusing: those outside
    :data:`FUSABLE` whose values differ (or that only one of them has)."""
    a, b = _shared(first), _shared(second)
    return sorted(k for k in a.keys() | b.keys() if a.get(k, _MISSING) != b.get(k, _MISSING))


_MISSING = object()


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
    """Parses ``key=value`` from ``--set``; the value is read as YAML (``[a, b]``, ``1e-3``),
    within :mod:`ablate.bounded`'s limits."""
    import yaml

    key, sep, text = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {item}: expected key=value")
    try:
        value = load_yaml(text)
    except TooLarge as exc:
        raise ConfigError(f"--set {key}: the value {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item}: value is not valid YAML "
                          f"({exc.__class__.__name__})") from None
    return key, yaml_float(value)


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
    """Safely loads a YAML mapping, within :mod:`ablate.bounded`'s limits (aliases, nesting);
    syntax errors name the file and line."""
    import yaml

    try:
        text = path.read_bytes().decode("utf-8")
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a YAML file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        line = exc.object[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line}: not UTF-8 text (byte "
                          f"0x{exc.object[exc.start]:02x}); save the file as UTF-8") from None
    try:
        data = load_yaml(text)
    except TooLarge as exc:
        raise ConfigError(f"{path}: {exc}") from None
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
