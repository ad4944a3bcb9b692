"""MLflow tracking of a study: one parent run per study, exactly one child run per trial.

All writes happen in the driver process (the ``ablate run`` command), never in trial workers:
a SQLite store then has a single writer, and on a cluster only the driver needs to reach the
tracking server. Runs are found again by tags, not remembered, so any number of interruptions
and resumes maps each trial to the same run:

- parent: tags ``ablate.role=study``, ``ablate.study``, ``ablate.spec_hash``;
- child: tags ``ablate.role=trial``, ``ablate.study``, ``ablate.trial_key`` (variant/seed: the
  trial's identity, see :mod:`ablate.study.identity`), ``ablate.variant``, ``ablate.seed``,
  ``ablate.config_hash``, ``ablate.spec_hash``, ``mlflow.parentRunId``, and ``ablate.trial_id``
  (Ray's id of the attempt that last ran it: informative only, since Ray's ids do not survive
  a loss of Ray's state).

The experiment is tagged as model training (``mlflow.experimentKind``), so the MLflow UI opens
it on its runs, and carries a shared view (:mod:`ablate.study.mlflow_view`) that shows the
columns a study is compared by.

Per-epoch metrics are logged with ``step = epoch``; epochs already logged (a trial that redoes
an epoch after resuming from an older checkpoint) are skipped, so each step has one value, and
epochs missed while the driver was down are filled in from the trial's checkpointed history.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ablate.errors import AblateError

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from ablate.study.identity import TrialIdentity

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
STEP_METRIC = "loss"  # logged at every epoch (test metrics may be scored less often)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI, None for other stores."""
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def search_all_runs(client: MlflowClient, experiment_id: str, filter_string: str) -> list[Any]:
    """Every run of an experiment matching ``filter_string``, across result pages."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string, max_results=1000,
                                  page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def resolve_tracking_uri(uri: str | None) -> str:
    """``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else SQLite in the working directory.

    Relative SQLite paths are made absolute so Ray workers and later commands agree.
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    db = sqlite_path(uri)
    return uri if db is None else "sqlite:///" + str(db.resolve())


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"model": {"como": {"fusion": "gated"}}}`` -> ``{"model.como.fusion": "gated"}``."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = str(value)
    return out


def connect(uri: str) -> MlflowClient:
    """A client for ``uri``, checked to answer before any trial starts.

    Raises:
        AblateError: The store cannot be reached or opened.
    """
    from mlflow import MlflowClient

    db = sqlite_path(uri)
    if db is not None:
        if not db.parent.is_dir():
            raise AblateError(f"tracking store {uri}: directory {db.parent} does not exist")
        if not os.access(db.parent, os.W_OK):
            raise AblateError(f"tracking store {uri}: directory {db.parent} is not writable")
    client = MlflowClient(tracking_uri=uri)
    try:
        client.search_experiments(max_results=1)
    except Exception as exc:  # MLflow raises many types for unreachable stores
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AblateError(f"tracking store {uri} is not reachable: {first[:200]}") from None
    return client



EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def check_study(client: MlflowClient, study: str, spec_hash: str) -> None:
    """Refuses, before anything is written, what :class:`StudyTracker` would refuse.

    Raises:
        AblateError: The experiment is deleted, or holds study runs of another spec.
    """
    existing = client.get_experiment_by_name(study)
    if existing is None:
        return
    if existing.lifecycle_stage == "deleted":
        raise AblateError(f"MLflow experiment '{study}' is deleted; restore it "
                          f"(mlflow experiments restore) or choose another --name")
    for run in search_all_runs(client, existing.experiment_id, "tags.`ablate.role` = 'study'"):
        if run.data.tags.get("ablate.spec_hash") != spec_hash:
            raise AblateError(
                f"MLflow experiment '{study}' holds study runs of another spec (hash "
                f"{run.data.tags.get('ablate.spec_hash')}, now {spec_hash}); start a new "
                f"study with --name NEW_NAME")


