"""``index.html``: the whole report on one self-contained page.

Inline CSS, figures as base64 PNG data URIs, no script and no external reference, so it opens
offline: from a laptop, an artifact store or an e-mail.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ablate.report.render.cells import (
    DASH,
    ablation_header,
    agreement_line,
    config_cells,
    confirmed_cells,
    diagnostic_cells,
    importance_cells,
    legend,
    row_cells,
    status_line,
    trial_cells,
    wrapping_columns,
)

if TYPE_CHECKING:
    from ablate.report.model import Report

_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;
max-width:1300px;padding:0 1rem;color:#1d1d1f;background:#fff}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;
border-bottom:1px solid #ddd;padding-bottom:.2rem}
.meta{color:#555;font-size:.9rem}.meta code{font-size:.85rem}
table{border-collapse:collapse;margin:.6rem 0;font-variant-numeric:tabular-nums;font-size:.92rem}
th,td{padding:.3rem .45rem;border-bottom:1px solid #e4e4e4;text-align:right;white-space:nowrap}
th{border-bottom:2px solid #333;background:#fafafa;white-space:normal}
.scroll{overflow-x:auto}td.name,th.name{text-align:left}
td.name{white-space:normal;overflow-wrap:anywhere;min-width:8rem}
td.wrap{white-space:normal;min-width:5.5rem}
tr.base td{background:#f2f6fc}tr.empty td{color:#999}
.status{padding:.6rem .9rem;border-radius:6px;margin:1rem 0}
.status.ok{background:#eaf7ee;border:1px solid #b7e1c1}
.status.partial{background:#fff6e5;border:1px solid #f0cf8c}
.legend,.caption{color:#555;font-size:.88rem;max-width:60rem}
figure{margin:1.2rem 0}figure img{max-width:100%;border:1px solid #eee}
ul.notes li{color:#7a4b00}
"""


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _table(table_id: str, header: list[str], rows: list[tuple[list[str], str, str]],
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


def _meta(report: Report) -> str:
    meta = [f"tracking store <code>{_esc(report.tracking_uri)}</code>",
            f"study run <code>{_esc(report.parent_run_id)}</code>"]
    if report.spec_hash:
        meta.append(f"spec <code>{_esc(report.spec_hash)}</code>")
    if report.design:
        meta.append(f"design {_esc(report.design)}")
    if report.dataset:
        meta.append(f"dataset <code>{_esc(report.dataset)}</code>")
    return f'<p class="meta">{" · ".join(meta)}</p>'


def _search_sections(report: Report) -> list[str]:
    header, rows = config_cells(report)
    names = set(range(1, 1 + len(report.search_params)))
    body = [f"<h2>Best configurations (by mean {_esc(report.metric)})</h2>"]
    body += (_table("configs", header, [(r, "", r[0]) for r in rows], names)
             if rows else ["<p>No finished trials yet.</p>"])
    body.append("<h2>Parameter importances (fANOVA)</h2>")
    body += (_table("importances", ["parameter", "importance"],
                    [(r, "", r[0]) for r in importance_cells(report)], {0})
             if report.importances else ["<p>Not available (see notes).</p>"])
    header, rows = confirmed_cells(report)
    if rows:
        body.append(f"<h2>Confirmed on fresh seeds (winner by mean {_esc(report.metric)})</h2>")
        body += _table("confirmed", header, [(r, "", r[0]) for r in rows],
                       set(range(1 + len(report.search_params))))
    header, rows = trial_cells(report)
    body.append("<h2>All trials</h2>")
    body += _table("trials", header, [(r, "", r[1]) for r in rows],
                   {1, *range(3, 3 + len(report.search_params))})
    return body


def _ablation_sections(report: Report) -> list[str]:
    header = ablation_header(report)
    body = ["<h2>Ablation table</h2>"]
    body += _table("ablation", header,
                   [(row_cells(r, report), "base" if r.is_base else ("empty" if not r.n else ""),
                     r.variant) for r in report.rows], {1}, wrap=wrapping_columns(header))
    body.append(f'<p class="legend">{_esc(legend(report))}</p>')
    return body


def html_page(report: Report, images: Mapping[str, bytes]) -> str:
    """``index.html``: tables, status, figures and notes in one offline page.

    Args:
        report: The report.
        images: Each figure's PNG bytes by figure name (:func:`ablate.report.render.plots.png`).
    """
    title = f"{'Search' if report.is_search else 'Ablation'} study {report.study}"
    body = [f"<h1>{_esc(title)}</h1>", _meta(report),
            f'<div id="status" class="status {"ok" if report.complete else "partial"}">'
            f"{_esc(status_line(report))}</div>"]
    if report.missing:
        body.append("<h2>Missing trials</h2>")
        body += _table("missing", ["trial", "state", "run"],
                       [([m.key, m.state, m.run_id or DASH], "", m.key)
                        for m in report.missing], {0, 1, 2})
    body += _search_sections(report) if report.is_search else _ablation_sections(report)
    header, rows = diagnostic_cells(report)
    if rows:
        body.append("<h2>Diagnostics (final epoch, mean over seeds)</h2>")
        body += _table("diagnostics", header, [(r, "", r[0]) for r in rows], {0})
    agreement = agreement_line(report)
    if agreement:
        body.append(f'<p id="agreement">{_esc(agreement[0].upper() + agreement[1:])}.</p>')
    for figure in report.figures:
        data = base64.b64encode(images[figure.name]).decode("ascii")
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
