"""CLAV: class-activated feature learning with a relative distance loss.

Our reconstruction of the abstract's "features re-weighted by weights implicitly activated depending
on the class, and the gap between the classes widened by relative distance learning":

- A per-snippet gate g = sigmoid(MLP(h)) in (0, 1) plays the class activation. Left to itself
  (trained only through the scores and the distance loss) nothing ties it to the class, and a
  trained gate was found lower on abnormal snippets than on normal ones. So the objective adds a
  top-k MIL loss on the gate against the video label (``loss.gate_weight``): the mean of a video's
  k highest gate values must be high exactly when the video is abnormal, the same weak signal the
  scores learn from. The gate stays implicit at the snippet level (no snippet labels).
- The snippet is mixed from two class-specific projections, h' = (1 - g) * P_n h + g * P_a h, so a
  normal-looking and an abnormal-looking snippet are mapped by different linear maps.
- By default the mix is added to h (a residual): at initialisation the module is then a small
  perturbation of the identity, and switching CLAV on cannot remove information the head relied on.
- The relative distance loss widens the gap relative to the normal centre instead of pushing an
  absolute feature magnitude past a margin as RTFM does.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from ablate.models.registry import NON_NEGATIVE, POSITIVE, REGISTRY, Constraint

Distance = Literal["euclidean", "cosine"]

# Keeps sqrt differentiable where a snippet sits exactly on the centre.
_EPS = 1e-8


@REGISTRY.register("clav", "clav")
class CLAV(nn.Module):
    """Class-activated gate mixing two class-specific projections; relative distance loss.

    Args:
        in_dim: Feature width H (passed by the model, not an option).
        distance: Distance to the normal centre used by the relative distance loss.
        margin: Required gap between the abnormal and the normal top-k distance to the centre.
        k: Snippets per video, the farthest from the centre, averaged into its distance.
        gate_hidden: Width of the gate MLP's hidden layer.
        residual: Add the mixed projection to the input instead of replacing it.
    """

    constraints: ClassVar[dict[str, Constraint]] = {
        "margin": NON_NEGATIVE,
        "k": POSITIVE,
        "gate_hidden": POSITIVE,
    }

    def __init__(
        self,
        in_dim: int,
        distance: Distance = "euclidean",
        margin: float = 1.0,
        k: int = 4,
        gate_hidden: int = 32,
        residual: bool = True,
    ) -> None:
        super().__init__()
        self.distance = distance
        self.margin = margin
        self.k = k
        self.residual = residual
        self.gate = nn.Sequential(
            nn.Linear(in_dim, gate_hidden), nn.ReLU(), nn.Linear(gate_hidden, 1)
        )
        self.proj_normal = nn.Linear(in_dim, in_dim)
        self.proj_abnormal = nn.Linear(in_dim, in_dim)
        self.out_dim = in_dim

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Re-weight snippets by their class activation.

        Args:
            h: Snippet features (B, T, H).

        Returns:
            The mixed features (B, T, H) and the gate (B, T).
        """
        g = torch.sigmoid(self.gate(h))  # (B, T, 1)
        mixed = (1 - g) * self.proj_normal(h) + g * self.proj_abnormal(h)  # (B, T, H)
        out = h + mixed if self.residual else mixed
        return out, g.squeeze(-1)

    def relative_distance_loss(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Hinge on the gap between abnormal and normal videos' distances to the normal centre.

        With c the mean of all normal snippets in the batch, each video's distance is the mean of
        its k largest snippet distances to c (its least normal snippets: for an abnormal video these
        are where the anomaly most likely is, for a normal one its hardest snippets). Over every
        (abnormal, normal) pair: ``max(0, margin + d_normal - d_abnormal)``, averaged.

        c is detached: it is a reference point computed from the batch, and letting gradients move
        it would let the loss be satisfied by dragging the centre rather than shaping the features.

        Args:
            features: CLAV's output features (B, T, H).
            labels: Video labels (B,), 1 for abnormal.

        Returns:
            Scalar loss; zero (still attached to the graph) when the batch lacks a class.
        """
        abnormal = labels > 0.5
        feats_a, feats_n = features[abnormal], features[~abnormal]  # (A, T, H), (N, T, H)
        if len(feats_a) == 0 or len(feats_n) == 0:
            return features.sum() * 0.0
        centre = feats_n.mean(dim=(0, 1)).detach()  # (H,)
        k = min(self.k, features.shape[1])
        d_a = self._distance(feats_a, centre).topk(k, dim=1).values.mean(dim=1)  # (A,)
        d_n = self._distance(feats_n, centre).topk(k, dim=1).values.mean(dim=1)  # (N,)
        gaps = self.margin + d_n[None, :] - d_a[:, None]  # (A, N)
        return F.relu(gaps).mean()

    def _distance(self, feats: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
        """Distance of every snippet to the centre: (V, T, H) -> (V, T)."""
        if self.distance == "cosine":
            return 1.0 - F.cosine_similarity(feats, centre.expand_as(feats), dim=-1, eps=_EPS)
        return torch.sqrt(((feats - centre) ** 2).sum(dim=-1) + _EPS)
