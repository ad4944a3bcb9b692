"""Exactly once, whatever Ray remembers: what this run of a study hands to Ray Tune.

MLflow is the record of which trials ran; Ray's experiment state is a cache of how far each got.
When Tune can restore its experiment, it does (finished trials are kept, the rest continue).
When it cannot (``tune/`` deleted or truncated, another ``--storage``, the study directory
moved away), the plan decides instead of Ray:

- a planned trial with a FINISHED run is adopted: not run again;
- a trial whose run has logged epochs continues from a checkpoint of the same identity if one
  covers them (Tune's trial directories outlive a corrupt experiment state); with no such
  checkpoint the study is refused, naming the runs: training it again into the same run would
  log its early epochs twice;
- the others start; a run created before any epoch was logged is reused.

A search has no plan of trials to adopt: its sampler's state lives in Ray's experiment, so a
search whose Ray state is gone while MLflow holds trials of it is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ablate.errors import AblateError
from ablate.study.tunestate import TuneState, checkpoints_of

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from ablate.study.plan import Plan

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


def logged_epochs(client: MlflowClient, run: Any) -> int:
    """The last epoch a run logged (0 for none)."""
    from ablate.study.tracking import STEP_METRIC

    return max((m.step for m in client.get_metric_history(run.info.run_id, STEP_METRIC)),
               default=0)


def plan_attempt(plan: Plan, runs: dict[str, Any], state: TuneState, tune_path: str,
                 client: MlflowClient) -> Attempt:
    """Decides what Tune is given (see the module docstring).

    Args:
        plan: The study plan (its trials, and to match checkpoints to trials).
        runs: The study's trial runs in MLflow, by trial key.
        state: What Tune left under ``tune_path``.
        tune_path: The study's Tune directory.
        client: The MLflow client (to read what unfinished runs logged).

    Raises:
        AblateError: Ray's state is lost and some trial cannot be continued exactly once.
    """
    if state is TuneState.RESTORABLE:
        return Attempt(restore=True)
    planned = None if plan.spec.search is not None else plan.keys
    words = {"study": plan.spec.name, "path": tune_path, "state": STATE_WORDS[state]}
    if planned is None:
        if runs:
            raise AblateError(LOST_SEARCH.format(n=len(runs), **words))
        return Attempt(restore=False)
    lost = []
    for key in planned:
        run = runs.get(key)
        if run is None or run.info.status == "FINISHED":
            continue
        logged = logged_epochs(client, run)
        newest = max((epochs for epochs, _ in checkpoints_of(tune_path, key, plan)), default=0)
        if logged > newest:
            lost.append(f"{key} (run {run.info.run_id}, {logged} epoch(s) logged)")
    if lost:
        raise AblateError(LOST_CHECKPOINTS.format(n=len(lost), trials=", ".join(lost), **words))
    todo = tuple(k for k in planned
                 if k not in runs or runs[k].info.status != "FINISHED")
    rest = (f"{len(todo)} to run (from their checkpoints where they have some)" if todo
            else "nothing to run")
    note = ADOPTED.format(adopted=len(planned) - len(todo), todo=rest, **words)
    return Attempt(restore=False, keys=todo,
                   note=note if any(k in runs for k in planned) else "")
