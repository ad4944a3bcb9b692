"""Rendering a :class:`~ablate.report.build.Report` as Markdown, LaTeX, JSON and one HTML page.

Tables show metrics in percent (as the field's papers do: "AUC 86.1") and differences in
percentage points; ``ablation.json`` keeps the raw values in [0, 1]. ``index.html`` is
self-contained: inline CSS, figures as base64 PNG, no script and no external reference, so it
opens offline.
"""

from __future__ import annotations

import base64
import html as _html
import json
from typing import TYPE_CHECKING, Any

from ablate.metrics import METRIC_LABELS
from ablate.report.table import TABLE_METRICS, Stat

if TYPE_CHECKING:
    from ablate.report.build import Report
    from ablate.report.stats import Delta
    from ablate.report.table import VariantRow

DASH = "–"
BASE_CELL = "(base)"


# -- numbers ----------------------------------------------------------------------------------

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


ABLATION_HEADER = ["#", "variant", "n", "AUC (%)", "ΔAUC [95% CI]", "p", "AP (%)", "ΔAP [95% CI]",
                   "p"]
DELTA_COLUMNS = frozenset({4, 7})  # the ΔAUC and ΔAP cells of ABLATION_HEADER


def _legend(report: Report) -> str:
    base = f"'{report.base}'" if report.base else "the base (none found)"
    return (f"Mean ± sample std over seeds of the final test metric, in percent; n = seeds "
            f"finished. Δ: mean paired difference to {base} over shared seeds, in percentage "
            f"points, with a 95% percentile-bootstrap interval ({report.n_boot} resamples of the "
            f"seed pairs, seed {report.seed}); p: two-sided paired sign-flip permutation test. "
            f"Ranked by mean {METRIC_LABELS.get(report.metric, report.metric)} "
            f"({'higher' if report.mode == 'max' else 'lower'} is better).")


def _status_line(report: Report) -> str:
    planned = "?" if report.planned is None else str(report.planned)
    line = f"{report.finished}/{planned} trials finished"
    if report.missing:
        line += f"; missing {len(report.missing)}: " + ", ".join(
            f"{m.key} ({m.state})" for m in report.missing)
    return line


# -- Markdown ---------------------------------------------------------------------------------

def _md_table(header: list[str], rows: list[list[str]], align: list[str]) -> list[str]:
    def esc(cell: str) -> str:
        return cell.replace("|", "\\|")

    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join(":--" if a == "l" else "--:" for a in align) + "|"]
    out += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return out


def ablation_cells(report: Report) -> tuple[list[str], list[list[str]]]:
    """Header and text cells of the ablation table."""
    return ABLATION_HEADER, [row_cells(r) for r in report.rows]


def config_cells(report: Report) -> tuple[list[str], list[list[str]]]:
    """Header and text cells of a search's best-configurations table."""
    shown = _shown_metrics(report)
    header = ["#", *report.search_params, "n", *(f"{METRIC_LABELS[m]} (%)" for m in shown)]
    rows = [[str(c.rank), *(short_value(c.params[k]) for k in report.search_params), str(c.n),
             *(mean_std(c.stats[m]) for m in shown)] for c in report.configs]
    return header, rows


def _shown_metrics(report: Report) -> list[str]:
    """A search's metric columns: what it selected on (validation, unless the spec selected on
    test), then the test AUC and AP it reports."""
    test = ["auc", "ap"]
    return test if report.metric in test else [report.metric, *test]


def trial_cells(report: Report) -> tuple[list[str], list[list[str]]]:
    """Header and text cells of a search's trials, best first by the study's metric."""
    sign = -1.0 if report.mode == "max" else 1.0
    ranked = sorted(report.search_trials,
                    key=lambda r: sign * r.metrics.get(report.metric, -sign * float("inf")))
    shown = _shown_metrics(report)
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


DIAGNOSTIC_HEADER = ["variant", "n", "gate abnormal", "gate normal", "interrelation entropy",
                     "interrelation τ", "context entropy", "motion entropy"]


