"""Reading a study's runs back from the tracking store for a report (only reads, so a report may
run while the study does).

The runs are parsed and chosen by :mod:`ablate.tracking.runs`, as the driver resuming a study
chooses them. ``study.json`` (:class:`~ablate.study.record.StudyRecord`) adds the planned
trials, the spec and a search's space; a report without it still works from the tracking store
alone, with defaults it names in its notes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ablate.errors import AblateError
from ablate.metrics import METRICS, best_by
from ablate.study.record import StageRecord, StudyRecord
from ablate.tracking.runs import TrialRun, choose, oldest, parent_runs, study_trial_runs
from ablate.tracking.store import Tracker

NO_EXPERIMENT = ("no MLflow experiment '{study}' in {uri}; run `ablate run SPEC` first, or pass "
                 "--tracking-uri (or MLFLOW_TRACKING_URI) of the store the study was run with")
DELETED_EXPERIMENT = ("MLflow experiment '{study}' is deleted; restore it with `mlflow "
                      "experiments restore` to report it")
NO_PARENT = ("MLflow experiment '{study}' has no study run (tag ablate.role=study); it was not "
             "written by `ablate run`")
DUPLICATE_RUNS = "{key}: {count} finished runs; the newest ({run_id}) is used"
OTHER_RECORD = ("{path} belongs to another spec (hash {record}, MLflow has {parent}); ignored: "
                "planned trials are unknown")
NO_RECORD = ("no study.json at {path}; planned trials are unknown (pass --storage DIR of the "
             "study to list missing ones)")
UNREADABLE = "{path}: cannot be read ({problem}); planned trials are unknown"

FAILED_STATES = ("FAILED", "KILLED")
DEFAULT_BASE_NAMES = ("full", "base")
DEFAULT_METRIC = METRICS[0]  # without study.json: the test AUC every trial logs


@dataclass(frozen=True)
class MissingTrial:
    """A planned trial without a finished run, and its state: ``running`` (or interrupted),
    ``failed`` or ``not started``."""

    key: str
    state: str
    run_id: str | None = None


@dataclass(frozen=True)
class StudyRuns:
    """Everything a report reads about one study's runs.

    Attributes:
        name: The study name (also the experiment name).
        tracking_uri: The store it was read from.
        experiment_id: The experiment.
        parent_run_id: The study's parent run (where the report is logged).
        parent_params: The parent run's parameters (spec_hash, design, dataset, trials, ...).
        record: ``study.json``, or None when absent or of another spec.
        runs: Every child run, in any state.
        notes: Things the reader should know (missing study.json, duplicate runs, ...).
        stages: A study run in stages: each stage as ``stages.json`` pins it.
    """

    name: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    parent_params: dict[str, str]
    record: StudyRecord | None
    runs: tuple[TrialRun, ...]
    notes: tuple[str, ...] = ()
    stages: tuple[StageRecord, ...] = ()

    @property
    def spec(self) -> dict[str, Any]:
        return dict(self.record.spec) if self.record is not None else {}

    @property
    def is_search(self) -> bool:
        if self.record is not None:
            return self.spec.get("search") is not None
        from ablate.study.identity import SEARCH_PREFIX

        # "search": the variant of every search trial before trials were named by config.
        return any(r.variant == "search" or r.variant.startswith(SEARCH_PREFIX)
                   for r in self.runs)

    @property
    def metric(self) -> str:
        return self.spec.get("metric", DEFAULT_METRIC)

    @property
    def mode(self) -> str:
        return self.spec.get("mode", "max")

    @property
    def select_on_test(self) -> bool:
        """The spec selected (searched, stopped early) on a test metric: results test-tuned."""
        return bool(self.spec.get("select_on_test", False))

    @property
    def base_name(self) -> str | None:
        """The base variant: the spec's ``base_name``, else ``full`` or ``base`` if present."""
        if self.is_search:
            return None
        if self.spec.get("base_name"):
            return self.spec["base_name"]
        present = {r.variant for r in self.runs}
        return next((n for n in DEFAULT_BASE_NAMES if n in present), None)

    @property
    def dataset(self) -> str | None:
        recorded = self.record.dataset if self.record is not None else None
        return recorded or self.parent_params.get("dataset") or None

    @property
    def search_space(self) -> dict[str, tuple[str, list[Any]]]:
        """``{param: (kind, args)}`` of a search study, from ``study.json``."""
        search = self.spec.get("search") or {}
        return {k: (v[0], list(v[1])) for k, v in (search.get("space") or {}).items()}

    @property
    def finished(self) -> list[TrialRun]:
        """The run standing for each trial that finished (:func:`~ablate.tracking.runs.choose`)."""
        return sorted((r for r in choose(self.runs).values() if r.finished),
                      key=lambda r: (r.variant, r.seed, r.key))

    @property
    def best(self) -> TrialRun | None:
        """The finished run with the best final metric (the first of a tie)."""
        return best_by(self.finished, lambda r: r.metrics.get(self.metric), self.mode)

    @property
    def planned_keys(self) -> list[str]:
        """The trials the study runs: those of its stages so far (adaptive seeds, a search's
        confirmation), else the record's (none for a search: Tune samples its trials)."""
        if self.stages:
            return [key for stage in self.stages for key in stage.trials]
        if self.is_search or self.record is None:
            return []
        return [t.key for t in self.record.trials]

    @property
    def planned_variants(self) -> list[str]:
        """Variants of the planned trials, in plan order (empty without a record)."""
        planned = self.record.trials if self.record is not None else ()
        return list(dict.fromkeys(t.variant for t in planned))

    @property
    def planned_count(self) -> int | None:
        """Trials the study plans: from its records, else the parent run's ``trials``."""
        searched = 0
        if self.is_search and self.record is not None:
            search = self.spec.get("search") or {}
            searched = int(search.get("num_samples", 0)) * len(self.spec.get("seeds") or [0])
        if self.planned_keys or searched:
            return len(self.planned_keys) + searched
        try:
            return int(self.parent_params["trials"])
        except (KeyError, ValueError):
            return None

    def missing(self) -> list[MissingTrial]:
        """Planned trials without a finished run; for a search, also its unfinished runs."""
        chosen = choose(self.runs)
        keys = list(self.planned_keys)
        if self.is_search:
            keys += sorted(k for k, r in chosen.items() if not r.finished and k not in keys)
        out = []
        for key in keys:
            run = chosen.get(key)
            if run is None:
                out.append(MissingTrial(key, "not started"))
            elif not run.finished:
                state = "failed" if run.status in FAILED_STATES else "running"
                out.append(MissingTrial(key, state, run.run_id))
        return out


