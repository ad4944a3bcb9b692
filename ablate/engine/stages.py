"""A study's stages: the Tune experiments it runs one after another.

An ablation with fixed seeds, or a search without a confirmation, is one stage (Tune's
experiment in ``tune/``). Adaptive seeds run one stage per round; a search with ``confirm`` runs
its best configurations on fresh seeds as a second stage. Each stage after the first depends on
the results of those before it (which comparisons are still undecided, which configurations won
the search), so it is derived once, when the stage before it finished, and pinned in
``stages.json`` before any of its trials starts: a study interrupted anywhere resumes with the
stages an uninterrupted run would have had, and each stage has its own Tune experiment
(``tune-round-2/``, ``tune-confirm/``), restored or adopted like the first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ablate.errors import AblateError, ConfigError
from ablate.study.identity import TRIAL_INDEX
from ablate.study.plan import Plan
from ablate.study.record import StageRecord
from ablate.study.storage import TUNE_DIR, StudyDir
from ablate.tracking.runs import TrialRun

DAMAGED = ("study '{name}': {problem} ({path}); restore it from a backup, or run the study anew "
           "under another --name")


@dataclass(frozen=True)
class Stage:
    """One Tune experiment of a study.

    Attributes:
        name: What the progress lines call it.
        directory: Its Tune experiment, under the study directory.
        plan: The plan its Tune trials are looked up in (its own fused groups; a
            confirmation's trials).
        keys: The planned trials it runs; None for a search (Tune's searcher samples them).
    """

    name: str
    directory: str
    plan: Plan
    keys: tuple[str, ...] | None


def staged(plan: Plan) -> bool:
    """Whether the study runs in stages (recorded in ``stages.json``)."""
    return plan.spec.adaptive is not None or plan.spec.confirm is not None


class Stages:
    """The stages of one study: those pinned so far, and the next one when one finishes.

    Args:
        plan: The study's plan (a resumed fused study's with its recorded groups).
        study_dir: Where ``stages.json`` is kept.
    """

    def __init__(self, plan: Plan, study_dir: StudyDir) -> None:
        self.plan = plan
        self.study_dir = study_dir
        self.records: list[StageRecord] = list(study_dir.read_stages()) if staged(plan) else []
        # A study's first stage follows from its plan: pinned only once it runs (pin_first),
        # so that checks before the study writes anything can look at it.
        self._first_pinned = bool(self.records)
        if staged(plan) and not self.records:
            self.records.append(self._first())

    def pin_first(self) -> None:
        """Pins the first stage (a new staged study's ``stages.json``)."""
        if staged(self.plan) and not self._first_pinned:
            self._first_pinned = True
            self.study_dir.write_stages(tuple(self.records))

    @property
    def total(self) -> int:
        """The trials of every stage pinned so far (a search's: its samples x seeds)."""
        if not staged(self.plan):
            return self.plan.total
        return sum(self.plan.total if r.kind == "search" else len(r.trials)
                   for r in self.records)

    def pinned(self) -> list[Stage]:
        """The stages pinned so far, in order."""
        if not staged(self.plan):
            return [Stage("trials", TUNE_DIR, self.plan,
                          None if self.plan.spec.search is not None else tuple(self.plan.keys))]
        return [self._stage(r) for r in self.records]

    def after(self, stage: Stage, runs: Mapping[str, TrialRun],
              sampled: Sequence[Mapping[str, Any]]) -> Stage | None:
        """The stage after ``stage``, now that it finished: the one pinned next, or one derived
        now from the results (and pinned); None when the study is complete.

        Args:
            stage: The stage that finished.
            runs: The study's tracked trial runs, by key.
            sampled: A search stage's Tune configs (its sampled values).
        """
        stages = self.pinned()
        index = [s.directory for s in stages].index(stage.directory)
        if index + 1 < len(stages):
            return stages[index + 1]
        spec = self.plan.spec
        if spec.adaptive is not None:
            record = self._round(len(stages) + 1, runs)
        elif spec.confirm is not None and stage.keys is None:
            record = self._confirmation(runs, sampled)
        else:
            record = None
        if record is None:
            return None
        self._pin(record)
        return self._stage(record)

    # -- stages ------------------------------------------------------------------------------

    def _first(self) -> StageRecord:
        spec = self.plan.spec
        if spec.search is not None:
            return StageRecord("search", "search", TUNE_DIR)
        assert spec.adaptive is not None
        n = spec.adaptive.initial
        return self._round_record(1, n, [t.key for t in self.plan.trials if t.seed < n])

    def _round_record(self, number: int, seeds: int, keys: Sequence[str]) -> StageRecord:
        plan = self.plan.for_stage(keys)
        groups = ({name: tuple(t.key for t in members) for name, members in plan.groups.items()}
                  if plan.fused else None)
        return StageRecord("round", f"round {number} ({seeds} seeds)",
                           TUNE_DIR if number == 1 else f"{TUNE_DIR}-round-{number}",
                           tuple(keys), groups)

    def _round(self, number: int, runs: Mapping[str, TrialRun]) -> StageRecord | None:
        """The next round of adaptive seeds: ``step`` more seeds for every variant still
        undecided, and for the base; None when all are decided or ``max`` is reached."""
        from ablate.stats.decide import decide

        spec, plan = self.plan.spec, self.plan
        assert spec.adaptive is not None
        rule, rounds = spec.rule, spec.adaptive.rounds
        done = max(len(r.trials) and max(plan.trial({"trial_key": k}).seed for k in r.trials)
                   for r in self.records) + 1
        later = [n for n in rounds if n > done]
        if not later:
            return None
        values: dict[str, dict[int, float]] = {v.name: {} for v in plan.variants}
        for trial in plan.trials:
            run = runs.get(trial.key)
            if run is not None and run.finished and rule.metric in run.metrics:
                values[trial.variant][trial.seed] = run.metrics[rule.metric]
        looks = spec.adaptive.looks(len(plan.variants) - 1, rule.alpha)
        decided = decide(values, spec.base_name, rule, looks)
        undecided = [v for v, c in decided.items() if c.decision == "undecided"]
        if not undecided:
            return None
        extended = {spec.base_name, *undecided}
        keys = [t.key for t in plan.trials
                if t.variant in extended and done <= t.seed < later[0]]
        return self._round_record(number, later[0], keys)

    def _confirmation(self, runs: Mapping[str, TrialRun],
                      sampled: Sequence[Mapping[str, Any]]) -> StageRecord | None:
        """The search's ``top_k`` configurations by the mean of its metric over their seeds,
        to run on the confirmation's fresh seeds."""
        spec, plan = self.plan.spec, self.plan
        assert spec.confirm is not None
        configs: dict[str, dict[str, Any]] = {}
        for config in sampled:
            trial = plan.trial(config)
            configs.setdefault(trial.variant, {k: v for k, v in config.items()
                                               if k != TRIAL_INDEX})
        scores: dict[str, list[float]] = {}
        for run in runs.values():
            if run.finished and run.variant in configs and spec.metric in run.metrics:
                scores.setdefault(run.variant, []).append(run.metrics[spec.metric])
        sign = -1.0 if spec.mode == "max" else 1.0
        ranked = sorted(scores, key=lambda v: (sign * sum(scores[v]) / len(scores[v]), v))
        chosen = {v: configs[v] for v in ranked[:spec.confirm.top_k]}
        if not chosen:
            return None
        trials = plan.confirmation(chosen, spec.confirm.seeds).keys
        return StageRecord("confirm", "confirm", f"{TUNE_DIR}-confirm", tuple(trials),
                           configs=chosen)

    def _stage(self, record: StageRecord) -> Stage:
        try:
            if record.kind == "search":
                return Stage(record.name, record.directory, self.plan, None)
            if record.kind == "confirm":
                assert self.plan.spec.confirm is not None
                plan = self.plan.confirmation(record.configs, self.plan.spec.confirm.seeds)
            else:
                plan = self.plan.for_stage(record.trials, record.groups)
            missing = sorted(set(record.trials) - set(plan.keys))
            if missing:
                raise ConfigError(f"stage '{record.name}' lists trials the plan does not have: "
                                  f"{', '.join(missing[:3])}")
        except (ConfigError, KeyError) as exc:
            raise AblateError(DAMAGED.format(name=self.plan.spec.name, problem=exc,
                                             path=f"{self.study_dir.root}/stages.json")) from None
        return Stage(record.name, record.directory, plan, record.trials)

    def _pin(self, record: StageRecord) -> None:
        self.records.append(record)
        self.study_dir.write_stages(tuple(self.records))
