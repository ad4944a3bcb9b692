"""The study plan: every trial's identity and resolved config, built once from a validated spec.

The CLI builds the :class:`Plan` once; the dry run prints it,
:func:`~ablate.engine.runner.run_study` runs it, and Ray workers receive it pickled, as it is.
Nothing downstream resolves a trial config again: an ablation trial's config is looked up by its
key, and a search trial's sampled values are resolved once where they are first seen (in the
worker, and once in the driver to log them).

The plan's hash covers the resolved configs, not the raw spec, so a study whose trials would now
build different models (a changed code default) is refused on resume, naming what changed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablate.config import TrialConfig, apply_overrides, resolve_trial_config, shared_part
from ablate.errors import ConfigError, short
from ablate.study.identity import SEARCH_PREFIX, TRIAL_INDEX, TrialIdentity
from ablate.study.rungs import Rungs
from ablate.study.schedulers import Schedule, build_schedule
from ablate.study.spec import StudySpec
from ablate.study.variants import Variant, config_hash, variants

TRIAL_KEY = "trial_key"  # the Tune config of an ablation trial: {"trial_key": "full/seed0"}
GROUP_KEY = "group_key"  # of a fused trial, its group's name (Plan.groups): {"group_key": "full"}


@dataclass(frozen=True)
class PlannedTrial:
    """One variant × seed: the unit Ray schedules and MLflow records."""

    identity: TrialIdentity
    config: TrialConfig

    @property
    def key(self) -> str:
        return self.identity.key

    @property
    def variant(self) -> str:
        return self.identity.variant

    @property
    def seed(self) -> int:
        return self.identity.seed


FusedGroups = tuple[tuple[str, tuple[PlannedTrial, ...]], ...]  # (name, members) in plan order


@dataclass(frozen=True)
class Plan:
    """A study's trials, resolved. For a search, ``trials`` is empty and ``base`` is the resolved
    starting config the sampled values are applied to.

    Attributes:
        spec: The validated study spec.
        variants: An ablation's distinct variants, in plan order (empty for a search).
        trials: An ablation's trials, variants × seeds, in plan order.
        base: The resolved base config (seed 0).
        hash: What the study is: the resolved configs and what selects among them.
        schedule: The spec's scheduler, for trials of ``base``'s epochs.
        fused_groups: Fused: the trials each Tune trial trains (see :func:`_fused_groups`).

    Two derived attributes never change what the plan means: ``_by_key`` indexes ``trials``,
    and ``_sampled`` memoises :meth:`trial`'s resolution of search samples (each resolved once
    per process).
    """

    spec: StudySpec
    variants: tuple[Variant, ...]
    trials: tuple[PlannedTrial, ...]
    base: TrialConfig
    hash: str
    schedule: Schedule
    fused_groups: FusedGroups = ()
    _by_key: dict[str, PlannedTrial] = field(init=False, compare=False, repr=False)
    _sampled: dict[str, PlannedTrial] = field(init=False, default_factory=dict, compare=False,
                                              repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_key", {t.key: t for t in self.trials})

    @property
    def keys(self) -> list[str]:
        return [t.key for t in self.trials]

    @property
    def total(self) -> int:
        """Trials the study runs: planned ones, or search samples × seeds."""
        search = self.spec.search
        return len(self.trials) if search is None else search.num_samples * len(self.spec.seeds)

    @property
    def fused(self) -> bool:
        """Whether a Tune trial trains a group of planned trials as one fused model."""
        return self.spec.fuse != "none"

    def member_rungs(self) -> Rungs | None:
        """The rungs the study keeps itself (:mod:`ablate.study.rungs`) before any result, for
        every planned trial, a fused trial's members too; None without a scheduler."""
        return self.schedule.rungs()

    @property
    def groups(self) -> dict[str, tuple[PlannedTrial, ...]]:
        """Fused: the trials of each Tune trial, by group name."""
        return dict(self.fused_groups)

    def regrouped(self, recorded: Mapping[str, Sequence[str]] | None) -> Plan:
        """This plan with the fused groups of the study record it resumes: a study keeps the
        groups it started with, whatever sizing its spec would choose now (auto sizing follows
        ``resources`` and ``max_concurrent``, which may change). A record from before groups
        were recorded (None) had a variant's (or compatible trials') whole group.

        Raises:
            ConfigError: The recorded groups do not partition the plan's trials into groups
                that can each share one model.
        """
        groups = (_recorded_groups(self, recorded) if recorded is not None
                  else _fused_groups(self.spec, self.trials, None))
        return dataclasses.replace(self, fused_groups=tuple(groups.items()))

    def for_stage(self, keys: Sequence[str],
                  recorded: Mapping[str, Sequence[str]] | None = None) -> Plan:
        """This plan with fused groups over the trials ``keys`` alone (a round of adaptive
        seeds trains some variants' next seeds): those ``recorded`` for the stage, else sized
        as a new study's (:func:`members_per_unit`)."""
        if not self.fused:
            return self
        trials = [self._by_key[key] for key in keys]
        groups = (_recorded_groups(self, recorded, keys) if recorded is not None else
                  _fused_groups(self.spec, trials, members_per_unit(self.spec, len(trials))))
        return dataclasses.replace(self, fused_groups=tuple(groups.items()))

    def confirmation(self, configs: Mapping[str, Mapping[str, Any]],
                     seeds: Sequence[int]) -> Plan:
        """A search's confirmation: the configurations ``configs`` (variant -> sampled values)
        on ``seeds``, each trained to the end (no scheduler), as planned trials.

        Raises:
            ConfigError: A configuration no longer resolves, or is not the variant it is
                recorded as.
        """
        from ablate.study.schedulers import Unscheduled

        trials = []
        for variant, sampled in configs.items():
            for seed in seeds:
                trial = self._search_trial({**sampled, TRIAL_INDEX: 0}, seed=seed)
                if trial.variant != variant:
                    raise ConfigError(f"confirmed configuration {variant} resolves to "
                                      f"{trial.variant} now")
                trials.append(trial)
        return dataclasses.replace(self, trials=tuple(trials), schedule=Unscheduled(),
                                   fused_groups=())

    def units(self, keys: Sequence[str]) -> tuple[str, list[str]]:
        """What Tune's grid runs to train the trials ``keys``: ``(config key, values)``, the
        trial keys themselves, or, fused, the groups with a trial among them."""
        if not self.fused:
            return TRIAL_KEY, list(keys)
        wanted = set(keys)
        return GROUP_KEY, [name for name, members in self.fused_groups
                           if any(t.key in wanted for t in members)]

    def members(self, tune_config: Mapping[str, Any]) -> tuple[PlannedTrial, ...]:
        """The planned trials one Tune trial trains: one, or a fused group."""
        if GROUP_KEY in tune_config:
            return self.groups[tune_config[GROUP_KEY]]
        return (self.trial(tune_config),)

    def trial(self, tune_config: Mapping[str, Any]) -> PlannedTrial:
        """The planned trial a Tune ``config`` describes.

        Ablation trials carry their key; search trials carry sampled values under dotted keys,
        plus the Repeater's index choosing the seed, and are resolved here on first sight.

        Raises:
            KeyError: An ablation key this plan does not have.
            ConfigError: Sampled values the base does not accept.
        """
        if TRIAL_KEY in tune_config:
            return self._by_key[tune_config[TRIAL_KEY]]
        memo = json.dumps(dict(tune_config), sort_keys=True, default=str)
        if memo not in self._sampled:
            self._sampled[memo] = self._search_trial(tune_config)
        return self._sampled[memo]

    def _search_trial(self, tune_config: Mapping[str, Any],
                      seed: int | None = None) -> PlannedTrial:
        if seed is None:  # the Repeater's index chooses among the search's seeds
            seeds = self.spec.seeds
            seed = seeds[int(tune_config.get(TRIAL_INDEX, 0)) % len(seeds)]
        sampled = {k: v for k, v in tune_config.items() if k != TRIAL_INDEX}
        config = resolve_trial_config({**apply_overrides(self.spec.base, sampled), "seed": seed})
        digest = config_hash(config)
        variant = f"{SEARCH_PREFIX}{digest[:8]}"
        return PlannedTrial(TrialIdentity(f"{variant}/seed{seed}", variant, seed, digest), config)

    def selection(self) -> dict[str, Any]:
        """The spec's part of the identity that the resolved configs do not carry."""
        return _selection(self.spec)

    def variant_configs(self) -> dict[str, Any]:
        """Each variant's resolved config (a search's base), as the study record keeps them to
        name what changed when a resumed plan differs."""
        if self.spec.search is not None:
            return {"(search base)": self.base.to_dict()}
        return {v.name: v.config.to_dict() for v in self.variants}


