"""The text every format shows: table cells, the status line and the table legend.

Tables show metrics in percent (as the field's papers do: "AUC 86.1") and differences in
percentage points; ``ablation.json`` keeps the raw values in [0, 1].
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ablate.metrics import METRIC_LABELS, TABLE_METRICS
from ablate.report.table import Stat

if TYPE_CHECKING:
    from ablate.report.model import Report
    from ablate.report.stats import Delta
    from ablate.report.table import VariantRow

DASH = "–"
BASE_CELL = "(base)"
Table = tuple[list[str], list[list[str]]]  # header, rows of text cells

# "#", "variant", "n", then per table metric: mean ± std, delta [CI], p.
ABLATION_HEADER = ["#", "variant", "n"] + [
    cell for m in TABLE_METRICS
    for cell in (f"{METRIC_LABELS[m]} (%)", f"Δ{METRIC_LABELS[m]} [95% CI]", "p")]
DELTA_COLUMNS = frozenset(4 + 3 * i for i in range(len(TABLE_METRICS)))  # the Δ cells
DIAGNOSTIC_HEADER = ["variant", "n", "gate abnormal", "gate normal", "interrelation entropy",
                     "interrelation τ", "context entropy", "motion entropy"]


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
    if delta.ci is not None:
        text += f" [{signed(delta.ci[0])}, {signed(delta.ci[1])}]"
    if delta.n_pairs != row_n:
        text += f" ({delta.n_pairs} pairs)"
    return text


def p_cell(delta: Delta | None) -> str:
    if delta is None or delta.p is None:
        return DASH
    return "<0.001" if delta.p < 0.001 else f"{delta.p:.3f}"


def row_cells(row: VariantRow) -> list[str]:
    """Text cells of one ablation row (percent; the base's deltas read "(base)")."""
    cells = [str(row.rank) if row.rank is not None else DASH, row.variant, str(row.n)]
    for m in TABLE_METRICS:
        delta = row.deltas.get(m)
        cells.append(mean_std(row.stats[m]))
        if row.is_base:
            cells += [BASE_CELL, DASH]
        else:
            cells += [delta_cell(delta, row.n), p_cell(delta)]
    return cells


def ablation_cells(report: Report) -> Table:
    """Header and text cells of the ablation table."""
    return ABLATION_HEADER, [row_cells(r) for r in report.rows]


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
    higher) and CoMo's attention entropy (1 = uniform) and temperature, per variant."""

    def cell(value: float) -> str:
        return DASH if math.isnan(value) else f"{value:.3f}"

    rows = [[d.variant, str(d.n), *(cell(v) for v in d.values.values())]
            for d in report.diagnostics]
    return DIAGNOSTIC_HEADER, rows


def importance_cells(report: Report) -> list[list[str]]:
    """``[parameter, importance]`` rows, most important first."""
    return [[k, f"{v:.3f}"] for k, v in report.importances.items()]


def legend(report: Report) -> str:
    """What the ablation table's numbers are and how the deltas and p-values were computed."""
    base = f"'{report.base}'" if report.base else "the base (none found)"
    return (f"Mean ± sample std over seeds of the final test metric, in percent; n = seeds "
            f"finished. Δ: mean paired difference to {base} over shared seeds, in percentage "
            f"points, with a 95% percentile-bootstrap interval ({report.n_boot} resamples of the "
            f"seed pairs, seed {report.seed}); p: two-sided paired sign-flip permutation test. "
            f"Ranked by mean {METRIC_LABELS.get(report.metric, report.metric)} "
            f"({'higher' if report.mode == 'max' else 'lower'} is better).")


def status_line(report: Report) -> str:
    """``4/9 trials finished; missing 5: key (state), ...``."""
    planned = "?" if report.planned is None else str(report.planned)
    line = f"{report.finished}/{planned} trials finished"
    if report.missing:
        line += f"; missing {len(report.missing)}: " + ", ".join(
            f"{m.key} ({m.state})" for m in report.missing)
    return line

