"""Named model + loss specs: the full method, its ablations and the baselines.

Each preset is a raw spec ``{"model": {...}, "loss": {...}}``; resolve it with
:func:`~ablate.models.resolve_model_spec` / :func:`~ablate.models.resolve_loss_spec`, after
changing any key you like. Every slot is written out, so a preset reads as what it builds.
"""

from __future__ import annotations

from typing import Any

_EMBED = {"type": "mlp"}
_HEAD = {"type": "mlp"}
_TOPK = {"type": "topk_bce"}
_OFF = {"type": "none"}


def _preset(clav: str, como: str, mil: dict[str, Any], magnitude: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": {
            "embed": dict(_EMBED),
            "clav": {"type": clav},
            "como": {"type": como},
            "head": dict(_HEAD),
        },
        "loss": {"mil": dict(mil), "magnitude": dict(magnitude)},
    }


PRESETS: dict[str, dict[str, Any]] = {
    "full": _preset("clav", "como", _TOPK, _OFF),
    "clav_only": _preset("clav", "none", _TOPK, _OFF),
    "como_only": _preset("none", "como", _TOPK, _OFF),
    "baseline": _preset("none", "none", _TOPK, _OFF),
    "mil_ranking": _preset("none", "none", {"type": "mil_ranking"}, _OFF),
    "rtfm": _preset("none", "none", _TOPK, {"type": "rtfm"}),
}
"""Preset name -> ``{"model": raw model spec, "loss": raw loss spec}``."""

PRESET_SUMMARIES: dict[str, str] = {
    "full": "The method: CLAV + CoMo (all four relation types), top-k BCE + relative distance.",
    "clav_only": "CLAV without CoMo: class-activated features, no relation graphs.",
    "como_only": "CoMo without CLAV: relation graphs, no class activation or distance loss.",
    "baseline": "Embedding + head, top-k BCE: a per-snippet scorer without either module.",
    "mil_ranking": "Baseline model with the MIL ranking loss of Sultani et al. (2018).",
    "rtfm": "Baseline model, top-k BCE + RTFM-style feature-magnitude loss (Tian et al. 2021).",
}
"""Preset name -> one-line summary, for ``ablate list``."""
