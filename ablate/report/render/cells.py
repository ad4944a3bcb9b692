"""The text every format shows: table cells, the status line and the table legend.

Tables show metrics in percent (as the field's papers do: "AUC 86.1") and differences in
percentage points; ``ablation.json`` keeps the raw values in [0, 1].
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ablate.metrics import METRIC_LABELS, TABLE_METRICS
from ablate.report.table import Delta, Stat

if TYPE_CHECKING:
    from ablate.report.model import DiagnosticRow, Report
    from ablate.report.table import VariantRow
    from ablate.stats.decide import Comparison

DASH = "–"
BASE_CELL = "(base)"
Table = tuple[list[str], list[list[str]]]  # header, rows of text cells
DECISION_COLUMNS = ("p", "p (Holm)", "d_z [CI]", "wins", "decision")
DIAGNOSTIC_HEADER = ["variant", "n", "gate abnormal", "gate normal", "interrelation entropy",
                     "interrelation τ", "context entropy", "motion entropy",
                     "val AUC gain, last ¼ (points)", "converged"]


def _column_metrics(report: Report) -> list[str]:
    """The metrics of the ablation table's column groups: the table's, then the decision
    metric if it is not one of them."""
    return list(dict.fromkeys((*TABLE_METRICS, report.rule.metric)))


def ablation_header(report: Report) -> list[str]:
    """"#", "variant", "n", then per metric its mean ± std and Δ [CI], and after the decision
    metric's the decision columns."""
    confidence = f"{100 * report.rule.confidence:g}%"
    header = ["#", "variant", "n"]
    for m in _column_metrics(report):
        label = METRIC_LABELS.get(m, m)
        header += [f"{label} (%)", f"Δ{label} [{confidence} CI]"]
        if m == report.rule.metric:
            header += list(DECISION_COLUMNS)
    return header


def wrapping_columns(header: list[str]) -> frozenset[int]:
    """Columns whose cells hold a value and its interval (may break over two lines)."""
    return frozenset(i for i, h in enumerate(header) if h.startswith(("Δ", "d_z")))


def pct(value: float | None) -> str:
    return DASH if value is None else f"{100 * value:.2f}"


def mean_std(stat: Stat) -> str:
    """``85.12 ± 0.31``; the mean alone for one seed; a dash for none."""
    if stat.mean is None:
        return DASH
    if stat.std is None:
        return pct(stat.mean)
    return f"{pct(stat.mean)} ± {pct(stat.std)}"


def short_value(text: str) -> str:
    """A parameter value for a table: floats to 4 significant digits (``0.002790``), the rest
    as is; the JSON keeps the full value."""
    try:
        number = float(text)
    except ValueError:
        return text
    if number.is_integer() and "." not in text and "e" not in text.lower():
        return text
    return f"{number:.4g}"


def signed(value: float) -> str:
    return f"{100 * value:+.2f}"


def delta_cell(delta: Delta | None, row_n: int) -> str:
    """``+1.23 [0.50, 2.10]`` in percentage points; the pair count when it differs from n."""
    if delta is None or delta.mean is None:
        return DASH
    text = signed(delta.mean)
    if delta.interval is not None:
        text += f" [{signed(delta.interval[0])}, {signed(delta.interval[1])}]"
    if delta.n != row_n:
        text += f" ({delta.n} pairs)"
    return text


def p_cell(p: float | None) -> str:
    if p is None:
        return DASH
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def effect_cell(c: Comparison) -> str:
    """``-2.10 [-3.40, -0.75]``: d_z and its interval."""
    if c.d_z is None:
        return DASH
    text = f"{c.d_z:+.2f}"
    if c.d_z_interval is not None:
        text += f" [{c.d_z_interval[0]:+.2f}, {c.d_z_interval[1]:+.2f}]"
    return text


def decision_cell(c: Comparison, adaptive: bool) -> str:
    """``worse``, ``worse at 12`` (adaptive seeds), ``undecided (~21 seeds)``."""
    if c.decision != "undecided":
        return f"{c.decision} at {c.decided_at}" if adaptive else c.decision
    return f"undecided (~{c.needed} seeds)" if c.needed else "undecided"


def _comparison_cells(c: Comparison | None, is_base: bool, adaptive: bool) -> list[str]:
    if c is None or not c.n:
        return [DASH] * len(DECISION_COLUMNS)
    wins = DASH if c.wins is None else f"{round(c.wins * c.n)}/{c.n}"
    return [p_cell(c.p), p_cell(c.p_holm), effect_cell(c), wins, decision_cell(c, adaptive)]


def row_cells(row: VariantRow, report: Report) -> list[str]:
    """Text cells of one ablation row (percent; the base's deltas read "(base)")."""
    cells = [str(row.rank) if row.rank is not None else DASH, row.variant, str(row.n)]
    for m in _column_metrics(report):
        cells.append(mean_std(row.stats[m]))
        if row.is_base:
            cells.append(BASE_CELL)
        elif m in row.deltas:
            cells.append(delta_cell(row.deltas[m], row.n))
        else:  # the decision metric outside the table's: its comparison holds the delta
            c = row.comparison
            cells.append(DASH if c is None else delta_cell(Delta(c.n, c.mean, c.interval),
                                                          row.n))
        if m == report.rule.metric:
            cells += _comparison_cells(row.comparison, row.is_base, report.adaptive)
    return cells


def ablation_cells(report: Report) -> Table:
    """Header and text cells of the ablation table."""
    return ablation_header(report), [row_cells(r, report) for r in report.rows]