def trial_runs(client: MlflowClient, study: str) -> dict[str, Any]:
    """The study's trial runs by trial key (read only; empty before the study's first run)."""
    experiment = client.get_experiment_by_name(study)
    if experiment is None:
        return {}
    runs: dict[str, Any] = {}
    for run in search_all_runs(client, experiment.experiment_id,
                               f"tags.`ablate.role` = 'trial' and tags.`ablate.study` = "
                               f"'{study}'"):
        key = run.data.tags.get("ablate.trial_key")
        if key and _prefer(run, runs.get(key)):
            runs[key] = run
    return runs


def _prefer(run: Any, other: Any | None) -> bool:
    """Whether ``run`` stands for its trial rather than ``other`` (runs written before trials
    had plan identities may repeat a key): a finished run, else the newest."""
    if other is None:
        return True
    finished = (run.info.status == "FINISHED", other.info.status == "FINISHED")
    if finished[0] != finished[1]:
        return finished[0]
    return (run.info.start_time or 0) > (other.info.start_time or 0)


class StudyTracker:
    """Finds or creates the study's experiment, parent run and child runs.

    Args:
        client: A connected MLflow client.
        study: The study name (also the experiment name).
        spec_hash: The study spec's hash; a parent run with another hash is refused.
    """

    def __init__(self, client: MlflowClient, study: str, spec_hash: str) -> None:
        check_study(client, study, spec_hash)
        self.client = client
        self.study = study
        self.spec_hash = spec_hash
        self.experiment_id = self._experiment()
        self.parent_id = self._parent()
        self._children = trial_runs(client, study)
        self._logged_steps: dict[str, set[int]] = {}

    def _search(self, filter_string: str) -> list[Any]:
        return search_all_runs(self.client, self.experiment_id, filter_string)

    def _experiment(self) -> str:
        existing = self.client.get_experiment_by_name(self.study)
        if existing is not None:
            if existing.tags.get(EXPERIMENT_KIND[0]) is None:
                self.client.set_experiment_tag(existing.experiment_id, *EXPERIMENT_KIND)
            return existing.experiment_id
        location = None
        db = sqlite_path(self.client.tracking_uri)
        if db is not None:  # artifacts beside the database, not in the cwd
            location = str(db.parent / "mlartifacts" / self.study)
        return self.client.create_experiment(
            self.study, artifact_location=location,
            tags={"ablate.study": self.study, EXPERIMENT_KIND[0]: EXPERIMENT_KIND[1]})

    def _parent(self) -> str:
        runs = self._search("tags.`ablate.role` = 'study'")
        if runs:  # the oldest: the one every earlier driver wrote to
            return min(runs, key=lambda r: r.info.start_time or 0).info.run_id
        tags = {"ablate.role": "study", "ablate.study": self.study,
                "ablate.spec_hash": self.spec_hash}
        return self.client.create_run(self.experiment_id, tags=tags,
                                      run_name=self.study).info.run_id

    def start_study(self, params: Mapping[str, Any], view: str | None = None) -> None:
        """Logs the study's parameters (once) and marks its run as running.

        Args:
            params: The parent run's parameters.
            view: A shared view state of the MLflow UI for the experiment (JSON).
        """
        from mlflow.entities import Param

        from ablate.study.mlflow_view import VIEW_TAG

        run = self.client.get_run(self.parent_id)
        missing = {k: str(v) for k, v in params.items() if k not in run.data.params}
        if missing:
            self.client.log_batch(self.parent_id,
                                  params=[Param(k, v[:6000]) for k, v in missing.items()])
        if view is not None:
            self.client.set_experiment_tag(self.experiment_id, VIEW_TAG, view)
        if run.info.status != "RUNNING":
            self.client.update_run(self.parent_id, status="RUNNING")

    def end_study(self, status: str) -> None:
        self.client.set_terminated(self.parent_id, status=status)

    def run_of(self, key: str) -> Any | None:
        """The run recorded for the trial ``key``, if any (in any state)."""
        return self._children.get(key)

    def finished(self) -> dict[str, Any]:
        """The FINISHED runs, by trial key."""
        return {k: r for k, r in self._children.items() if r.info.status == "FINISHED"}

    def child(self, identity: TrialIdentity, trial_id: str, params: Mapping[str, Any]) -> str:
        """The run id of a trial's child run, found by its identity or created on first sight.

        Args:
            identity: The trial's plan identity.
            trial_id: Ray's id of the attempt running it now (recorded, never looked up).
            params: The resolved trial config.
        """
        from mlflow.entities import Param

        run = self._children.get(identity.key)
        if run is None:
            tags = {"mlflow.parentRunId": self.parent_id, "ablate.role": "trial",
                    "ablate.study": self.study, "ablate.trial_id": trial_id,
                    "ablate.trial_key": identity.key, "ablate.variant": identity.variant,
                    "ablate.seed": str(identity.seed),
                    "ablate.config_hash": identity.config_hash,
                    "ablate.spec_hash": self.spec_hash}
            run = self.client.create_run(self.experiment_id, tags=tags, run_name=identity.key)
            self._children[identity.key] = run
        run_id = run.info.run_id
        if run.data.tags.get("ablate.trial_id") != trial_id:
            self.client.set_tag(run_id, "ablate.trial_id", trial_id)
        if not run.data.params:  # also heals a run created just before an interruption
            flat = flatten(params)
            items = [Param(k, v[:6000]) for k, v in sorted(flat.items())]
            for start in range(0, len(items), 100):  # MLflow's batch limit is 100 params
                self.client.log_batch(run_id, params=items[start:start + 100])
        if run.data.tags.get("ablate.trial_id") != trial_id or not run.data.params:
            self._children[identity.key] = self.client.get_run(run_id)
        return run_id

    def logged_epochs(self, run_id: str) -> set[int]:
        """The epochs (steps) whose metrics the run already holds."""
        if run_id not in self._logged_steps:
            self._logged_steps[run_id] = {
                m.step for m in self.client.get_metric_history(run_id, STEP_METRIC)}
        return self._logged_steps[run_id]

    def log_epochs(self, run_id: str, history: Iterable[Mapping[str, float]]) -> None:
        """Logs the per-epoch metrics of every epoch not logged yet (gaps are filled: a result
        reported while the driver was down arrives later through the checkpoint's history)."""
        from mlflow.entities import Metric

        logged = self.logged_epochs(run_id)
        now = int(time.time() * 1000)
        rows = [row for row in history if int(row["epoch"]) not in logged]
        metrics = [Metric(k, float(row[k]), now, int(row["epoch"]))
                   for row in rows for k in row
                   if k != "epoch" and isinstance(row[k], (int, float))]
        for start in range(0, len(metrics), 1000):
            self.client.log_batch(run_id, metrics=metrics[start:start + 1000])
        logged.update(int(row["epoch"]) for row in rows)

    def status(self, run_id: str) -> str:
        return self.client.get_run(run_id).info.status

    def mark_running(self, run_id: str) -> None:
        """Marks a trial's run RUNNING (a retried or resumed run may be FAILED or KILLED)."""
        if self.status(run_id) != "RUNNING":
            self.client.update_run(run_id, status="RUNNING")

    def finish(self, run_id: str, artifacts: Mapping[str, Path], status: str = "FINISHED",
               tags: Mapping[str, str] | None = None) -> None:
        """Uploads artifacts (``name -> local file or directory``) and closes the run."""
        for name, path in artifacts.items():
            if path.is_dir():
                self.client.log_artifacts(run_id, str(path), artifact_path=name)
            elif path.exists():
                self.client.log_artifact(run_id, str(path), artifact_path=name or None)
        for key, value in (tags or {}).items():
            self.client.set_tag(run_id, key, value)
        self.client.set_terminated(run_id, status=status)
        self._refresh(run_id)

    def stop(self, run_id: str, status: str) -> None:
        """Closes a run that did not finish (``KILLED`` when cut short, ``FAILED``)."""
        self.client.set_terminated(run_id, status=status)
        self._refresh(run_id)

    def _refresh(self, run_id: str) -> None:
        run = self.client.get_run(run_id)
        key = run.data.tags.get("ablate.trial_key")
        if key:
            self._children[key] = run