def diagnostic_cells(report: Report) -> tuple[list[str], list[list[str]]]:
    """CLAV's mean gate on abnormal vs normal test snippets (class-dependent when the first is
    higher) and CoMo's attention entropy (1 = uniform) and temperature, per variant."""
    import math

    def cell(value: float) -> str:
        return DASH if math.isnan(value) else f"{value:.3f}"

    rows = [[d.variant, str(d.n), *(cell(v) for v in d.values.values())]
            for d in report.diagnostics]
    return DIAGNOSTIC_HEADER, rows


def markdown(report: Report) -> str:
    """``ablation.md``: the table(s), the trial status and the notes."""
    kind = "Search" if report.is_search else "Ablation"
    lines = [f"# {kind} study `{report.study}`", "", _status_line(report), ""]
    if report.is_search:
        header, rows = config_cells(report)
        lines += [f"## Best configurations (by mean {report.metric})", ""]
        lines += _md_table(header, rows, ["r"] + ["l"] * len(report.search_params) +
                           ["r"] * (1 + len(_shown_metrics(report)))) if rows else [
            "No finished trials yet."]
        lines += ["", "## Parameter importances (fANOVA)", ""]
        if report.importances:
            lines += _md_table(["parameter", "importance"],
                               [[k, f"{v:.3f}"] for k, v in report.importances.items()],
                               ["l", "r"])
        else:
            lines.append("Not available (see notes).")
        header, rows = trial_cells(report)
        if rows:
            lines += ["", "## All trials", ""]
            lines += _md_table(header, rows, ["r", "l", "r"] + ["l"] * len(report.search_params)
                               + ["r"] * len(_shown_metrics(report)))
    else:
        lines += _md_table(ABLATION_HEADER, [row_cells(r) for r in report.rows],
                           ["r", "l", "r", "r", "r", "r", "r", "r", "r"])
        lines += ["", _legend(report)]
    header, rows = diagnostic_cells(report)
    if rows:
        lines += ["", "## Diagnostics (final epoch, mean over seeds)", ""]
        lines += _md_table(header, rows, ["l", "r"] + ["r"] * (len(header) - 2))
    if report.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report.notes]
    lines += ["", f"Generated by `ablate report {report.study}` on {report.generated} from "
                  f"{report.tracking_uri} (study run {report.parent_run_id}).", ""]
    return "\n".join(lines)


# -- LaTeX ------------------------------------------------------------------------------------

_TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                "^": r"\textasciicircum{}"}


def tex_escape(text: str) -> str:
    return "".join(_TEX_SPECIAL.get(ch, ch) for ch in text)


def _tex_cell(text: str) -> str:
    """A number cell: the dash and minus signs in math mode, ± as ``$\\pm$``."""
    text = text.replace(" ± ", r" $\pm$ ")
    if text == DASH:
        return "--"
    text = text.replace("<", r"$<$")
    return text.replace("-", "$-$").replace("+", "$+$")


