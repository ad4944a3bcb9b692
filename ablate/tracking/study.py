"""Writing a study to a tracking store: one parent run per study, exactly one child run per
trial, whatever the number of interruptions and resumes.

All writes happen in the driver process (``ablate run``), never in trial workers: a SQLite store
then has a single writer, and on a cluster only the driver needs to reach the tracking server.
Runs are found again by their tags (:mod:`ablate.tracking.runs`), not remembered:

- parent: tags ``ablate.role=study``, ``ablate.study``, ``ablate.spec_hash``;
- child: tags ``ablate.role=trial``, ``ablate.study``, ``ablate.trial_key`` (variant/seed: the
  trial's identity, see :mod:`ablate.study.identity`), ``ablate.variant``, ``ablate.seed``,
  ``ablate.config_hash``, ``ablate.spec_hash``, ``ablate.data_sha256`` (the fingerprint of the
  data it trains on: a study refuses to adopt or continue a run of other data),
  ``mlflow.parentRunId``, and ``ablate.trial_id`` (Ray's id of the attempt that last ran it:
  informative only, since Ray's ids do not survive a loss of Ray's state).

The experiment records the study directory that owns the study (:mod:`ablate.tracking.owner`),
so drivers of one study on two storages never both run it. The experiment is tagged as model
training (``mlflow.experimentKind``), so the MLflow UI opens
it on its runs, and carries a shared view (:mod:`ablate.tracking.view`) that shows the columns a
study is compared by.

Per-epoch metrics are logged with ``step = epoch``; epochs already logged (a trial that redoes
an epoch after resuming from an older checkpoint) are skipped, so each step has one value, and
epochs missed while the driver was down are filled in from the trial's checkpointed history.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ablate.config import dotted
from ablate.errors import AblateError
from ablate.metrics import is_tracked
from ablate.tracking.owner import check_owner, claim
from ablate.tracking.runs import (
    DATA_SHA256,
    ROLE,
    SEED,
    SPEC_HASH,
    STUDY,
    STUDY_ROLE,
    TRIAL_ID,
    TRIAL_KEY,
    TRIAL_ROLE,
    VARIANT,
    TrialRun,
    bad_identity,
    logged_epochs,
    oldest,
    parent_runs,
    trial_run,
)
from ablate.tracking.store import FINISHED, Point, RunStatus, Tracker

if TYPE_CHECKING:
    from ablate.study.identity import TrialIdentity

EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
PARENT_RUN = "mlflow.parentRunId"
DELETED = ("MLflow experiment '{study}' is deleted; restore it (mlflow experiments restore) or "
           "choose another --name")
OTHER_SPEC = ("MLflow experiment '{study}' holds study runs of another spec (hash {found}, now "
              "{spec_hash}); start a new study with --name NEW_NAME")


def check_study(tracker: Tracker, study: str, spec_hash: str, root: str | None = None) -> None:
    """Refuses, before anything is written, a study the store cannot take.

    Args:
        tracker: The tracking store.
        study: The study name.
        spec_hash: The plan's hash.
        root: The study directory of the driver (:attr:`~ablate.study.storage.StudyDir.root`):
            refused while another directory's driver runs the study
            (:func:`~ablate.tracking.owner.check_owner`). None skips that check.

    Raises:
        AblateError: The experiment is deleted, is run from another study directory, or holds
            study runs of another spec.
    """
    experiment = tracker.experiment(study)
    if experiment is None:
        return
    if experiment.deleted:
        raise AblateError(DELETED.format(study=study))
    if root is not None:
        check_owner(tracker, experiment, root)
    for run in parent_runs(tracker, experiment):
        found = run.tags.get(SPEC_HASH)
        if found != spec_hash:
            raise AblateError(OTHER_SPEC.format(study=study, found=found, spec_hash=spec_hash))


def config_params(config: Mapping[str, Any]) -> dict[str, str]:
    """A resolved trial config as run parameters: ``{"model.como.fusion": "gated", ...}``."""
    return {key: str(value) for key, value in dotted(config).items()}


class StudyTracker:
    """Finds or creates the study's experiment, parent run and child runs.

    Args:
        tracker: The tracking store, already checked to take the study (:func:`check_study`).
        study: The study name (also the experiment name).
        spec_hash: The plan's hash.
        runs: The study's trial runs as :func:`~ablate.tracking.runs.chosen_trial_runs` read
            them before the driver decided what to run.
        root: The driver's study directory, claimed as the study's owner
            (:func:`~ablate.tracking.owner.claim`): refused while another directory's driver
            runs the study, also when both create it at once. None claims nothing.
        data_sha256: The fingerprint of the data the trials train on, tagged on each new run.

    Raises:
        AblateError: Another directory's driver runs the study.
    """

    def __init__(self, tracker: Tracker, study: str, spec_hash: str,
                 runs: Mapping[str, TrialRun], root: str | None = None,
                 data_sha256: str | None = None) -> None:
        self.tracker = tracker
        self.study = study
        self.spec_hash = spec_hash
        self.root = root
        self.data_sha256 = data_sha256
        self.experiment_id = self._experiment()
        self.parent_id = self._parent()
        self._children = dict(runs)
        self._logged_steps: dict[str, set[int]] = {}

    def _experiment(self) -> str:
        existing = claim(self.tracker, self.study, self.root,
                         {STUDY: self.study, EXPERIMENT_KIND[0]: EXPERIMENT_KIND[1]})
        if existing.tags.get(EXPERIMENT_KIND[0]) is None:
            self.tracker.set_experiment_tag(existing.experiment_id, *EXPERIMENT_KIND)
        return existing.experiment_id

    def _parent(self) -> str:
        experiment = self.tracker.experiment(self.study)
        assert experiment is not None  # made by _experiment
        found = parent_runs(self.tracker, experiment)
        if found:
            return oldest(found).run_id
        return self.tracker.create_run(
            self.experiment_id, self.study,
            {ROLE: STUDY_ROLE, STUDY: self.study,
             SPEC_HASH: self.spec_hash}).run_id

    def start_study(self, params: Mapping[str, Any], view: str | None = None) -> None:
        """Logs the study's parameters (once) and marks its run as running.

        Args:
            params: The parent run's parameters.
            view: A shared view state of the UI for the experiment (JSON).
        """
        from ablate.tracking.view import VIEW_TAG

        run = self.tracker.run(self.parent_id)
        missing = {k: str(v) for k, v in params.items() if k not in run.params}
        if missing:
            self.tracker.log(self.parent_id, params=missing)
        if view is not None:
            self.tracker.set_experiment_tag(self.experiment_id, VIEW_TAG, view)
        if run.status != "RUNNING":
            self.tracker.set_status(self.parent_id, "RUNNING")

    def end_study(self, status: RunStatus) -> None:
        self.tracker.set_status(self.parent_id, status)

    def runs(self) -> dict[str, TrialRun]:
        """The run standing for each trial the study has tracked, by trial key."""
        return dict(self._children)

    def finished(self) -> dict[str, TrialRun]:
        """The FINISHED runs, by trial key."""
        return {k: r for k, r in self._children.items() if r.finished}

    def child(self, identity: TrialIdentity, trial_id: str, config: Mapping[str, Any]) -> str:
        """The run id of a trial's child run, found by its identity or created on first sight.

        Args:
            identity: The trial's plan identity.
            trial_id: Ray's id of the attempt running it now (recorded, never looked up).
            config: The resolved trial config, logged as parameters.
        """
        run = self._children.get(identity.key)
        if run is None:
            created = self.tracker.create_run(self.experiment_id, identity.key, {
                PARENT_RUN: self.parent_id, ROLE: TRIAL_ROLE,
                STUDY: self.study, TRIAL_ID: trial_id,
                TRIAL_KEY: identity.key, VARIANT: identity.variant,
                SEED: str(identity.seed), "ablate.config_hash": identity.config_hash,
                SPEC_HASH: self.spec_hash,
                **({DATA_SHA256: self.data_sha256} if self.data_sha256 else {})})
            run = self._children[identity.key] = trial_run(created)
        run_id = run.run_id
        if run.trial_id != trial_id:
            self.tracker.set_tags(run_id, {TRIAL_ID: trial_id})
        if not run.params:  # also heals a run created just before an interruption
            self.tracker.log(run_id, params=dict(sorted(config_params(config).items())))
        if run.trial_id != trial_id or not run.params:
            self._refresh(run_id)
        return run_id

    def logged_epochs(self, run_id: str) -> set[int]:
        """The epochs (steps) whose metrics the run already holds."""
        if run_id not in self._logged_steps:
            self._logged_steps[run_id] = logged_epochs(self.tracker, run_id)
        return self._logged_steps[run_id]

    def log_epochs(self, run_id: str, history: Iterable[Mapping[str, float]]) -> None:
        """Logs the per-epoch metrics of every epoch not logged yet (gaps are filled: a result
        reported while the driver was down arrives later through the checkpoint's history)."""
        logged = self.logged_epochs(run_id)
        rows = [row for row in history if int(row["epoch"]) not in logged]
        # The metrics a live report carries (tracked_metrics), also when an epoch arrives
        # through a checkpoint's history, which holds the loss terms too.
        points = [Point(k, float(row[k]), int(row["epoch"]))
                  for row in rows for k in row
                  if is_tracked(k) and isinstance(row[k], (int, float))]
        self.tracker.log(run_id, metrics=points)
        logged.update(int(row["epoch"]) for row in rows)

    def status(self, run_id: str) -> RunStatus:
        return self.tracker.run(run_id).status

    def mark_running(self, run_id: str) -> None:
        """Marks a trial's run RUNNING (a retried or resumed run may be FAILED or KILLED)."""
        if self.status(run_id) != "RUNNING":
            self.tracker.set_status(run_id, "RUNNING")

    def finish(self, run_id: str, artifacts: Iterable[tuple[str, Path]],
               tags: Mapping[str, str] | None = None, status: RunStatus = FINISHED) -> None:
        """Uploads the artifacts that exist (``(folder, local file or directory)``), sets
        ``tags`` and closes the run."""
        self.tracker.log_artifacts(run_id, [(f, p) for f, p in artifacts if p.exists()])
        if tags:
            self.tracker.set_tags(run_id, tags)
        self.tracker.set_status(run_id, status)
        self._refresh(run_id)

    def stop(self, run_id: str, status: RunStatus) -> None:
        """Closes a run that did not finish (``KILLED`` when cut short, ``FAILED``)."""
        self.tracker.set_status(run_id, status)
        self._refresh(run_id)

    def _refresh(self, run_id: str) -> None:
        run = self.tracker.run(run_id)
        if not bad_identity(run.tags):
            self._children[run.tags[TRIAL_KEY]] = trial_run(run)


SUMMARY_ROLE = "summary"
SUMMARY_DECISION = "ablate.decision"
RUN_NAME = "mlflow.runName"


@dataclass(frozen=True)
class Summary:
    """One row of a study's table as a run of its own: a variant (or a confirmed
    configuration) over its seeds, with the statistics of its comparison."""

    name: str
    metrics: Mapping[str, float]
    tags: Mapping[str, str]


def write_summaries(tracker: Tracker, study: str, summaries: Sequence[Summary]) -> list[str]:
    """Writes one summary run per row, children of the study's run beside its trials (tag
    ``ablate.role=summary``), found again by name and overwritten: a report written twice
    leaves one summary per row, with the latest values. Rows no longer in the table keep
    their runs, marked ``ablate.stale=true``.

    Returns:
        The summary runs' ids, in order.

    Raises:
        AblateError: The study has no experiment or no study run.
    """
    experiment = tracker.experiment(study)
    parents = parent_runs(tracker, experiment) if experiment is not None else []
    if experiment is None or not parents:
        raise AblateError(f"no study run of '{study}' to attach summaries to")
    parent = oldest(parents).run_id
    existing = {r.tags.get(VARIANT): r for r in tracker.runs(
        experiment.experiment_id, {ROLE: SUMMARY_ROLE, STUDY: study})}
    ids = []
    for summary in summaries:
        run = existing.pop(summary.name, None)
        if run is None:
            run = tracker.create_run(experiment.experiment_id, f"summary: {summary.name}", {
                PARENT_RUN: parent, ROLE: SUMMARY_ROLE, STUDY: study, VARIANT: summary.name})
        tracker.log(run.run_id, metrics=[Point(k, float(v), 0)
                                         for k, v in summary.metrics.items()
                                         if v is not None and math.isfinite(v)])
        # The UI lists a run by its name first: the row's decision goes there too.
        label = summary.tags.get(SUMMARY_DECISION)
        tracker.set_tags(run.run_id, {**summary.tags, "ablate.stale": "false",
                                      RUN_NAME: f"{summary.name}: {label}" if label
                                      else summary.name})
        if run.status != FINISHED:
            tracker.set_status(run.run_id, FINISHED)
        ids.append(run.run_id)
    for run in existing.values():
        tracker.set_tags(run.run_id, {"ablate.stale": "true"})
    return ids
