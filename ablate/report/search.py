"""A search study's report: its best configurations and the importance of each parameter.

Trials of one configuration differ only in the seed (Ray Tune's ``Repeater`` gives every sampled
point each seed), so configurations are the distinct values of the search-space parameters and
their seed results are summarised like a variant's. Importances are Optuna's fANOVA over an
in-memory Optuna study rebuilt from the finished trials: each trial's parameters (as MLflow holds
them) and its metric at a common budget (the last epoch every finished trial reached, so trials
an ASHA scheduler stopped early are compared with the others at equal training), with the
distributions of the spec's search space.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ablate.metrics import TABLE_METRICS
from ablate.report.table import Stat
from ablate.stats.paired import summarize
from ablate.tracking.runs import TrialRun

TOP_K = 5
MIN_TRIALS = 2
TOO_FEW_TRIALS = ("parameter importances need at least {need} finished trials with {metric}; "
                  "have {n}")
NO_SPACE = "parameter importances need the search space from study.json (pass --storage DIR)"
NO_VARIANCE = "parameter importances: every finished trial has the same {metric}"
OFF_SPACE = "{count} trial(s) have {param} outside the search space; left out of the importances"


@dataclass(frozen=True)
class ConfigRow:
    """One distinct configuration of a search, with its seed statistics.

    Attributes:
        rank: 1 for the best mean metric.
        params: The search parameters' values, as MLflow holds them.
        seeds: Seeds with a finished run.
        stats: ``{metric: Stat}`` for :data:`~ablate.report.table.TABLE_METRICS` and the study's
            metric.
        run_ids: The finished runs, by seed.
        keys: Their trial keys.
    """

    rank: int
    params: dict[str, str]
    seeds: tuple[int, ...]
    stats: dict[str, Stat]
    run_ids: dict[int, str]
    keys: tuple[str, ...]

    @property
    def n(self) -> int:
        return len(self.seeds)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rank": self.rank, "params": self.params, "n": self.n}
        for m, stat in self.stats.items():
            out[f"{m}_mean"] = stat.mean
            out[f"{m}_std"] = stat.std
        out["seeds"] = list(self.seeds)
        out["trials"] = list(self.keys)
        out["run_ids"] = {str(s): r for s, r in sorted(self.run_ids.items())}
        return out


def search_keys(finished: list[TrialRun], space: Mapping[str, Any]) -> list[str]:
    """The searched parameters: the spec's space, else the params that vary across trials."""
    if space:
        return list(space)
    keys = sorted({k for r in finished for k in r.params if k != "seed"})
    return [k for k in keys if len({r.params.get(k) for r in finished}) > 1]


def best_configs(finished: list[TrialRun], keys: list[str], metric: str, mode: str,
                 top_k: int = TOP_K) -> list[ConfigRow]:
    """The ``top_k`` distinct configurations by the mean of ``metric`` over their seeds."""
    groups: dict[tuple[str, ...], list[TrialRun]] = {}
    for run in finished:
        if metric in run.metrics:
            groups.setdefault(tuple(run.params.get(k, "-") for k in keys), []).append(run)
    metrics = tuple(dict.fromkeys((*TABLE_METRICS, metric)))
    rows = []
    for values, runs in groups.items():
        stats = {m: Stat(*summarize([r.metrics[m] for r in runs if m in r.metrics]))
                 for m in metrics}
        rows.append((values, runs, stats))
    sign = -1.0 if mode == "max" else 1.0
    rows.sort(key=lambda row: sign * row[2][metric].mean)
    return [ConfigRow(rank=i, params=dict(zip(keys, values, strict=True)),
                      seeds=tuple(sorted(r.seed for r in runs)), stats=stats,
                      run_ids={r.seed: r.run_id for r in runs},
                      keys=tuple(sorted(r.key for r in runs)))
            for i, (values, runs, stats) in enumerate(rows[:top_k], start=1)]


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _match_choice(text: str, choices: list[Any]) -> int | None:
    """Index of the choice whose value MLflow stored as ``text`` (``str`` of the config value)."""
    for i, choice in enumerate(choices):
        if str(choice) == text:
            return i
    try:
        parsed = _plain(ast.literal_eval(text))
    except (ValueError, SyntaxError):
        return None
    for i, choice in enumerate(choices):
        plain = _plain(choice)
        if parsed == plain or (isinstance(parsed, (int, float)) and isinstance(plain, str)
                               and _as_float(plain) == parsed):
            return i
    return None


def _as_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _distributions(space: Mapping[str, tuple[str, list[Any]]]) -> dict[str, Any]:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    out: dict[str, Any] = {}
    for key, (kind, args) in space.items():
        if kind == "values":
            out[key] = CategoricalDistribution([str(c) for c in args])
        elif kind == "int":
            out[key] = IntDistribution(int(args[0]), int(args[1]))
        else:
            out[key] = FloatDistribution(float(args[0]), float(args[1]),
                                         log=kind == "loguniform")
    return out


