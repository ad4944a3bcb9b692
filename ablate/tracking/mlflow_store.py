"""The :class:`~ablate.tracking.store.Tracker` on MLflow: the only module that imports MLflow.

MLflow 3 deprecates its file store; ``ablate`` defaults to SQLite (``sqlite:///mlflow.db``),
whose artifacts go beside the database (``mlartifacts/STUDY``) rather than into the working
directory, and a tracking server (``http://...``) on a cluster.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ablate.errors import AblateError
from ablate.tracking.check import check_sqlite, check_uri, migration_lock, redacted
from ablate.tracking.store import Experiment, Point, RunStatus, TrackedRun
from ablate.tracking.uri import sqlite_path

if TYPE_CHECKING:
    from mlflow import MlflowClient

PAGE = 1000  # runs per search page
PARAM_BATCH = 100  # MLflow's limit of params per log_batch
METRIC_BATCH = 1000
PARAM_LENGTH = 6000  # MLflow's limit of a param value


def connect(uri: str) -> MlflowTracker:
    """A tracker for ``uri``, checked to answer before any trial starts.

    The URI is checked first (:mod:`ablate.tracking.check`); a SQLite store is then opened
    under its migration lock, so that drivers started together never migrate one new
    database at the same time.

    Raises:
        AblateError: The store cannot be reached or opened.
    """
    check_uri(uri)
    db = sqlite_path(uri)
    if db is None:
        return _open(uri)
    if not db.parent.is_dir():
        raise AblateError(f"tracking store {uri}: directory {db.parent} does not exist")
    if not os.access(db.parent, os.W_OK):
        raise AblateError(f"tracking store {uri}: directory {db.parent} is not writable")
    check_sqlite(uri, db)
    with migration_lock(db):
        return _open(uri)


def _open(uri: str) -> MlflowTracker:
    """The client of ``uri``, after one search shows the store answers (and, for a database,
    has MLflow's schema: MLflow creates or upgrades it on first use)."""
    try:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)
    except Exception as exc:  # MLflow raises many types for unreachable stores
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AblateError(f"tracking store {redacted(uri)} is not reachable: {first[:200]}"
                          ) from None
    return MlflowTracker(client)


def _run(run: Any) -> TrackedRun:
    return TrackedRun(run_id=run.info.run_id, status=run.info.status,
                      tags=dict(run.data.tags), params=dict(run.data.params),
                      metrics={k: float(v) for k, v in run.data.metrics.items()},
                      start_time=int(run.info.start_time or 0),
                      end_time=None if run.info.end_time is None else int(run.info.end_time))


def _experiment(found: Any) -> Experiment:
    return Experiment(found.experiment_id, found.name, found.lifecycle_stage == "deleted",
                      dict(found.tags))


def _tag_filter(tags: Mapping[str, str]) -> str:
    return " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())


class MlflowTracker:
    """A :class:`~ablate.tracking.store.Tracker` over an MLflow client."""

    def __init__(self, client: MlflowClient) -> None:
        self.client = client

    @property
    def uri(self) -> str:
        return self.client.tracking_uri

    def experiment(self, name: str) -> Experiment | None:
        found = self.client.get_experiment_by_name(name)
        return None if found is None else _experiment(found)

    def experiments(self, tag: str) -> list[Experiment]:
        found = self.client.search_experiments(filter_string=f"tags.`{tag}` != ''",
                                               max_results=PAGE)
        return [_experiment(e) for e in found]

    def create_experiment(self, name: str, tags: Mapping[str, str]) -> str | None:
        from mlflow.exceptions import MlflowException

        db = sqlite_path(self.uri)
        location = None if db is None else str(db.parent / "mlartifacts" / name)
        try:
            return self.client.create_experiment(name, artifact_location=location,
                                                 tags=dict(tags))
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_ALREADY_EXISTS":
                return None  # another process created it first
            raise

    def set_experiment_tag(self, experiment_id: str, key: str, value: str) -> None:
        self.client.set_experiment_tag(experiment_id, key, value)

    def runs(self, experiment_id: str, tags: Mapping[str, str]) -> list[TrackedRun]:
        runs, token = [], None
        while True:
            page = self.client.search_runs([experiment_id], _tag_filter(tags),
                                           max_results=PAGE, page_token=token)
            runs.extend(_run(r) for r in page)
            token = page.token
            if not token:
                return runs

    def run(self, run_id: str) -> TrackedRun:
        return _run(self.client.get_run(run_id))

    def create_run(self, experiment_id: str, name: str, tags: Mapping[str, str]) -> TrackedRun:
        return _run(self.client.create_run(experiment_id, tags=dict(tags), run_name=name))

    def log(self, run_id: str, params: Mapping[str, str] | None = None,
            metrics: Sequence[Point] = ()) -> None:
        from mlflow.entities import Metric, Param

        items = [Param(k, str(v)[:PARAM_LENGTH]) for k, v in (params or {}).items()]
        for start in range(0, len(items), PARAM_BATCH):
            self.client.log_batch(run_id, params=items[start:start + PARAM_BATCH])
        now = int(time.time() * 1000)
        points = [Metric(p.key, float(p.value), now, int(p.step)) for p in metrics]
        for start in range(0, len(points), METRIC_BATCH):
            self.client.log_batch(run_id, metrics=points[start:start + METRIC_BATCH])

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(run_id, key, value)

    def set_status(self, run_id: str, status: RunStatus) -> None:
        if status == "RUNNING":
            self.client.update_run(run_id, status="RUNNING")
        else:
            self.client.set_terminated(run_id, status=status)

    def metric_history(self, run_id: str, metric: str) -> dict[int, float]:
        latest: dict[int, tuple[int, float]] = {}
        for m in self.client.get_metric_history(run_id, metric):
            if m.step not in latest or m.timestamp >= latest[m.step][0]:
                latest[m.step] = (m.timestamp, float(m.value))
        return {step: value for step, (_, value) in sorted(latest.items())}

    def log_artifacts(self, run_id: str, files: Sequence[tuple[str, Path]]) -> None:
        for folder, path in files:
            if path.is_dir():
                self.client.log_artifacts(run_id, str(path), artifact_path=folder or None)
            else:
                self.client.log_artifact(run_id, str(path), artifact_path=folder or None)

    def fetch_artifact(self, run_id: str, path: str, into: Path) -> Path | None:
        try:
            return Path(self.client.download_artifacts(run_id, path, str(into)))
        except Exception:  # MLflow raises its own and OS errors for a missing artifact
            return None