def read_record(storage: str, study: str, spec_hash: str | None,
                notes: list[str]) -> StudyRecord | None:
    """The study's record under ``storage``; None (with a note why) when it is absent, cannot be
    read or belongs to another spec than the tracked study run's ``spec_hash``.

    Raises:
        AblateError: The file is not a study record, or a planned trial is not an object.
    """
    from ablate.study.storage import StudyDir

    directory = StudyDir.at(storage, study)
    path = directory.record_path
    try:
        record = directory.read_record()
    except (OSError, ValueError) as exc:  # an unreachable remote storage is not fatal here
        notes.append(UNREADABLE.format(path=path, problem=exc))
        return None
    if record is None:
        notes.append(NO_RECORD.format(path=path))
        return None
    if spec_hash and record.spec_hash != spec_hash:
        notes.append(OTHER_RECORD.format(path=path, record=record.spec_hash, parent=spec_hash))
        return None
    return record


def collect(tracker: Tracker, study: str, storage: str) -> StudyRuns:
    """Reads a study's parent run, child runs and ``study.json``.

    Args:
        tracker: A connected tracking store (:func:`ablate.tracking.connect.connect`).
        study: The study name.
        storage: Where ``ablate run`` kept the study (``STORAGE/STUDY/study.json``).

    Raises:
        AblateError: No such experiment, or it has no study run; ``study.json`` is not a study
            record, or lists a trial that is not a ``{key, variant, seed}`` object.
    """
    from ablate.tracking.runs import SPEC_HASH

    experiment = tracker.experiment(study)
    if experiment is None:
        raise AblateError(NO_EXPERIMENT.format(study=study, uri=tracker.uri))
    if experiment.deleted:
        raise AblateError(DELETED_EXPERIMENT.format(study=study))
    parents = parent_runs(tracker, experiment)
    if not parents:
        raise AblateError(NO_PARENT.format(study=study))
    parent = oldest(parents)  # the one every resume wrote to
    trials, notes = study_trial_runs(tracker, experiment, study)
    record = read_record(storage, study, parent.tags.get(SPEC_HASH), notes)
    stages: tuple[StageRecord, ...] = ()
    if record is not None:
        from ablate.study.storage import StudyDir

        try:
            stages = StudyDir.at(storage, study).read_stages()
        except (AblateError, OSError) as exc:
            notes.append(f"planned stages unknown: {exc}")
    counts = Counter(run.key for run in trials if run.finished)
    chosen = choose(trials)
    notes += [DUPLICATE_RUNS.format(key=key, count=n, run_id=chosen[key].run_id)
              for key, n in sorted(counts.items()) if n > 1]
    return StudyRuns(name=study, tracking_uri=tracker.uri,
                     experiment_id=experiment.experiment_id, parent_run_id=parent.run_id,
                     parent_params=dict(parent.params), record=record, runs=tuple(trials),
                     notes=tuple(notes), stages=stages)


def metric_histories(tracker: Tracker, runs: Iterable[TrialRun],
                     metric: str) -> dict[str, dict[int, float]]:
    """``{run_id: {epoch: value}}`` of ``metric`` for each of ``runs``."""
    return {r.run_id: tracker.metric_history(r.run_id, metric) for r in runs}
