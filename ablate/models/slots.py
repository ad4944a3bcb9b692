"""The slots of the model and the objective: the places that each hold one component.

One entry per slot, in the order ``ablate list`` shows them. A slot's ``default`` is the component
a spec gets when it leaves the slot out; an ``optional`` slot may be switched off with
``{"type": "none"}``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Slot:
    """A place in the model or the objective that holds one component.

    Attributes:
        name: Slot name, also the key in the spec (``como``).
        group: ``"model"`` or ``"loss"``: which spec the slot belongs to.
        default: Component used when a spec leaves the slot out.
        optional: Whether ``none`` may switch the slot off.
        description: One line for ``ablate list``.
    """

    name: str
    group: str
    default: str
    optional: bool
    description: str


SLOTS = (
    Slot("embed", "model", "mlp", False, "Snippet embedding of the input features."),
    Slot("clav", "model", "clav", True,
         "Class-activated feature learning (CLAV) and its relative distance loss."),
    Slot("como", "model", "como", True,
         "Context-motion interrelation (CoMo): relation graphs over the video's snippets."),
    Slot("head", "model", "mlp", False, "Per-snippet anomaly scorer."),
    Slot("mil", "loss", "topk_bce", False, "Multiple-instance loss on video-level labels."),
    Slot("magnitude", "loss", "none", True,
         "Feature-magnitude loss on the features fed to the head."),
)
"""Every slot the built-in registry declares."""
