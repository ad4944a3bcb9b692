"""What a report says, as plain frozen data: built by :mod:`ablate.report.build`, turned into
files by :mod:`ablate.report.render`, written and logged by :mod:`ablate.report.publish`.

Nothing here reads or writes anything: a :class:`Report` is the same whichever format shows it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ablate.stats.decide import Looks, Rule

if TYPE_CHECKING:
    from ablate.metrics import Curves
    from ablate.report.collect import MissingTrial
    from ablate.report.convergence import Convergence, RankAgreement
    from ablate.report.search import ConfigRow, ConfirmedRow
    from ablate.report.table import VariantRow
    from ablate.tracking.runs import TrialRun


@dataclass(frozen=True)
class SeedPoints:
    """Per-seed final results of each group (variant or configuration), a panel per metric.

    Attributes:
        groups: ``(label, {metric: {seed: value}})`` in display order.
        metrics: The metrics that get a panel.
    """

    groups: tuple[tuple[str, dict[str, dict[int, float]]], ...]
    metrics: tuple[str, ...]


@dataclass(frozen=True)
class LearningCurves:
    """``{label: {epoch: mean value}}`` of one metric, a line per group."""

    curves: dict[str, dict[int, float]]
    metric: str


@dataclass(frozen=True)
class ImportanceBars:
    """Parameter importances, most important first."""

    importances: dict[str, float]


@dataclass(frozen=True)
class RocPr:
    """One run's frame-level ROC and precision–recall curves, with their areas."""

    curves: Curves
    auc: float
    ap: float
    title: str


PlotData = SeedPoints | LearningCurves | ImportanceBars | RocPr


@dataclass(frozen=True)
class Figure:
    """One plot: a file stem, a heading, a caption and what it draws."""

    name: str
    title: str
    caption: str
    data: PlotData


@dataclass(frozen=True)
class DiagnosticRow:
    """Mean final diagnostics of one variant over its seeds: CLAV's gate on abnormal and normal
    test snippets, CoMo's attention entropy and temperature per relation (NaN when absent)."""

    variant: str
    n: int
    values: dict[str, float]
    convergence: Convergence | None = None


@dataclass(frozen=True)
class Report:
    """Everything a report says about one study; see :func:`ablate.report.build.build_report`.

    Attributes:
        study: The study name.
        tracking_uri: The MLflow store it was read from.
        parent_run_id: The study's MLflow run (where the report is logged).
        spec_hash: The spec's hash, when MLflow has it.
        design: ``leave_one_out``, ``grid``, ``search (optuna)``, ...
        dataset: The dataset's path, when known.
        metric: The study's metric (ranks rows and configurations).
        mode: ``max`` or ``min``.
        base: The base variant the deltas compare to; None without one.
        is_search: A search study (configurations) rather than an ablation (variants).
        rows: The ablation table, ranked.
        planned: Trials the study plans; None when unknown.
        finished: Trials with a finished run.
        missing: Planned trials without a finished run.
        best: The finished run with the best final metric.
        seed: RNG seed of the fANOVA forest.
        rule: How comparisons with the base are decided.
        looks: When the study looked at its seeds, and what each look spent of alpha.
        adaptive: The study added seeds where comparisons were undecided.
        configs: A search's best configurations.
        search_params: A search's parameters.
        importances: A search's parameter importances, most important first.
        search_trials: A search's finished trials.
        importance_epoch: The common budget the importances compare at.
        stopped_early: Search trials the scheduler stopped before the longest ones.
        test_tuned: Selection used a test metric (the spec said ``select_on_test``).
        diagnostics: Per-variant gate, attention and convergence diagnostics.
        agreement: Kendall's tau between the variants' validation and test means.
        confirmed: A search's best configurations run again on fresh seeds (``confirm``).
        figures: The plots, in display order.
        notes: Things the reader should know, most important first.
        generated: When the report was built (UTC).
    """

    study: str
    tracking_uri: str
    parent_run_id: str
    spec_hash: str | None
    design: str | None
    dataset: str | None
    metric: str
    mode: str
    base: str | None
    is_search: bool
    rows: tuple[VariantRow, ...]
    planned: int | None
    finished: int
    missing: tuple[MissingTrial, ...]
    best: TrialRun | None
    seed: int
    rule: Rule = field(default_factory=Rule)
    looks: Looks | None = None
    adaptive: bool = False
    configs: tuple[ConfigRow, ...] = ()
    search_params: tuple[str, ...] = ()
    importances: dict[str, float] = field(default_factory=dict)
    search_trials: tuple[TrialRun, ...] = ()
    importance_epoch: int | None = None
    stopped_early: int = 0
    test_tuned: bool = False
    diagnostics: tuple[DiagnosticRow, ...] = ()
    agreement: RankAgreement | None = None
    confirmed: tuple[ConfirmedRow, ...] = ()
    figures: tuple[Figure, ...] = ()
    notes: tuple[str, ...] = ()
    generated: str = ""

    @property
    def complete(self) -> bool:
        return not self.missing and (self.planned is None or self.finished >= self.planned)

    @property
    def comparisons(self) -> int:
        """The comparisons with the base the table decides."""
        return sum(1 for r in self.rows if r.comparison is not None)
