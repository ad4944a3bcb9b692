"""The study spec: one YAML file in ``search_spaces/``, validated as a whole before anything runs.

Example (every key is documented in the README)::

    name: como
    dataset: synthetic            # synthetic | synthetic:ucf | a feature store path
    base: full                    # a preset name or a trial mapping {model, loss, train}
    base_name: full               # how the base variant is named in tables
    overrides: {train.epochs: 10} # applied to the base (and the reference) first
    ablation:
      design: grid                # grid | leave_one_out | add_one_in
      axes:
        model.como.relations:
          values: [[temporal, context, motion, context_motion], [motion], [context_motion]]
    seeds: [0, 1, 2]              # or a count: 3 means [0, 1, 2]
    metric: val_auc               # what selection uses: validation unless select_on_test
    mode: max
    resources: {cpu: 1, gpu: 0}
    max_concurrent: 2
    fuse: none                    # none | seeds | compatible: trials trained as one model
    fuse_members: auto            # most trials per fused Tune trial (ablate.study.plan)

A study either ablates (``ablation``) or searches (``search``: Optuna or random sampling over
``values``, ``uniform``, ``loguniform``, ``int`` distributions), optionally with an ASHA
``scheduler``. Every error names the key and what is allowed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from ablate.config import TRAIN_RANGES
from ablate.errors import ConfigError, reject_unknown, short
from ablate.metrics import METRICS as TEST_METRICS
from ablate.metrics import VALIDATION_METRICS, Metric, Mode
from ablate.stats.decide import Rule
from ablate.study.design import (
    MAX_SEEDS,
    AdaptiveSeeds,
    ConfirmSpec,
    parse_confirm,
    parse_decision,
    parse_seeds,
    within,
)
from ablate.study.schedulers import SchedulerSpec
from ablate.typecheck import check, check_fields, mapping

SPEC_KEYS = ("name", "description", "dataset", "base", "base_name", "overrides", "ablation",
             "seeds", "search", "scheduler", "metric", "mode", "resources", "max_concurrent",
             "max_failures", "reference", "select_on_test", "fuse", "fuse_members", "decision",
             "confirm")

# The enumerations are the annotations of the spec's fields, so the checker reads their choices
# from there; the tuples are the same choices for code that lists them.
Design = Literal["grid", "leave_one_out", "add_one_in"]
DistributionKind = Literal["values", "uniform", "loguniform", "int"]
Algorithm = Literal["optuna", "random"]
# seeds: one Tune trial trains a variant's seeds as one model; compatible: every trial that can
# share one (variants that differ only in numeric training options or the loss, and seeds)
Fuse = Literal["none", "seeds", "compatible"]

DESIGNS: tuple[str, ...] = get_args(Design)
METRICS: tuple[str, ...] = get_args(Metric)
MODES: tuple[str, ...] = get_args(Mode)
DISTRIBUTIONS: tuple[str, ...] = get_args(DistributionKind)
ALGORITHMS: tuple[str, ...] = get_args(Algorithm)
SELECT_ON_TEST = (
    "metric: {metric!r} is a test metric, and this study selects ({how}); select on validation "
    "({allowed}), or set select_on_test: true to select on test (the report then marks the "
    "results test-tuned)"
)
MAX_RESOURCE = 1024  # per trial; also the most trials at a time
MAX_SAMPLES = 10_000  # a search's configurations
MAX_FAILURES = 100  # retries of one trial
MAX_VARIANTS = 10_000  # of a grid, before duplicates are merged
MAX_EPOCHS = int(TRAIN_RANGES["epochs"][1])
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # the whole name: fullmatch


@dataclass(frozen=True)
class Distribution:
    """One search dimension: ``values`` (a choice) or a numeric range."""

    kind: DistributionKind
    args: tuple[Any, ...]


@dataclass(frozen=True)
class SearchSpec:
    algorithm: Algorithm
    num_samples: int
    space: dict[str, Distribution]


@dataclass(frozen=True)
class Resources:
    cpu: float = 1.0
    gpu: float = 0.0


@dataclass(frozen=True)
class StudySpec:
    """A validated study. ``base`` and ``reference`` are raw trial mappings (overrides applied)."""

    name: str
    dataset: str
    base: dict[str, Any]
    base_name: str
    design: Design
    axes: dict[str, tuple[Any, ...]]
    reference: dict[str, Any] | None
    seeds: tuple[int, ...]
    search: SearchSpec | None
    scheduler: SchedulerSpec
    metric: Metric
    mode: Mode
    resources: Resources
    max_concurrent: int
    max_failures: int
    description: str = ""
    select_on_test: bool = False
    fuse: Fuse = "none"
    fuse_members: int | None = None  # at most this many trials per fused Tune trial; None: auto
    adaptive: AdaptiveSeeds | None = None  # seeds added in rounds where still undecided
    decision: Rule | None = None  # None: the defaults (see rule)
    confirm: ConfirmSpec | None = None  # a search's winners run again on fresh seeds
    source: Path | None = field(default=None, compare=False)

    @property
    def rule(self) -> Rule:
        """How comparisons with the base are decided."""
        return self.decision if self.decision is not None else Rule()

    def identity(self) -> dict[str, Any]:
        """What defines the study's trials; resources and concurrency may change on resume.
        The study's hash is :attr:`ablate.study.plan.Plan.hash`, over the resolved trials."""
        search = None
        if self.search is not None:
            search = {"algorithm": self.search.algorithm, "num_samples": self.search.num_samples,
                      "space": {k: [d.kind, list(d.args)] for k, d in self.search.space.items()}}
        return {"dataset": self.dataset, "base": self.base, "base_name": self.base_name,
                "design": self.design, "axes": {k: list(v) for k, v in self.axes.items()},
                "reference": self.reference, "seeds": list(self.seeds), "search": search,
                "scheduler": vars(self.scheduler), "metric": self.metric, "mode": self.mode,
                "select_on_test": self.select_on_test, "fuse": self.fuse,
                # only when given, so the hashes of studies that never set them stay as they were
                **({"fuse_members": self.fuse_members} if self.fuse_members is not None else {}),
                **({"adaptive": vars(self.adaptive)} if self.adaptive is not None else {}),
                **({"decision": vars(self.decision)} if self.decision is not None else {}),
                **({"confirm": {"top_k": self.confirm.top_k,
                                "seeds": list(self.confirm.seeds)}}
                   if self.confirm is not None else {})}


