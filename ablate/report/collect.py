"""Reading a study's runs back from MLflow for a report (only reads, so a report may run while
the study does).

The layout is the one :mod:`ablate.study.tracking` writes: one experiment per study, a parent run
tagged ``ablate.role=study``, one child run per trial tagged ``ablate.role=trial`` with
``ablate.trial_key``, ``ablate.variant`` and ``ablate.seed``; final metrics are the latest values
of the per-epoch metrics. ``study.json`` (:mod:`ablate.report.record`) adds the planned trials,
the spec and a search's space; a report without it still works from MLflow alone, with defaults
it names in its notes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ablate.errors import AblateError
from ablate.metrics import best_by, is_tracked
from ablate.report.record import StudyRecord, read_record
from ablate.study.tracking import search_all_runs

if TYPE_CHECKING:
    from mlflow import MlflowClient

NO_EXPERIMENT = ("no MLflow experiment '{study}' in {uri}; run `ablate run SPEC` first, or pass "
                 "--tracking-uri (or MLFLOW_TRACKING_URI) of the store the study was run with")
DELETED_EXPERIMENT = ("MLflow experiment '{study}' is deleted; restore it with `mlflow "
                      "experiments restore` to report it")
NO_PARENT = ("MLflow experiment '{study}' has no study run (tag ablate.role=study); it was not "
             "written by `ablate run`")
NO_IDENTITY = ("run {run_id} is tagged as a trial of '{study}' but has no valid {tags}; left out "
               "(it was not written by `ablate run`)")
IDENTITY_TAGS = ("ablate.trial_key", "ablate.variant", "ablate.seed")
DUPLICATE_RUNS = "{key}: {count} finished runs; the latest ({run_id}) is used"

FINISHED = "FINISHED"
FAILED_STATES = ("FAILED", "KILLED")
DEFAULT_BASE_NAMES = ("full", "base")
DEFAULT_METRIC = "auc"  # without study.json: the test AUC every trial logs


@dataclass(frozen=True)
class TrialRun:
    """One child run: a trial's identity, state, parameters and final metrics."""

    run_id: str
    key: str
    variant: str
    seed: int
    status: str
    params: dict[str, str]
    metrics: dict[str, float]
    final_epoch: int | None = None
    stopped_early: bool = False
    end_time: int = 0

    @property
    def finished(self) -> bool:
        return self.status == FINISHED


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
        name: The study name (also the MLflow experiment name).
        tracking_uri: The store it was read from.
        experiment_id: The MLflow experiment.
        parent_run_id: The study's parent run (where the report is logged).
        parent_params: The parent run's parameters (spec_hash, design, dataset, trials, ...).
        record: ``study.json``, or None when absent or of another spec.
        runs: Every child run, in any state.
        notes: Things the reader should know (missing study.json, duplicate runs, ...).
    """

    name: str
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    parent_params: dict[str, str]
    record: StudyRecord | None
    runs: tuple[TrialRun, ...]
    notes: tuple[str, ...] = ()

    @property
    def spec(self) -> dict[str, Any]:
        return self.record.spec if self.record is not None else {}

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
        """One finished run per trial key (the latest where a key has several)."""
        return sorted(_latest_finished(self.runs).values(),
                      key=lambda r: (r.variant, r.seed, r.key))

    @property
    def best(self) -> TrialRun | None:
        """The finished run with the best final metric (the first of a tie)."""
        return best_by(self.finished, lambda r: r.metrics.get(self.metric), self.mode)

    @property
    def planned_keys(self) -> list[str]:
        return [t.key for t in self.record.planned] if self.record is not None else []

    @property
    def planned_variants(self) -> list[str]:
        """Variants of the planned trials, in plan order (empty without a record)."""
        planned = self.record.planned if self.record is not None else ()
        return list(dict.fromkeys(t.variant for t in planned))

    @property
    def planned_count(self) -> int | None:
        """Trials the study plans: from ``study.json``, else the parent run's ``trials``."""
        if self.planned_keys:
            return len(self.planned_keys)
        try:
            return int(self.parent_params["trials"])
        except (KeyError, ValueError):
            return None

    def missing(self) -> list[MissingTrial]:
        """Planned trials without a finished run; for a search (no planned keys), the unfinished
        runs."""
        done = {r.key for r in self.finished}
        by_key: dict[str, TrialRun] = {}
        for run in self.runs:
            if not run.finished and run.key not in done:
                if run.key not in by_key or run.end_time >= by_key[run.key].end_time:
                    by_key[run.key] = run
        keys = ([k for k in self.planned_keys if k not in done] if self.planned_keys
                else sorted(by_key))
        out = []
        for key in keys:
            run = by_key.get(key)
            if run is None:
                out.append(MissingTrial(key, "not started"))
            else:
                state = "failed" if run.status in FAILED_STATES else "running"
                out.append(MissingTrial(key, state, run.run_id))
        return out