def latex(report: Report) -> str:
    """``ablation.tex``: a booktabs table ready to ``\\input`` in a paper."""
    label = "".join(ch if ch.isalnum() else "-" for ch in report.study)
    lines = [f"% Generated by `ablate report {report.study}` on {report.generated}.",
             r"% Needs \usepackage{booktabs} in the preamble.",
             r"\begin{table}[t]", r"  \centering", r"  \small"]
    if report.is_search:
        header, rows = config_cells(report)
        caption = (f"Best configurations of the search \\texttt{{{tex_escape(report.study)}}}: "
                   f"mean $\\pm$ sample std over seeds of the final test metrics (\\%).")
        cols = "r" + "l" * len(report.search_params) + "rrr"
        head = ["\\#", *(f"\\texttt{{{tex_escape(k)}}}" for k in report.search_params),
                "$n$", "AUC (\\%)", "AP (\\%)"]
        body = [[r[0], *(tex_escape(c) for c in r[1:1 + len(report.search_params)]),
                 *(_tex_cell(c) for c in r[1 + len(report.search_params):])] for r in rows]
    else:
        base = tex_escape(report.base) if report.base else "the base"
        caption = (f"Ablation study \\texttt{{{tex_escape(report.study)}}}: mean $\\pm$ sample "
                   f"std over seeds of the final test AUC and AP (\\%). $\\Delta$: mean paired "
                   f"difference to \\texttt{{{base}}} over shared seeds (percentage points) with "
                   f"a 95\\% bootstrap interval; $p$: two-sided paired sign-flip permutation "
                   f"test.")
        cols = "rlrcccccc"
        head = ["\\#", "Variant", "$n$", "AUC (\\%)", "$\\Delta$AUC [95\\% CI]", "$p$",
                "AP (\\%)", "$\\Delta$AP [95\\% CI]", "$p$"]
        body = []
        for row in report.rows:
            cells = row_cells(row)
            body.append([_tex_cell(cells[0]), f"\\texttt{{{tex_escape(cells[1])}}}",
                         cells[2], *(c if c == BASE_CELL else _tex_cell(c) for c in cells[3:])])
    lines += [f"  \\caption{{{caption}}}", f"  \\label{{tab:{label}}}",
              f"  \\begin{{tabular}}{{{cols}}}", r"    \toprule",
              "    " + " & ".join(head) + r" \\", r"    \midrule"]
    lines += ["    " + " & ".join(cells) + r" \\" for cells in body]
    lines += [r"    \bottomrule", r"  \end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


# -- JSON -------------------------------------------------------------------------------------

def json_rows(report: Report) -> str:
    """``ablation.json``: one object per variant, in table order."""
    return json.dumps([row.to_json() for row in report.rows], indent=2) + "\n"


def json_search(report: Report) -> str:
    """``search.json``: a search's best configurations and parameter importances."""
    body: dict[str, Any] = {
        "metric": report.metric, "mode": report.mode, "params": report.search_params,
        "configs": [c.to_json() for c in report.configs],
        "importances": report.importances, "importance_epoch": report.importance_epoch,
        "finished": report.finished,
        "planned": report.planned}
    return json.dumps(body, indent=2) + "\n"


# -- HTML -------------------------------------------------------------------------------------

_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;
max-width:1300px;padding:0 1rem;color:#1d1d1f;background:#fff}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;
border-bottom:1px solid #ddd;padding-bottom:.2rem}
.meta{color:#555;font-size:.9rem}.meta code{font-size:.85rem}
table{border-collapse:collapse;margin:.6rem 0;font-variant-numeric:tabular-nums}
th,td{padding:.3rem .7rem;border-bottom:1px solid #e4e4e4;text-align:right;white-space:nowrap}
th{border-bottom:2px solid #333;background:#fafafa;white-space:normal}
.scroll{overflow-x:auto}td.name,th.name{text-align:left}
td.name{white-space:normal;overflow-wrap:anywhere;min-width:8rem}
td.wrap{white-space:normal;min-width:6.5rem}
tr.base td{background:#f2f6fc}tr.empty td{color:#999}
.status{padding:.6rem .9rem;border-radius:6px;margin:1rem 0}
.status.ok{background:#eaf7ee;border:1px solid #b7e1c1}
.status.partial{background:#fff6e5;border:1px solid #f0cf8c}
.legend,.caption{color:#555;font-size:.88rem;max-width:60rem}
figure{margin:1.2rem 0}figure img{max-width:100%;border:1px solid #eee}
ul.notes li{color:#7a4b00}
"""


def _esc(text: Any) -> str:
    return _html.escape(str(text), quote=True)


def _html_table(table_id: str, header: list[str], rows: list[tuple[list[str], str, str]],
                name_cols: set[int], wrap: frozenset[int] = frozenset()) -> list[str]:
    """``rows``: (cells, css class, data-key). ``name_cols`` are left-aligned text; ``wrap``
    columns may break their cells over two lines (a delta and its interval)."""

    def cls(i: int) -> str:
        names = [n for n, cols in (("name", name_cols), ("wrap", wrap)) if i in cols]
        return f' class="{" ".join(names)}"' if names else ""

    out = [f'<div class="scroll"><table id="{table_id}">', "<thead><tr>"]
    out += [f"<th{cls(i)}>{_esc(h)}</th>" for i, h in enumerate(header)]
    out.append("</tr></thead><tbody>")
    for cells, css, key in rows:
        attrs = (f' class="{css}"' if css else "") + f' data-key="{_esc(key)}"'
        tds = "".join(f"<td{cls(i)}>{_esc(c)}</td>" for i, c in enumerate(cells))
        out.append(f"<tr{attrs}>{tds}</tr>")
    out.append("</tbody></table></div>")
    return out


def html(report: Report) -> str:
    """``index.html``: tables, status, figures and notes in one offline page."""
    kind = "Search" if report.is_search else "Ablation"
    title = f"{kind} study {report.study}"
    meta = [f"tracking store <code>{_esc(report.tracking_uri)}</code>",
            f"study run <code>{_esc(report.parent_run_id)}</code>"]
    if report.spec_hash:
        meta.append(f"spec <code>{_esc(report.spec_hash)}</code>")
    if report.design:
        meta.append(f"design {_esc(report.design)}")
    if report.dataset:
        meta.append(f"dataset <code>{_esc(report.dataset)}</code>")
    body = [f"<h1>{_esc(title)}</h1>", f'<p class="meta">{" · ".join(meta)}</p>',
            f'<div id="status" class="status {"ok" if report.complete else "partial"}">'
            f"{_esc(_status_line(report))}</div>"]
    if report.missing:
        body.append("<h2>Missing trials</h2>")
        body += _html_table("missing", ["trial", "state", "run"],
                            [([m.key, m.state, m.run_id or DASH], "", m.key)
                             for m in report.missing], {0, 1, 2})
    if report.is_search:
        header, rows = config_cells(report)
        names = set(range(1, 1 + len(report.search_params)))
        body.append(f"<h2>Best configurations (by mean {_esc(report.metric)})</h2>")
        body += (_html_table("configs", header, [(r, "", r[0]) for r in rows], names)
                 if rows else ["<p>No finished trials yet.</p>"])
        body.append("<h2>Parameter importances (fANOVA)</h2>")
        body += (_html_table("importances", ["parameter", "importance"],
                             [([k, f"{v:.3f}"], "", k) for k, v in report.importances.items()],
                             {0}) if report.importances else
                 ["<p>Not available (see notes).</p>"])
    if report.is_search:
        header, rows = trial_cells(report)
        body.append("<h2>All trials</h2>")
        body += _html_table("trials", header, [(r, "", r[1]) for r in rows],
                            {1, *range(3, 3 + len(report.search_params))})
    else:
        body.append("<h2>Ablation table</h2>")
        body += _html_table(
            "ablation", ABLATION_HEADER,
            [(row_cells(r), "base" if r.is_base else ("empty" if not r.n else ""), r.variant)
             for r in report.rows], {1}, wrap=DELTA_COLUMNS)
        body.append(f'<p class="legend">{_esc(_legend(report))}</p>')
    header, rows = diagnostic_cells(report)
    if rows:
        body.append("<h2>Diagnostics (final epoch, mean over seeds)</h2>")
        body += _html_table("diagnostics", header, [(r, "", r[0]) for r in rows], {0})
    for figure in report.figures:
        data = base64.b64encode(figure.png).decode("ascii")
        body += [f'<h2>{_esc(figure.title)}</h2>', f'<figure id="fig-{_esc(figure.name)}">',
                 f'<img alt="{_esc(figure.title)}" src="data:image/png;base64,{data}">',
                 f'<figcaption class="caption">{_esc(figure.caption)}</figcaption></figure>']
    if report.notes:
        body.append("<h2>Notes</h2>")
        body.append('<ul class="notes">' + "".join(f"<li>{_esc(n)}</li>" for n in report.notes)
                    + "</ul>")
    body.append(f'<p class="meta">Generated by <code>ablate report {_esc(report.study)}</code> '
                f"on {_esc(report.generated)}; also in ablation.md, ablation.tex, "
                f"ablation.json.</p>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_esc(title)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")