def _err(key: str, problem: str) -> ConfigError:
    return ConfigError(f"{key}: {problem}")


def _distribution(raw: Any, key: str) -> Distribution:
    raw = mapping(raw, key)
    if len(raw) != 1:
        raise _err(key, f"expected exactly one of {', '.join(DISTRIBUTIONS)}, got {sorted(raw)}")
    (kind, args), = raw.items()
    check(DistributionKind, kind, key)
    if kind == "values":
        if not isinstance(args, list) or not args:
            raise _err(f"{key}.values", "expected a non-empty list")
        return Distribution(kind, tuple(args))
    if not isinstance(args, list) or len(args) != 2:
        raise _err(f"{key}.{kind}", f"expected [low, high], got {short(args)}")
    low, high = (check(int if kind == "int" else float, a, f"{key}.{kind}") for a in args)
    if not low < high or (kind == "loguniform" and low <= 0):
        raise _err(f"{key}.{kind}", f"expected 0 < low < high for loguniform and low < high "
                                    f"otherwise, got [{args[0]}, {args[1]}]")
    return Distribution(kind, (low, high))


def _trial_base(raw: Any, key: str) -> dict[str, Any]:
    from ablate.models import PRESETS

    if isinstance(raw, str):
        if raw not in PRESETS:
            raise _err(key, f"unknown preset {short(raw)}; allowed: {', '.join(sorted(PRESETS))} "
                            f"or a mapping with model, loss, train")
        import copy

        return copy.deepcopy(dict(PRESETS[raw]))
    return mapping(raw, key)


def _axes(raw: Any, key: str) -> dict[str, tuple[Any, ...]]:
    raw = mapping(raw, key)
    if not raw:
        raise _err(key, "no axes given")
    axes: dict[str, tuple[Any, ...]] = {}
    for axis, body in raw.items():
        where = f"{key}.{axis}"
        if isinstance(body, list):  # shorthand: a bare list of values
            body = {"values": body}
        body = mapping(body, where)
        reject_unknown(body, ("values",), where)
        values = body.get("values")
        if not isinstance(values, list) or not values:
            raise _err(where, "empty axis; give at least one value under 'values'")
        axes[str(axis)] = tuple(values)
    return axes