def _trial_params(run: TrialRun, space: Mapping[str, tuple[str, list[Any]]],
                  off: dict[str, int]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for key, (kind, args) in space.items():
        text = run.params.get(key)
        if text is None:  # an option of a switched-off component is not in the config
            continue
        if kind == "values":
            index = _match_choice(text, args)
            value: Any = str(args[index]) if index is not None else None
        else:
            number = _as_float(text)
            low, high = float(args[0]), float(args[1])
            ok = number is not None and low <= number <= high
            value = (int(number) if kind == "int" else number) if ok else None
        if value is None:
            off[key] = off.get(key, 0) + 1
            continue
        params[key] = value
    return params


@dataclass(frozen=True)
class Budget:
    """The epoch at which trials are compared for importances, and each trial's value there.

    ASHA stops weak trials early: their final metric is from fewer epochs than a completed
    trial's, so comparing final values would partly measure when trials were stopped.
    """

    epoch: int | None  # None: no epoch every trial reached with the metric logged
    values: dict[str, float]  # run id -> the metric at ``epoch``
    stopped_early: int  # trials whose final epoch is below the longest one


def common_budget(histories: Mapping[str, dict[int, float]]) -> Budget:
    """The last epoch at which every trial logged the metric, and the values there.

    Args:
        histories: ``{run_id: {epoch: value}}`` of the finished trials.
    """
    if not histories:
        return Budget(None, {}, 0)
    finals = {r: max(h, default=0) for r, h in histories.items()}
    common = set.intersection(*(set(h) for h in histories.values()))
    longest = max(finals.values())
    stopped = sum(1 for f in finals.values() if f < longest)
    if not common:
        return Budget(None, {}, stopped)
    epoch = max(common)
    return Budget(epoch, {r: h[epoch] for r, h in histories.items()}, stopped)


def importances(finished: list[TrialRun], space: Mapping[str, tuple[str, list[Any]]],
                metric: str, mode: str, seed: int = 0,
                values: Mapping[str, float] | None = None) -> tuple[dict[str, float], list[str]]:
    """fANOVA importances of the search parameters for ``metric``, normalised to sum to 1.

    Args:
        finished: The finished trials.
        space: ``{param: (kind, args)}`` from the spec (``values``, ``uniform``,
            ``loguniform``, ``int``).
        metric: The study's metric.
        mode: ``max`` or ``min``.
        seed: Seed of the fANOVA forest.
        values: Each trial's objective by run id (the metric at a common budget); by default
            its final ``metric``.

    Returns:
        ``(importances, notes)``: importances most important first; empty when they cannot be
        computed, and then the notes say why.
    """
    if not space:
        return {}, [NO_SPACE]
    objective = (dict(values) if values is not None else
                 {r.run_id: r.metrics[metric] for r in finished if metric in r.metrics})
    scored = [r for r in finished if r.run_id in objective]
    if len(scored) < MIN_TRIALS:
        return {}, [TOO_FEW_TRIALS.format(need=MIN_TRIALS, metric=metric, n=len(scored))]
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions = _distributions(space)
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    off: dict[str, int] = {}
    for run in scored:
        params = _trial_params(run, space, off)
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions={k: distributions[k] for k in params},
            value=objective[run.run_id]))
    notes = [OFF_SPACE.format(count=n, param=k) for k, n in sorted(off.items())]
    try:
        result = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=seed))
    except RuntimeError:  # fANOVA: "zero total variance in all trees"
        return {}, [*notes, NO_VARIANCE.format(metric=metric)]
    except ValueError as exc:  # e.g. no parameter common to all trials
        return {}, [*notes, f"parameter importances: {exc}"]
    return {k: float(v) for k, v in result.items()}, notes


@dataclass(frozen=True)
class ConfirmedRow:
    """A configuration the search chose, run again on fresh seeds (the spec's ``confirm``).

    Attributes:
        variant: The configuration (``cfg-<hash>``).
        params: Its search parameters, as the tracking store holds them.
        search: The selection metric over the search's seeds.
        confirmed: ``{metric: Stat}`` over the confirmation's seeds: the selection metric and
            the test metrics.
        winner: The best confirmed mean of the selection metric.
    """

    variant: str
    params: dict[str, str]
    search: Stat
    confirmed: dict[str, Stat]
    winner: bool
    metric: str

    @property
    def gap(self) -> float | None:
        """Search score minus confirmed score of the selection metric: the winner's curse,
        measured (positive when the search's score was lucky)."""
        confirmed = self.confirmed[self.metric].mean
        if self.search.mean is None or confirmed is None:
            return None
        return self.search.mean - confirmed


def confirmed_configs(finished: list[TrialRun], keys: list[str], metric: str, mode: str,
                      searched: set[int], confirming: set[int]) -> list[ConfirmedRow]:
    """The confirmed configurations, best confirmed mean of ``metric`` first.

    Args:
        finished: The search's and the confirmation's finished trials.
        keys: The search parameters.
        metric: The selection metric.
        mode: ``max`` or ``min``.
        searched: The search's seeds.
        confirming: The confirmation's seeds.
    """
    by_variant: dict[str, list[TrialRun]] = {}
    for run in finished:
        by_variant.setdefault(run.variant, []).append(run)
    metrics = tuple(dict.fromkeys((metric, *TABLE_METRICS)))
    rows = []
    for variant, runs in by_variant.items():
        confirm = [r for r in runs if r.seed in confirming]
        if not confirm:
            continue
        search = [r.metrics[metric] for r in runs if r.seed in searched and metric in r.metrics]
        rows.append((variant, dict(confirm[0].params), Stat(*summarize(search)),
                     {m: Stat(*summarize([r.metrics[m] for r in confirm if m in r.metrics]))
                      for m in metrics}))
    sign = -1.0 if mode == "max" else 1.0
    rows.sort(key=lambda row: (row[3][metric].mean is None,
                               sign * (row[3][metric].mean or 0.0), row[0]))
    return [ConfirmedRow(variant, {k: params.get(k, "-") for k in keys}, search, confirmed,
                         winner=i == 0, metric=metric)
            for i, (variant, params, search, confirmed) in enumerate(rows)]
