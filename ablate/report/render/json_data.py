"""``ablation.json`` and ``search.json``: the report's numbers for other programs (metrics in
[0, 1], not percent)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ablate.report.model import Report


def json_rows(report: Report) -> str:
    """``ablation.json``: one object per variant, in table order."""
    return json.dumps([row.to_json() for row in report.rows], indent=2) + "\n"


def json_search(report: Report) -> str:
    """``search.json``: a search's best configurations and parameter importances."""
    body: dict[str, Any] = {
        "metric": report.metric, "mode": report.mode, "params": list(report.search_params),
        "configs": [c.to_json() for c in report.configs],
        "confirmed": [{"variant": r.variant, "params": r.params, "winner": r.winner,
                       "search_mean": r.search.mean, "search_n": r.search.n, "gap": r.gap,
                       **{f"confirmed_{m}_mean": s.mean for m, s in r.confirmed.items()},
                       **{f"confirmed_{m}_std": s.std for m, s in r.confirmed.items()},
                       "confirmed_n": r.confirmed[report.metric].n}
                      for r in report.confirmed],
        "importances": report.importances, "importance_epoch": report.importance_epoch,
        "finished": report.finished,
        "planned": report.planned}
    return json.dumps(body, indent=2) + "\n"