def parse_spec(raw: Any, source: Path | None = None) -> StudySpec:
    """Validates a raw study mapping (the parsed YAML).

    Raises:
        ConfigError: The first problem found, naming its key.
    """
    from ablate.config import apply_overrides

    raw = mapping(raw, str(source) if source else "study")
    reject_unknown(raw, SPEC_KEYS, "")
    name = raw.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise _err("name", f"expected a name of letters, digits, '_', '.', '-' (max 64), "
                           f"got {short(name)}")
    dataset = raw.get("dataset", "synthetic")
    if not isinstance(dataset, str) or not dataset:
        raise _err("dataset", f"expected 'synthetic', 'synthetic:SCALE' or a path, "
                              f"got {short(dataset)}")
    overrides = mapping(raw.get("overrides"), "overrides")
    base = apply_overrides(_trial_base(raw.get("base", "full"), "base"), overrides)
    reference = None
    if "reference" in raw:
        reference = apply_overrides(_trial_base(raw["reference"], "reference"), overrides)

    ablation = mapping(raw.get("ablation"), "ablation")
    reject_unknown(ablation, ("design", "axes"), "ablation")
    design = check(Design, ablation.get("design", "grid"), "ablation.design")
    axes = _axes(ablation["axes"], "ablation.axes") if "axes" in ablation else {}
    combinations = (math.prod(len(v) for v in axes.values()) if design == "grid"
                    else 1 + sum(len(v) for v in axes.values()))
    if combinations > MAX_VARIANTS:
        raise _err("ablation.axes", f"{combinations:,} combinations, more than the "
                                    f"{MAX_VARIANTS:,} variants a study may have")
    if design == "add_one_in" and reference is None:
        raise _err("reference", "add_one_in needs a reference (the stripped-down variant the "
                                "axes are added to), e.g. reference: baseline")

    search = _search(raw, axes)
    scheduler = _scheduler(raw)
    resources = Resources(**check_fields(Resources, raw.get("resources"), "resources"))
    if not (0 < resources.cpu <= MAX_RESOURCE and 0 <= resources.gpu <= MAX_RESOURCE):
        raise _err("resources", f"expected 0 < cpu <= {MAX_RESOURCE} and 0 <= gpu <= "
                                f"{MAX_RESOURCE}, got {vars(resources)}")
    base_name = raw.get("base_name", "base")
    if not isinstance(base_name, str) or not base_name:
        raise _err("base_name", f"expected a non-empty string, got {short(base_name)}")
    description = check(str, raw.get("description", ""), "description")

    metric = check(Metric, raw.get("metric", "val_auc"), "metric")
    select_on_test = check(bool, raw.get("select_on_test", False), "select_on_test")
    selecting = [how for how, on in (("a search", search is not None),
                                     ("an early-stopping scheduler", scheduler.type != "none"))
                 if on]
    if metric in TEST_METRICS and selecting and not select_on_test:
        raise ConfigError(SELECT_ON_TEST.format(metric=metric, how=" and ".join(selecting),
                                                allowed=", ".join(VALIDATION_METRICS)))

    seeds, adaptive = parse_seeds(raw.get("seeds", 1))
    if adaptive is not None and search is not None:
        raise _err("seeds", "adaptive seeds decide an ablation's comparisons with the base; a "
                            "search confirms its winners instead (confirm: {top_k, seeds})")
    spec = StudySpec(
        name=name, dataset=dataset, base=base, base_name=base_name, design=design, axes=axes,
        reference=reference, seeds=seeds, search=search,
        scheduler=scheduler, metric=metric, select_on_test=select_on_test,
        mode=check(Mode, raw.get("mode", "max"), "mode"), resources=resources,
        max_concurrent=within(raw.get("max_concurrent", 2), "max_concurrent", 1, MAX_RESOURCE),
        max_failures=within(raw.get("max_failures", 2), "max_failures", 0, MAX_FAILURES),
        description=description, fuse=_fuse(raw, search),
        fuse_members=_fuse_members(raw), adaptive=adaptive,
        decision=parse_decision(raw.get("decision")),
        confirm=parse_confirm(raw.get("confirm"), seeds, search is not None), source=source)
    return spec


def _search(raw: Mapping[str, Any], axes: Mapping[str, Any]) -> SearchSpec | None:
    if raw.get("search") is None:
        return None
    if axes:
        raise _err("search", "a study either ablates (ablation.axes) or searches; "
                             "split it into two studies")
    body = mapping(raw["search"], "search")
    reject_unknown(body, ("algorithm", "num_samples", "space"), "search")
    space = mapping(body.get("space"), "search.space")
    if not space:
        raise _err("search.space", "no dimensions given")
    return SearchSpec(
        algorithm=check(Algorithm, body.get("algorithm", "optuna"), "search.algorithm"),
        num_samples=within(body.get("num_samples", 8), "search.num_samples", 1, MAX_SAMPLES),
        space={str(k): _distribution(v, f"search.space.{k}") for k, v in space.items()})


def _scheduler(raw: Mapping[str, Any]) -> SchedulerSpec:
    body = raw.get("scheduler") or "none"
    if isinstance(body, str):
        body = {"type": body}
    scheduler = SchedulerSpec(**check_fields(SchedulerSpec, body, "scheduler"))
    within(scheduler.grace_period, "scheduler.grace_period", 1, MAX_EPOCHS)
    within(scheduler.reduction_factor, "scheduler.reduction_factor", 2, MAX_EPOCHS)
    return scheduler


def _fuse(raw: Mapping[str, Any], search: SearchSpec | None) -> Fuse:
    fuse = check(Fuse, raw.get("fuse", "none"), "fuse")
    if fuse != "none" and search is not None:
        raise _err("fuse", "fusing applies to ablations; a search runs each sampled "
                           "configuration's seeds as separate trials (remove fuse)")
    return fuse


def _fuse_members(raw: Mapping[str, Any]) -> int | None:
    value = check(int | Literal["auto"], raw.get("fuse_members", "auto"), "fuse_members")
    if value == "auto":
        return None
    if raw.get("fuse", "none") == "none":
        raise _err("fuse_members", "applies to fused studies (set fuse: seeds or compatible, "
                                   "or remove fuse_members)")
    return within(value, "fuse_members", 1, MAX_SEEDS * MAX_VARIANTS)


def load_spec(path: Path) -> StudySpec:
    """Reads and validates a study YAML file."""
    from ablate.config import read_yaml

    if path.is_dir():
        raise ConfigError(f"{path}: is a directory; give a study file (search_spaces/*.yaml)")
    if not path.is_file():
        raise ConfigError(f"{path}: no such study file")
    return parse_spec(read_yaml(path), source=path)