def member_dir(checkpoint: Path, index: int, count: int) -> Path:
    """Where member ``index`` of a Tune trial of ``count`` members keeps its checkpoint files:
    the checkpoint itself for a lone trial (a trial's own layout), a subdirectory when fused."""
    return checkpoint if count == 1 else checkpoint / f"member-{index}"


# On CPU a fused trial trains its members one after another (a vectorised call pays nothing
# there), so fusing saves only per-trial overhead while fewer, longer Tune trials leave slots idle
# behind the costliest one. Auto sizing keeps this many fused trials per concurrent slot.
CPU_UNITS_PER_SLOT = 8


def members_per_unit(spec: StudySpec, trials: int) -> int | None:
    """The most trials one fused Tune trial trains: ``fuse_members`` when given; else on GPUs a
    whole group (one card serves all its members in one vectorised call), on CPU few enough that
    the study's ``max_concurrent`` slots each get about :data:`CPU_UNITS_PER_SLOT` Tune trials.
    None: no limit."""
    if spec.fuse_members is not None:
        return spec.fuse_members
    if spec.resources.gpu > 0:
        return None
    return max(1, trials // (CPU_UNITS_PER_SLOT * spec.max_concurrent))


def _fused_groups(spec: StudySpec, trials: Sequence[PlannedTrial], limit: int | None
                  ) -> dict[str, tuple[PlannedTrial, ...]]:
    """The trials each fused Tune trial trains, in plan order. ``seeds``: a variant's seeds.
    ``compatible``: every trial whose config shares all but :data:`~ablate.config.FUSABLE` keys
    with the others, so one model serves them all (different architectures never fuse). A group
    larger than ``limit`` (:func:`members_per_unit`) is split into consecutive parts whose sizes
    differ by at most one. A group is named after its first variant, plus ``+N`` for N more
    variants in it; a part also gets ``#K``, its place among the group's parts."""
    if spec.fuse == "none":
        return {}
    by_model: dict[str, list[PlannedTrial]] = {}
    for trial in trials:
        model = trial.variant if spec.fuse == "seeds" else shared_part(trial.config)
        by_model.setdefault(model, []).append(trial)
    groups: dict[str, tuple[PlannedTrial, ...]] = {}
    for members in by_model.values():
        count = 1 if limit is None else -(-len(members) // limit)
        start = 0
        for k in range(count):  # 5 trials in 2 parts: 3 + 2
            size = len(members) // count + (k < len(members) % count)
            part = tuple(members[start:start + size])
            start += size
            names = list(dict.fromkeys(t.variant for t in part))
            name = names[0] + (f"+{len(names) - 1}" if len(names) > 1 else "")
            groups[name + (f"#{k + 1}" if count > 1 else "")] = part
    return groups


def _recorded_groups(plan: Plan, recorded: Mapping[str, Sequence[str]],
                     keys: Sequence[str] | None = None) -> dict[str, tuple[PlannedTrial, ...]]:
    """``recorded`` (a study record's groups: name -> trial keys) as the plan's trials, checked
    to train every planned trial (or every one of ``keys``) exactly once, each group one
    model."""
    seen: list[str] = [key for members in recorded.values() for key in members]
    if sorted(seen) != sorted(plan.keys if keys is None else keys):
        raise ConfigError("the study record's fused groups do not cover the plan's trials "
                          "exactly once")
    groups = {name: tuple(plan._by_key[key] for key in members)
              for name, members in recorded.items()}
    for name, members in groups.items():
        if len({shared_part(t.config) for t in members}) > 1:
            raise ConfigError(f"the study record's fused group {name!r} mixes models")
    return groups


def build_plan(spec: StudySpec) -> Plan:
    """Resolves every trial of ``spec`` (a search: checks its space against the base).

    Raises:
        ConfigError: A variant or a search value the registry rejects, naming the key.
    """
    base = _resolve_base(spec)
    if spec.search is not None:
        _check_search_space(spec)
        found: tuple[Variant, ...] = ()
        trials: tuple[PlannedTrial, ...] = ()
    else:
        found = tuple(variants(spec, base))
        trials = tuple(
            PlannedTrial(TrialIdentity(f"{v.name}/seed{seed}", v.name, seed,
                                       config_hash(v.config)),
                         dataclasses.replace(v.config, seed=seed))
            for v in found for seed in spec.seeds)
    if spec.adaptive is not None and spec.base_name not in {v.name for v in found}:
        raise ConfigError(f"seeds: adaptive seeds decide each variant against the base "
                          f"'{spec.base_name}', which this study does not run (base_name names "
                          f"it)")
    if spec.adaptive is not None and len(found) < 2:
        raise ConfigError("seeds: adaptive seeds decide variants against the base; this study "
                          "has no other variant")
    body = {"spec": _selection(spec), "base": base.to_dict(),
            "trials": {t.key: t.config.to_dict() for t in trials}}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
    groups = _fused_groups(spec, trials, members_per_unit(spec, len(trials)))
    return Plan(spec=spec, variants=found, trials=trials, base=base, hash=digest[:12],
                schedule=build_schedule(spec.scheduler, base.train.epochs, spec.mode),
                fused_groups=tuple(groups.items()))


def _resolve_base(spec: StudySpec) -> TrialConfig:
    try:
        return resolve_trial_config({**spec.base, "seed": 0})
    except ConfigError as exc:
        raise ConfigError(f"base: {exc}") from None


def _check_search_space(spec: StudySpec) -> None:
    """Every value and both bounds of each dimension must resolve (the sampler may draw any)."""
    assert spec.search is not None
    first = {k: d.args[0] for k, d in spec.search.space.items()}
    for key, dist in spec.search.space.items():
        for value in dist.args:
            raw = apply_overrides(spec.base, {**first, key: value})
            try:
                resolve_trial_config({**raw, "seed": 0})
            except ConfigError as exc:
                raise ConfigError(f"search.space.{key}={short(value)}: {exc}") from None


def _selection(spec: StudySpec) -> dict[str, Any]:
    """The spec's part of the identity that the resolved configs do not carry."""
    identity = spec.identity()
    identity.pop("base")
    identity.pop("reference")
    return identity
