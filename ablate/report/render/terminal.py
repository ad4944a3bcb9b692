"""What ``ablate report`` prints: the trial count and main table on stdout, the missing trials
and the notes on stderr."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ablate.report.render.cells import (
    ablation_cells,
    agreement_line,
    config_cells,
    confirmed_cells,
)

if TYPE_CHECKING:
    from ablate.report.model import Report

RERUN = ("  the report covers the finished trials only; rerun `ablate run SPEC` to finish the "
         "study, then report again")


def _aligned(header: list[str], rows: list[list[str]]) -> list[str]:
    """Left-aligned columns two spaces apart; nothing without rows."""
    if not rows:
        return []
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    return ["  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
            for cells in [header, *rows]]


def summary(report: Report) -> list[str]:
    """The trial count, then the ablation table or a search's best configurations."""
    kind = "search" if report.is_search else "ablation"
    planned = "?" if report.planned is None else report.planned
    lines = [f"study '{report.study}' ({kind}): {report.finished}/{planned} trials finished"]
    lines += _aligned(*(config_cells(report) if report.is_search else ablation_cells(report)))
    if report.confirmed:
        lines += ["confirmed on fresh seeds:", *_aligned(*confirmed_cells(report))]
    agreement = agreement_line(report)
    if agreement:
        lines.append(agreement)
    return lines


def warnings(report: Report) -> list[str]:
    """The missing trials and what the report therefore covers, then the notes."""
    lines = []
    if report.missing:
        lines.append(f"missing {len(report.missing)} trial(s):")
        lines += [f"  {m.key:<40} {m.state}" for m in report.missing]
        lines.append(RERUN)
    return lines + [f"note: {note}" for note in report.notes]