def shown_metrics(report: Report) -> list[str]:
    """A search's metric columns: what it selected on (validation, unless the spec selected on
    test), then the test metrics it reports."""
    test = list(TABLE_METRICS)
    return test if report.metric in test else [report.metric, *test]


def config_cells(report: Report) -> Table:
    """Header and text cells of a search's best-configurations table."""
    shown = shown_metrics(report)
    header = ["#", *report.search_params, "n", *(f"{METRIC_LABELS[m]} (%)" for m in shown)]
    rows = [[str(c.rank), *(short_value(c.params[k]) for k in report.search_params), str(c.n),
             *(mean_std(c.stats[m]) for m in shown)] for c in report.configs]
    return header, rows


def confirmed_cells(report: Report) -> Table:
    """Header and text cells of a search's confirmed configurations: the search's score, the
    confirmed scores on fresh seeds and the gap between them (the winner's curse)."""
    m, label = report.metric, METRIC_LABELS.get(report.metric, report.metric)
    header = ["configuration", *report.search_params, f"search {label} (%)",
              f"confirmed {label} (%)", "gap (points)",
              *(f"confirmed {METRIC_LABELS[t]} (%)" for t in TABLE_METRICS), "n", "winner"]
    rows = [[r.variant, *(short_value(r.params.get(k, DASH)) for k in report.search_params),
             mean_std(r.search), mean_std(r.confirmed[m]),
             DASH if r.gap is None else signed(r.gap),
             *(mean_std(r.confirmed[t]) for t in TABLE_METRICS), str(r.confirmed[m].n),
             "yes" if r.winner else ""] for r in report.confirmed]
    return header, rows


def trial_cells(report: Report) -> Table:
    """Header and text cells of a search's trials, best first by the study's metric."""
    sign = -1.0 if report.mode == "max" else 1.0
    ranked = sorted(report.search_trials,
                    key=lambda r: sign * r.metrics.get(report.metric, -sign * float("inf")))
    shown = shown_metrics(report)
    header = ["#", "trial", "epochs", *report.search_params,
              *(f"{METRIC_LABELS[m]} (%)" for m in shown)]
    rows = []
    for i, run in enumerate(ranked, start=1):
        epochs = DASH if run.final_epoch is None else str(run.final_epoch)
        if run.stopped_early:
            epochs += " (stopped)"
        rows.append([str(i), run.key, epochs,
                     *(short_value(run.params.get(k, DASH)) for k in report.search_params),
                     *(pct(run.metrics.get(m)) for m in shown)])
    return header, rows


def diagnostic_cells(report: Report) -> Table:
    """CLAV's mean gate on abnormal vs normal test snippets (class-dependent when the first is
    higher), CoMo's attention entropy (1 = uniform) and temperature, and whether validation had
    stopped rising (:mod:`ablate.report.convergence`), per variant."""

    def cell(value: float) -> str:
        return DASH if math.isnan(value) else f"{value:.3f}"

    def converged(d: DiagnosticRow) -> list[str]:
        c = d.convergence
        if c is None or c.gain is None:
            return [DASH, DASH]
        return [signed(c.gain), "yes" if c.converged else "NO"]

    rows = [[d.variant, str(d.n), *(cell(v) for v in d.values.values()), *converged(d)]
            for d in report.diagnostics]
    return DIAGNOSTIC_HEADER, rows


def agreement_line(report: Report) -> str | None:
    """Kendall's tau between the variants' validation and test means, in words."""
    return report.agreement.describe() if report.agreement else None


def importance_cells(report: Report) -> list[list[str]]:
    """``[parameter, importance]`` rows, most important first."""
    return [[k, f"{v:.3f}"] for k, v in report.importances.items()]


SPLIT = " (split over the looks that can decide)"


def legend(report: Report) -> str:
    """What the ablation table's numbers are and how the deltas and decisions were made."""
    base = f"'{report.base}'" if report.base else "the base (none found)"
    rule = report.rule
    label = METRIC_LABELS.get(rule.metric, rule.metric)
    return (f"Mean ± sample std over seeds of the final metric, in percent; n = seeds "
            f"finished. Δ: mean paired difference to {base} over shared seeds, in percentage "
            f"points, with a {100 * rule.confidence:g}% Student's t interval. For {label}: p, "
            f"the exact two-sided paired sign-flip test; p (Holm), adjusted across the "
            f"table's {report.comparisons} comparisons; d_z, the mean difference over the "
            f"std of the differences, with its noncentral-t interval; wins, the seeds on which "
            f"the variant beat the base. Decision: better or worse when p (Holm) is within "
            f"alpha = {rule.alpha:g}{SPLIT if report.adaptive else ''}; "
            f"equivalent when the paired TOST shows |Δ| < delta = {100 * rule.delta:g} points "
            f"(Holm-adjusted); else undecided, with the seeds a power calculation (80 %) from "
            f"the observed variance says would decide it. Ranked by mean "
            f"{METRIC_LABELS.get(report.metric, report.metric)} "
            f"({'higher' if report.mode == 'max' else 'lower'} is better).")


def status_line(report: Report) -> str:
    """``4/9 trials finished; missing 5: key (state), ...``."""
    planned = "?" if report.planned is None else str(report.planned)
    line = f"{report.finished}/{planned} trials finished"
    if report.missing:
        line += f"; missing {len(report.missing)}: " + ", ".join(
            f"{m.key} ({m.state})" for m in report.missing)
    return line

