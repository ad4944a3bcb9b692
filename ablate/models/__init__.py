"""Model components, their registry, and the specs that assemble them.

    spec = resolve_model_spec({"como": {"type": "como", "relations": ["context_motion"]}})
    model = build_model(spec, in_dim=2048)
    objective = build_objective(resolve_loss_spec(None), model)
    out = model(x)                          # x (B, T, D) -> ModelOutput(scores (B, T), ...)
    loss, parts = objective(out, labels)    # labels (B,)

Importing this package registers every built-in component.
"""

from __future__ import annotations

# Component modules register themselves on import; keep them before anything that resolves specs.
from ablate.models import clav, como, embed, head  # noqa: F401  (registration)
from ablate.models.listing import Option
from ablate.models.losses import Objective, build_objective
from ablate.models.model import AnomalyModel, ModelOutput, build_model
from ablate.models.presets import PRESET_SUMMARIES, PRESETS
from ablate.models.registry import REGISTRY, Registry
from ablate.models.spec import LOSS_OPTIONS, resolve_loss_spec, resolve_model_spec

__all__ = [
    "LOSS_OPTIONS",
    "PRESETS",
    "PRESET_SUMMARIES",
    "REGISTRY",
    "AnomalyModel",
    "ModelOutput",
    "Objective",
    "Option",
    "Registry",
    "build_model",
    "build_objective",
    "resolve_loss_spec",
    "resolve_model_spec",
]
