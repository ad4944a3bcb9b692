"""The MLflow UI's first view of a study: its trials with the columns they are compared by.

The UI keeps the columns a user picked in the browser only; a new user sees no metric column.
What it can load from the tracking store is a *shared view*: an experiment tag
``mlflow.sharedViewState.KEY`` holding the view's state as JSON, opened with
``#/experiments/ID/runs?viewStateShareKey=KEY`` (the link the UI's own "Share" button makes).
The view lists the study's trials (not its parent run) sorted by the study's metric.
``ablate run`` writes one per study and ``ablate ui`` prints its link.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from ablate.metrics import TABLE_METRICS

VIEW_KEY = "ablate"
SUMMARY_VIEW_KEY = "ablate-summaries"
# The UI's GenAI / model-training switch (a browser setting, GenAI by default) decides whether an
# experiment opens on traces or on training runs, whatever its mlflow.experimentKind tag says;
# the link sets it.
WORKFLOW = "machine_learning"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
SUMMARY_VIEW_TAG = f"mlflow.sharedViewState.{SUMMARY_VIEW_KEY}"
TAG_COLUMNS = ("ablate.variant", "ablate.seed", "ablate.final_epoch", "ablate.stopped_early")
METRIC_COLUMNS = TABLE_METRICS
TRIALS_ONLY = "tags.`ablate.role` = 'trial'"
SUMMARIES_ONLY = "tags.`ablate.role` = 'summary' and tags.`ablate.stale` = 'false'"


def _column(group: str, name: str) -> str:
    return f"{group}.`{name}`"


def _state(search: str, order_by: str, ascending: bool, columns: list[str]) -> str:
    state = {
        # search facets (what the URL would carry)
        "searchFilter": search, "orderByKey": order_by, "orderByAsc": ascending,
        "startTime": "ALL", "lifecycleFilter": "Active", "modelVersionFilter": "All Runs",
        "datasetsFilter": [],
        # UI state
        "selectedColumns": columns, "runListHidden": False, "viewMaximized": False,
    }
    return json.dumps(state, sort_keys=True)


def view_state(metric: str, mode: str, params: Iterable[str] = ()) -> str:
    """The shared view of a study's trials, as the JSON the UI reads.

    Args:
        metric: The study's metric: the runs are sorted by it.
        mode: ``max`` sorts the best first for a higher-is-better metric.
        params: Parameters worth a column (a search's sampled ones).
    """
    metrics = dict.fromkeys((metric, *METRIC_COLUMNS))
    columns = ([_column("metrics", m) for m in metrics]
               + [_column("tags", t) for t in TAG_COLUMNS]
               + [_column("params", p) for p in params])
    return _state(TRIALS_ONLY, _column("metrics", metric), mode != "max", columns)


def summary_view_state(metrics: Iterable[str], tags: Iterable[str], order_by: str) -> str:
    """The shared view of a study's summary runs (one per variant: the ablation table), sorted
    by ``order_by``, highest first."""
    columns = ([_column("tags", t) for t in tags]
               + [_column("metrics", m) for m in metrics])
    return _state(SUMMARIES_ONLY, _column("metrics", order_by), False, columns)


def view_url(base: str, experiment_id: str, key: str = VIEW_KEY) -> str:
    """The link that opens a study's shared view on the UI at ``base`` (http://host:port)."""
    return (f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType="
            f"{WORKFLOW}&viewStateShareKey={key}")
