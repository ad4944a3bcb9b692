"""Publishing a report: its rendered files written under ``--out`` and logged to the study's
tracked run. The only part of :mod:`ablate.report` that writes files or logs to the tracking
store."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ablate.report.model import Report
    from ablate.tracking.store import Tracker

ARTIFACT_PATH = "report"
PLOTS_DIR = "plots"


def rendered_files(report: Report) -> dict[str, str | bytes]:
    """The report's files by path relative to ``--out``: the pages, then one PNG per figure."""
    from ablate.report.render.html_page import html_page
    from ablate.report.render.json_data import json_rows, json_search
    from ablate.report.render.latex import latex
    from ablate.report.render.markdown import markdown
    from ablate.report.render.plots import png

    images = {figure.name: png(figure) for figure in report.figures}
    files: dict[str, str | bytes] = {
        "index.html": html_page(report, images),
        "ablation.md": markdown(report),
        "ablation.tex": latex(report),
        "ablation.json": json_rows(report),
    }
    if report.is_search:
        files["search.json"] = json_search(report)
    files.update({f"{PLOTS_DIR}/{name}.png": data for name, data in images.items()})
    return files


def write_report(report: Report, out: Path) -> list[Path]:
    """Writes the report's files under ``out``; returns them."""
    files = rendered_files(report)
    out.mkdir(parents=True, exist_ok=True)
    plots_dir = out / PLOTS_DIR
    plots_dir.mkdir(exist_ok=True)
    for stale in plots_dir.glob("*.png"):  # a figure left out this time must not linger
        stale.unlink()
    written = []
    for name, content in files.items():
        path = out / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        written.append(path)
    return written


def log_report(tracker: Tracker, report: Report, out: Path, files: list[Path]) -> None:
    """Logs the written files as artifacts of the study's parent run, under ``report/``.

    Only the report's own files: anything else a user keeps in ``out`` stays local.
    """
    artifacts = []
    for path in files:
        folder = path.parent.relative_to(out).as_posix()
        artifacts.append((ARTIFACT_PATH if folder == "." else f"{ARTIFACT_PATH}/{folder}", path))
    tracker.log_artifacts(report.parent_run_id, artifacts)
