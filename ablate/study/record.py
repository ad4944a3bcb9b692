"""The study's own records, typed and frozen: ``study.json`` (:class:`StudyRecord`, the plan a
study runs) and ``trials.json`` (:class:`ProgressRecord`, each trial's state), both lists of
:class:`TrialRecord`.

Only this module turns them into JSON and back, validating what it reads, so the runner, the
plan, ``ablate status`` and the report read one type and a damaged file is one error naming it.
:class:`~ablate.study.storage.StudyDir` stores them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, get_args

from ablate.config import MAX_SEED, TRAIN_RANGES, dotted
from ablate.errors import AblateError, short
from ablate.metrics import METRICS

if TYPE_CHECKING:
    from ablate.study.plan import Plan

TrialState = Literal["not started", "pending", "running", "done", "failed", "interrupted"]
NOT_STARTED: TrialState = "not started"
PENDING: TrialState = "pending"
RUNNING: TrialState = "running"
DONE: TrialState = "done"
FAILED: TrialState = "failed"
INTERRUPTED: TrialState = "interrupted"  # cut short by a stop of the driver: resumes next run
TRIAL_STATES: tuple[str, ...] = get_args(TrialState)

DRIVERS = ("running", "finished", "failed", "interrupted")
TRIAL_KEYS = ("key", "variant", "seed", "state", "epoch", *METRICS)
STUDY_KEYS = ("name", "spec_hash", "trials", "spec", "configs", "groups", "source", "dataset",
              "dataset_sha256", "created")
PROGRESS_KEYS = ("driver", "updated", "total", "trials")
MAX_EPOCHS = int(TRAIN_RANGES["epochs"][1])
MAX_TEXT = 4096  # characters of a name or path in a record
MAX_TIME = 2.0**32  # seconds since the epoch (the year 2106): what a record's clock may say
MAX_TRIALS = 10_000_000  # a study's: seeds x variants, or samples x seeds, at their limits

RECORD_FIELDS = {"name": str, "spec_hash": str, "trials": list}
NOT_A_RECORD = ("{path} is not a study record (expected a JSON object with {fields}); move it "
                "away to start the study again")
NOT_A_TRIAL = ("{path}: trials[{index}] is {entry}, not an object with a string key and "
               "variant and an integer seed (a record written by an older ablate); report from "
               "MLflow alone with --storage DIR of a directory without this study")
DAMAGED_STUDY = ("{path}: {problem}; the study record is damaged: restore it from a backup, or "
                 "move it away to start the study again")
DAMAGED_PROGRESS = ("{path}: {problem}; the progress record is damaged: move it away (the next "
                    "`ablate run` of the study writes it anew)")
NOT_GROUPS = ("{path}: the study record's fused groups are not a mapping of group names to lists "
              "of trial keys; restore it from a backup, or run the study anew under another "
              "--name")


@dataclass(frozen=True)
class TrialRecord:
    """One trial as the study's records hold it: its identity (study, variant, seed: what the
    plan made it) and, once it ran, how far it got.

    Attributes:
        key: ``variant/seedN``, the trial's identity.
        variant: Its variant (or a search's ``cfg-<hash>``).
        seed: Its training seed.
        state: What the driver last knew of it.
        epoch: The last epoch it reported.
        metrics: Its last reported metrics (``trials.json`` keeps the test ones,
            :data:`~ablate.metrics.METRICS`).
    """

    key: str
    variant: str
    seed: int
    state: TrialState = NOT_STARTED
    epoch: int = 0
    metrics: Mapping[str, float] = field(default_factory=dict)

    def identity_json(self) -> dict[str, Any]:
        """What ``study.json`` lists of a planned trial."""
        return {"key": self.key, "variant": self.variant, "seed": self.seed}

    def to_json(self) -> dict[str, Any]:
        """What ``trials.json`` lists of a trial."""
        return {**self.identity_json(), "state": self.state, "epoch": self.epoch,
                **{k: v for k, v in self.metrics.items() if k in METRICS}}

    def updated(self, **changes: Any) -> TrialRecord:
        return replace(self, **changes)

    @classmethod
    def from_json(cls, entry: Any) -> TrialRecord:
        """The trial ``entry`` describes.

        Raises:
            NotATrial: It is not a ``{key, variant, seed, ...}`` object.
            ValueError: A value is out of its range, or a key unknown (names which).
        """
        if not (isinstance(entry, dict) and isinstance(entry.get("key"), str)
                and isinstance(entry.get("variant"), str) and _is_int(entry.get("seed"))):
            raise NotATrial(short(entry))
        unknown = sorted(set(entry) - set(TRIAL_KEYS))
        if unknown:
            raise ValueError(f"unknown key {short(unknown[0])} (known: {', '.join(TRIAL_KEYS)})")
        state, epoch = entry.get("state", NOT_STARTED), entry.get("epoch", 0)
        for name in ("key", "variant"):
            if not 0 < len(entry[name]) <= MAX_TEXT:
                raise ValueError(f"{name} is not a name of 1 to {MAX_TEXT} characters")
        _check_whole(entry["seed"], "seed", MAX_SEED)
        _check_whole(epoch, "epoch", MAX_EPOCHS)
        if state not in TRIAL_STATES:
            raise ValueError(f"state is {short(state)}, not one of {', '.join(TRIAL_STATES)}")
        for name in METRICS:
            value = entry.get(name)
            if name in entry and not (_is_number(value) and (0 <= value <= 1 or value != value)):
                raise ValueError(f"{name} is {short(value)}, not a number in [0, 1]")
        metrics = {k: float(entry[k]) for k in METRICS if k in entry}
        return cls(entry["key"], entry["variant"], entry["seed"], state, epoch, metrics)


class NotATrial(ValueError):
    """A record's trial entry that is not a ``{key, variant, seed}`` object at all."""


def _check_whole(value: Any, name: str, high: int) -> None:
    if not (_is_int(value) and 0 <= value <= high):
        raise ValueError(f"{name} is {short(value)}, not a whole number in [0, {high}]")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class StudyRecord:
    """``study.json``: what a study is, pinned when it first runs.

    Attributes:
        name: The study name.
        spec_hash: The plan's hash; a changed plan is refused on resume.
        trials: The planned trials, in plan order (empty for a search).
        spec: The spec's identity (:meth:`~ablate.study.spec.StudySpec.identity`).
        configs: Each variant's resolved config, to name what changed when a plan differs.
        groups: A fused study's groups: group name -> trial keys; None unfused (or recorded
            before groups were).
        source: The spec file.
        dataset: The resolved dataset path.
        dataset_sha256: The fingerprint of its features.
        created: When the study first ran (seconds since the epoch).
    """

    name: str
    spec_hash: str
    trials: tuple[TrialRecord, ...]
    spec: Mapping[str, Any] = field(default_factory=dict)
    configs: Mapping[str, Any] = field(default_factory=dict)
    groups: Mapping[str, tuple[str, ...]] | None = None
    source: str | None = None
    dataset: str | None = None
    dataset_sha256: str | None = None
    created: float | None = None

    @classmethod
    def of_plan(cls, plan: Plan, dataset: str, dataset_sha256: str) -> StudyRecord:
        """The record a study's first run writes."""
        spec = plan.spec
        groups = ({name: tuple(t.key for t in members) for name, members in plan.groups.items()}
                  if plan.fused else None)
        return cls(name=spec.name, spec_hash=plan.hash,
                   trials=tuple(TrialRecord(t.key, t.variant, t.seed) for t in plan.trials),
                   spec=spec.identity(), configs=plan.variant_configs(), groups=groups,
                   source=str(spec.source) if spec.source else None, dataset=dataset,
                   dataset_sha256=dataset_sha256, created=time.time())

    def to_json(self) -> dict[str, Any]:
        body = {"name": self.name, "spec_hash": self.spec_hash, "spec": self.spec,
                "source": self.source, "dataset": self.dataset,
                "dataset_sha256": self.dataset_sha256, "created": self.created,
                "trials": [t.identity_json() for t in self.trials], "configs": self.configs}
        if self.groups is not None:
            body["groups"] = {name: list(keys) for name, keys in self.groups.items()}
        return body

    @classmethod
    def from_json(cls, body: Any, path: str) -> StudyRecord:
        """The record ``body`` (parsed ``study.json`` at ``path``) holds.

        Raises:
            AblateError: It is not a study record, a planned trial is not a
                ``{key, variant, seed}`` object, or its fused groups are malformed; each names
                the file.
        """
        if not isinstance(body, dict) or any(
                not isinstance(body.get(k), t) for k, t in RECORD_FIELDS.items()):
            raise AblateError(NOT_A_RECORD.format(path=path, fields=", ".join(RECORD_FIELDS)))
        try:
            _check_study_fields(body)
        except ValueError as exc:
            raise AblateError(DAMAGED_STUDY.format(path=path, problem=exc)) from None
        trials = []
        for index, entry in enumerate(body["trials"]):
            try:
                trials.append(TrialRecord.from_json(entry))
            except NotATrial:
                raise AblateError(NOT_A_TRIAL.format(path=path, index=index,
                                                     entry=short(entry))) from None
            except ValueError as exc:
                raise AblateError(DAMAGED_STUDY.format(
                    path=path, problem=f"trials[{index}]: {exc}")) from None
        return cls(name=body["name"], spec_hash=body["spec_hash"], trials=tuple(trials),
                   spec=_mapping(body.get("spec")), configs=_mapping(body.get("configs")),
                   groups=_groups(body.get("groups"), path), source=_text(body.get("source")),
                   dataset=_text(body.get("dataset")) or None,
                   dataset_sha256=_text(body.get("dataset_sha256")), created=body.get("created"))

    def changes_to(self, plan: Plan, limit: int = 8) -> list[str]:
        """What differs between this record and ``plan``: each changed key of the spec's
        selection (``fuse: 'none' -> 'seeds'``), then ``variant: key old -> new`` for each
        resolved value that differs."""
        out = []
        if self.spec:
            old_selection = {k: v for k, v in self.spec.items() if k not in ("base", "reference")}
            new_selection = json.loads(json.dumps(plan.selection(), default=str))
            out += [f"{k}: {short(old_selection.get(k, '-'))} -> {short(new_selection.get(k, '-'))}"
                    for k in sorted(set(old_selection) | set(new_selection))
                    if old_selection.get(k) != new_selection.get(k)]
        now = plan.variant_configs()
        for name in sorted(set(self.configs) | set(now)):
            if name not in now or name not in self.configs:
                out.append(f"{name}: {'removed' if name not in now else 'added'}")
                continue
            old, new = dotted(self.configs[name]), dotted(now[name])
            out += [f"{name}: {k} {short(old.get(k, '-'))} -> {short(new.get(k, '-'))}"
                    for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
        return out[:limit] + ([f"... and {len(out) - limit} more"] if len(out) > limit else [])


def _check_study_fields(body: dict[str, Any]) -> None:
    """The fields of a ``study.json`` beyond its shape: known keys, sound values.

    Raises:
        ValueError: Naming the first unsound field.
    """
    unknown = sorted(set(body) - set(STUDY_KEYS))
    if unknown:
        raise ValueError(f"unknown key {short(unknown[0])} (known: {', '.join(STUDY_KEYS)})")
    for name in ("name", "spec_hash", "source", "dataset", "dataset_sha256"):
        value = body.get(name)
        if value is not None and not (isinstance(value, str) and len(value) <= MAX_TEXT):
            raise ValueError(f"{name} is {short(value)}, not a text of at most {MAX_TEXT} "
                             f"characters")
    for name in ("spec", "configs"):
        if not isinstance(body.get(name, {}), dict):
            raise ValueError(f"{name} is {short(body[name])}, not an object")
    _check_time(body.get("created"), "created")
    if len(body["trials"]) > MAX_TRIALS:
        raise ValueError(f"more than {MAX_TRIALS:,} trials")


def _check_time(value: Any, name: str) -> None:
    if value is not None and not (_is_number(value) and 0 <= value <= MAX_TIME):
        raise ValueError(f"{name} is {short(value)}, not a time (seconds since 1970)")


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _groups(value: Any, path: str) -> dict[str, tuple[str, ...]] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(
            isinstance(keys, list) and all(isinstance(k, str) for k in keys)
            for keys in value.values()):
        raise AblateError(NOT_GROUPS.format(path=path))
    return {str(name): tuple(keys) for name, keys in value.items()}


@dataclass(frozen=True)
class ProgressRecord:
    """``trials.json``: the driver's state and every known trial's, what ``ablate status``
    reads.

    Attributes:
        driver: ``running``, ``finished``, ``failed`` or ``interrupted``.
        updated: When it was written (seconds since the epoch).
        total: The trials the study runs.
        trials: Every known trial.
    """

    driver: str
    updated: float
    total: int
    trials: tuple[TrialRecord, ...]

    def to_json(self) -> dict[str, Any]:
        return {"driver": self.driver, "updated": self.updated, "total": self.total,
                "trials": [t.to_json() for t in self.trials]}

    @classmethod
    def from_json(cls, body: Any, path: str) -> ProgressRecord:
        """The progress ``body`` (parsed ``trials.json`` at ``path``) holds; a field a record
        written before it existed leaves out takes its default.

        Raises:
            AblateError: It is not a progress record, or a value is unsound; names the file.
        """
        try:
            return cls._parse(body)
        except ValueError as exc:
            raise AblateError(DAMAGED_PROGRESS.format(path=path, problem=exc)) from None

    @classmethod
    def _parse(cls, body: Any) -> ProgressRecord:
        if not isinstance(body, dict) or not isinstance(body.get("trials"), list):
            raise ValueError(f"not an object with {', '.join(PROGRESS_KEYS)}")
        unknown = sorted(set(body) - set(PROGRESS_KEYS))
        if unknown:
            raise ValueError(f"unknown key {short(unknown[0])} (known: "
                             f"{', '.join(PROGRESS_KEYS)})")
        driver, updated = body.get("driver", "running"), body.get("updated", 0.0)
        if driver not in DRIVERS:
            raise ValueError(f"driver is {short(driver)}, not one of {', '.join(DRIVERS)}")
        _check_time(updated, "updated")
        trials = []
        for index, entry in enumerate(body["trials"]):
            try:
                trials.append(TrialRecord.from_json(entry))
            except ValueError as exc:
                problem = "not an object with a key, variant and seed" if isinstance(
                    exc, NotATrial) else str(exc)
                raise ValueError(f"trials[{index}]: {problem}") from None
        total = body.get("total", len(trials))
        _check_whole(total, "total", MAX_TRIALS)
        return cls(driver=driver, updated=float(updated), total=total, trials=tuple(trials))


StageKind = Literal["search", "round", "confirm"]
STAGE_KINDS: tuple[str, ...] = get_args(StageKind)


@dataclass(frozen=True)
class StageRecord:
    """A stage of a study that runs in stages (adaptive seeds, a search with a confirmation),
    as ``stages.json`` pins it before it runs.

    Attributes:
        kind: ``search`` (Tune's searcher samples the trials), ``round`` (a round of adaptive
            seeds) or ``confirm`` (a search's best configurations on fresh seeds).
        name: ``round 2 (8 seeds)``, ``confirm``, ...
        directory: Its Tune experiment, under the study directory.
        trials: The planned trials it runs (none for a search).
        groups: Fused: the trials of each of its Tune trials, by group name.
        configs: A confirmation: each confirmed configuration's sampled values, by variant.
    """

    kind: StageKind
    name: str
    directory: str
    trials: tuple[str, ...] = ()
    groups: Mapping[str, tuple[str, ...]] | None = None
    configs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": self.kind, "name": self.name,
                                "directory": self.directory, "trials": list(self.trials)}
        if self.groups is not None:
            body["groups"] = {name: list(keys) for name, keys in self.groups.items()}
        if self.configs:
            body["configs"] = {name: dict(values) for name, values in self.configs.items()}
        return body


NOT_STAGES = ("{path}: stage {index} is not a recorded stage (expected kind, name, directory "
              "and trials); restore the file from a backup, or run the study anew under "
              "another --name")


def stages_from_json(body: Any, path: str) -> tuple[StageRecord, ...]:
    """The stages ``stages.json`` (at ``path``) records.

    Raises:
        AblateError: It is not a list of stages, naming the file and the stage.
    """
    entries = body.get("stages") if isinstance(body, dict) else None
    if not isinstance(entries, list):
        raise AblateError(NOT_STAGES.format(path=path, index=0))
    stages = []
    for index, entry in enumerate(entries):
        ok = (isinstance(entry, dict) and entry.get("kind") in STAGE_KINDS
              and isinstance(entry.get("name"), str) and isinstance(entry.get("directory"), str)
              and entry["directory"].replace("-", "").isalnum()
              and isinstance(entry.get("trials"), list)
              and all(isinstance(k, str) for k in entry["trials"])
              and isinstance(entry.get("configs", {}), dict)
              and all(isinstance(v, dict) for v in entry.get("configs", {}).values()))
        if not ok:
            raise AblateError(NOT_STAGES.format(path=path, index=index))
        stages.append(StageRecord(entry["kind"], entry["name"], entry["directory"],
                                  tuple(entry["trials"]), _groups(entry.get("groups"), path),
                                  dict(entry.get("configs", {}))))
    return tuple(stages)
