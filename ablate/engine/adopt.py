"""Exactly once, whatever Ray remembers: what this run of a study hands to Ray Tune.

MLflow is the record of which trials ran; Ray's experiment state is a cache of how far each got.
When Tune can restore its experiment, it does (finished trials are kept, the rest continue).
When it cannot (``tune/`` deleted, ``tuner.pkl`` or the experiment state truncated, another
``--storage``, the study directory moved away), or need not (the study finished last time: its
Tune state is never unpickled again), the plan decides instead of Ray (runs trained on other
data than the store holds now were refused before, :mod:`ablate.engine.samedata`):

- a planned trial with a FINISHED run is adopted: not run again;
- a trial whose run has logged epochs continues from a checkpoint of the same identity if one
  covers them (Tune's trial directories outlive a corrupt experiment state); with no such
  checkpoint the study is refused, naming the runs: training it again into the same run would
  log its early epochs twice;
- the others start; a run created before any epoch was logged is reused.

A search has no plan of trials to adopt: its sampler's state lives in Ray's experiment, so a
search whose Ray state is gone while MLflow holds trials of it is refused. A finished search
whose every sampled trial has a finished run is adopted whole.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ablate.engine.tunestate import TuneState, checkpoints_of, tune_state
from ablate.errors import AblateError
from ablate.tracking.runs import TrialRun, logged_epochs

if TYPE_CHECKING:
    from ablate.study.plan import Plan
    from ablate.tracking.store import Tracker

LOST_SEARCH = ("study '{study}': Ray's state under {path} is {state}, and a search cannot "
               "continue without it (its sampler lives there) while MLflow holds {n} of its "
               "trials; restore that directory, or run the spec as a new study with --name "
               "NEW_NAME")
LOST_CHECKPOINTS = ("study '{study}': Ray's state under {path} is {state}, and {n} unfinished "
                    "trial(s) logged epochs that no checkpoint covers: {trials}; delete their "
                    "MLflow runs (mlflow runs delete --run-id ID) to train them again from "
                    "scratch, or run the spec as a new study with --name NEW_NAME")
ADOPTED = ("Ray's state under {path} is {state}: {adopted} finished trial(s) adopted from "
           "MLflow, {todo}")
STATE_WORDS = {TuneState.NONE: "gone", TuneState.CORRUPT: "unreadable"}


@dataclass(frozen=True)
class Attempt:
    """What Tune is given: a restore of its experiment, or a fresh start.

    Attributes:
        restore: Tune restores its experiment (``Tuner.restore``).
        keys: For a fresh ablation, the planned trials without a finished run, in plan order;
            None for a restore or a fresh search.
        note: What the user should know (trials adopted while Ray's state was lost).
    """

    restore: bool
    keys: tuple[str, ...] | None = None
    note: str = ""


def plan_attempt(plan: Plan, runs: Mapping[str, TrialRun], state: TuneState, tune_path: str,
                 tracker: Tracker, keys: Sequence[str] | None) -> Attempt:
    """Decides what Tune is given (see the module docstring).

    Args:
        plan: The study plan (its trials, and to match checkpoints to trials).
        runs: The study's trial runs, by trial key.
        state: What Tune left under ``tune_path`` (``FINISHED``: not read, since the study
            finished last time; the stage is adopted whole if its runs agree).
        tune_path: The study's Tune directory.
        tracker: The tracking store (to read what unfinished runs logged).
        keys: The planned trials of the stage (None: a search, whose trials Tune samples).

    Raises:
        AblateError: Ray's state is lost and some trial cannot be continued exactly once.
    """
    if state is TuneState.FINISHED:
        if _all_finished(plan, runs, keys):
            return Attempt(restore=False, keys=())  # adopted whole: Tune's state is not read
        state = tune_state(tune_path)  # not finished after all (its runs say): as any resume
    if state is TuneState.RESTORABLE:
        return Attempt(restore=True)
    planned = None if keys is None else list(keys)
    words = {"study": plan.spec.name, "path": tune_path, "state": STATE_WORDS[state]}
    if planned is None:
        if runs:
            raise AblateError(LOST_SEARCH.format(n=len(runs), **words))
        return Attempt(restore=False)
    lost = []
    for key in planned:
        run = runs.get(key)
        if run is None or run.finished:
            continue
        logged = max(logged_epochs(tracker, run.run_id), default=0)
        newest = max((epochs for epochs, _ in checkpoints_of(tune_path, key, plan)), default=0)
        if logged > newest:
            lost.append(f"{key} (run {run.run_id}, {logged} epoch(s) logged)")
    if lost:
        raise AblateError(LOST_CHECKPOINTS.format(n=len(lost), trials=", ".join(lost), **words))
    todo = tuple(k for k in planned if k not in runs or not runs[k].finished)
    rest = (f"{len(todo)} to run (from their checkpoints where they have some)" if todo
            else "nothing to run")
    note = ADOPTED.format(adopted=len(planned) - len(todo), todo=rest, **words)
    return Attempt(restore=False, keys=todo,
                   note=note if any(k in runs for k in planned) else "")


def _all_finished(plan: Plan, runs: Mapping[str, TrialRun], keys: Sequence[str] | None) -> bool:
    """Whether every trial of the stage has a finished run: each planned one, or a search's
    samples x seeds (on the search's seeds; a confirmation's are fresh ones)."""
    if keys is not None:
        return all(k in runs and runs[k].finished for k in keys)
    return sum(r.finished and r.seed in plan.spec.seeds for r in runs.values()) >= plan.total
