"""The tracking seam: what ``ablate`` needs of a tracking store, whichever system holds it.

A study is an experiment with one parent run (tag ``ablate.role=study``) and one child run per
trial (``ablate.role=trial``); :mod:`ablate.tracking.study` writes them exactly once and
:mod:`ablate.tracking.runs` reads them back. Both speak only to a :class:`Tracker`, a handful of
primitives over experiments, runs, metrics and artifacts, in the spirit of Optuna's
``BaseStorage``. :mod:`ablate.tracking.mlflow_store` implements it on MLflow, the one module
that imports MLflow; another backend implements these methods and is chosen in
:func:`ablate.tracking.connect.connect`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple, Protocol

RunStatus = Literal["RUNNING", "FINISHED", "FAILED", "KILLED", "SCHEDULED"]
FINISHED: RunStatus = "FINISHED"


@dataclass(frozen=True)
class Experiment:
    """One experiment (a study's runs live in the experiment named after it)."""

    experiment_id: str
    name: str
    deleted: bool
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TrackedRun:
    """One run as the store holds it: its state, tags, parameters and latest metric values.

    Times are milliseconds since the epoch; ``end_time`` is None while it runs.
    """

    run_id: str
    status: RunStatus
    tags: Mapping[str, str]
    params: Mapping[str, str]
    metrics: Mapping[str, float]
    start_time: int = 0
    end_time: int | None = None


class Point(NamedTuple):
    """One metric value at one step (epoch)."""

    key: str
    value: float
    step: int


class Tracker(Protocol):
    """A tracking store. Every method raises :class:`~ablate.errors.AblateError` (never the
    backend's own exceptions) for a store it cannot reach."""

    @property
    def uri(self) -> str:
        """Where the store is, as the user named it (``sqlite:///...``, ``http://...``)."""

    def experiment(self, name: str) -> Experiment | None:
        """The experiment called ``name`` (active or deleted), None when there is none."""

    def experiments(self, tag: str) -> list[Experiment]:
        """The active experiments carrying the tag ``tag``."""

    def create_experiment(self, name: str, tags: Mapping[str, str]) -> str | None:
        """Creates an experiment with its tags, in one step; returns its id, or None when an
        experiment of that name exists already (another process may have created it first)."""

    def set_experiment_tag(self, experiment_id: str, key: str, value: str) -> None: ...

    def runs(self, experiment_id: str, tags: Mapping[str, str]) -> list[TrackedRun]:
        """Every run of the experiment (any state) whose tags include ``tags``."""

    def run(self, run_id: str) -> TrackedRun: ...

    def create_run(self, experiment_id: str, name: str, tags: Mapping[str, str]) -> TrackedRun:
        """A new RUNNING run."""

    def log(self, run_id: str, params: Mapping[str, str] | None = None,
            metrics: Sequence[Point] = ()) -> None:
        """Logs parameters (each once per run) and metric points."""

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None: ...

    def set_status(self, run_id: str, status: RunStatus) -> None:
        """Marks a run RUNNING, or ends it with a final status (and an end time)."""

    def metric_history(self, run_id: str, metric: str) -> dict[int, float]:
        """``{step: value}`` of one metric of a run, the last value logged at each step."""

    def log_artifacts(self, run_id: str, files: Sequence[tuple[str, Path]]) -> None:
        """Uploads ``(artifact folder, local file or directory)`` pairs; folder ``""`` is the
        run's root."""

    def fetch_artifact(self, run_id: str, path: str, into: Path) -> Path | None:
        """Downloads the artifact ``path`` of a run into ``into``; None when it has none."""