def _latest_finished(runs: Iterable[TrialRun]) -> dict[str, TrialRun]:
    """The latest finished run of each trial key."""
    latest: dict[str, TrialRun] = {}
    for run in runs:
        if run.finished and (run.key not in latest or run.end_time > latest[run.key].end_time):
            latest[run.key] = run
    return latest


def _bad_identity(tags: Mapping[str, str]) -> list[str]:
    """The identity tags a child run lacks or holds malformed (a seed that is not an integer)."""
    bad = [t for t in IDENTITY_TAGS if t not in tags]
    try:
        int(tags.get("ablate.seed", "0"))
    except ValueError:
        bad.append("ablate.seed")
    return bad


def _trial_run(run: Any) -> TrialRun:
    """The trial of a child run whose identity tags are sound (:func:`_bad_identity`)."""
    tags = run.data.tags
    try:
        final_epoch: int | None = int(tags["ablate.final_epoch"])
    except (KeyError, ValueError):
        final_epoch = None
    return TrialRun(
        run_id=run.info.run_id, key=tags["ablate.trial_key"], variant=tags["ablate.variant"],
        seed=int(tags["ablate.seed"]),
        status=run.info.status, params=dict(run.data.params),
        metrics={k: float(v) for k, v in run.data.metrics.items() if is_tracked(k)},
        final_epoch=final_epoch, stopped_early=tags.get("ablate.stopped_early") == "true",
        end_time=int(run.info.end_time or run.info.start_time or 0))


def collect(client: MlflowClient, study: str, storage: str) -> StudyRuns:
    """Reads a study's parent run, child runs and ``study.json``.

    Args:
        client: A connected client (:func:`ablate.study.tracking.connect`).
        study: The study name.
        storage: Where ``ablate run`` kept the study (``STORAGE/STUDY/study.json``).

    Raises:
        AblateError: No such experiment, or it has no study run; ``study.json`` is not a study
            record, or lists a trial that is not a ``{key, variant, seed}`` object.
    """
    uri = client.tracking_uri
    experiment = client.get_experiment_by_name(study)
    if experiment is None:
        raise AblateError(NO_EXPERIMENT.format(study=study, uri=uri))
    if experiment.lifecycle_stage == "deleted":
        raise AblateError(DELETED_EXPERIMENT.format(study=study))
    eid = experiment.experiment_id
    parents = search_all_runs(client, eid, "tags.`ablate.role` = 'study'")
    if not parents:
        raise AblateError(NO_PARENT.format(study=study))
    # The tracker reuses the first study run it finds; search order is newest first, so the
    # oldest is the one every resume wrote to.
    parent = min(parents, key=lambda r: r.info.start_time or 0)
    children = search_all_runs(
        client, eid, f"tags.`ablate.role` = 'trial' and tags.`ablate.study` = '{study}'")
    notes: list[str] = []
    record = read_record(storage, study, parent.data.tags.get("ablate.spec_hash"), notes)
    trials = []
    for child in children:
        bad = _bad_identity(child.data.tags)
        if bad:
            notes.append(NO_IDENTITY.format(run_id=child.info.run_id, study=study,
                                            tags=", ".join(bad)))
        else:
            trials.append(_trial_run(child))
    counts: dict[str, int] = {}
    for run in trials:
        if run.finished:
            counts[run.key] = counts.get(run.key, 0) + 1
    chosen = _latest_finished(trials)
    notes += [DUPLICATE_RUNS.format(key=key, count=n, run_id=chosen[key].run_id)
              for key, n in sorted(counts.items()) if n > 1]
    return StudyRuns(name=study, tracking_uri=uri, experiment_id=eid,
                     parent_run_id=parent.info.run_id, parent_params=dict(parent.data.params),
                     record=record, runs=tuple(trials), notes=tuple(notes))


def metric_history(client: MlflowClient, run_id: str, metric: str) -> dict[int, float]:
    """``{epoch: value}`` of one run's per-epoch metric (the last value logged per step)."""
    history: dict[int, tuple[int, float]] = {}
    for m in client.get_metric_history(run_id, metric):
        if m.step not in history or m.timestamp >= history[m.step][0]:
            history[m.step] = (m.timestamp, float(m.value))
    return {step: value for step, (_, value) in sorted(history.items())}


def metric_histories(client: MlflowClient, runs: Iterable[TrialRun],
                     metric: str) -> dict[str, dict[int, float]]:
    """``{run_id: {epoch: value}}`` of ``metric`` for each of ``runs``."""
    return {r.run_id: metric_history(client, r.run_id, metric) for r in runs}

