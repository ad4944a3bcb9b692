"""CoMo: context-motion interrelation over the snippets of a video.

Our reconstruction of the abstract's "relation between the appearance of the surroundings (context)
and motion, rather than only temporal dependencies or motion". Each snippet h_t gets

- a context feature c_t = phi_c(x_t), smoothed by a moving average over ``context_window`` snippets
  (the scene changes slowly; a single snippet sees it only faintly), and
- a motion feature m_t = phi_m(x_t - x_{t-1}), with zero motion at t = 0.

Both read the input features x, not the embedding h: phi_m is linear, so whatever is constant
over a video (the scene) cancels exactly in x_t - x_{t-1}. Differences of the non-linear
embedding would leak the scene into the motion features, and a motion-only graph could then
recover it by averaging; the relation types would stop being clean ablation axes.

Relation graphs, any non-empty subset of them (the relation types, an ablation axis):

- ``temporal``: A_ij = exp(-|i - j| / sigma), row-normalised, applied to h (HL-Net's distance
  branch, XD-Violence): who is near whom in time.
- ``context``: softmax(c c^T / sqrt(d)) applied to the context features: snippets of the same scene.
- ``motion``: softmax(m m^T / sqrt(d)) applied to the motion features only. It never aggregates h,
  so a model with only this relation cannot recover the scene by averaging the video.
- ``context_motion``: the interrelation, a cross graph softmax(m c^T / sqrt(d)) with queries from
  motion and keys from context, applied to the context features: each snippet gathers the scene
  context relevant to its motion. The layer also adds the snippet's own motion (the query) before
  its ReLU. Without that term a video with a single, constant scene would hand every snippet the
  same context whatever it does, and the branch could not tell running on a road from standing on
  it.

Each graph drives one graph-convolution layer ReLU(A V W). The branches are fused (``concat``: a
linear map of their concatenation; ``sum``; ``gated``: a per-snippet sigmoid gate per branch),
added to h as a residual, optionally layer-normalised.

Memory is O(T^2) per graph. Training uses T = 32; evaluation runs one whole video at a time
(B = 1), which is fine up to a few thousand snippets (T = 5,000 is about 100 MB per graph). There
is no padding mask: batches of videos of different lengths are not supported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Literal, get_args

import torch
import torch.nn.functional as F
from torch import nn

from ablate.models.registry import ODD_POSITIVE, POSITIVE, PROBABILITY, REGISTRY, Constraint

Relation = Literal["temporal", "context", "motion", "context_motion"]
Fusion = Literal["concat", "sum", "gated"]
RELATIONS: tuple[str, ...] = get_args(Relation)


def temporal_adjacency(t: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    """Row-normalised distance-decay adjacency exp(-|i - j| / sigma): (T, T), on like's device."""
    idx = torch.arange(t, device=like.device, dtype=torch.float32)
    dist = (idx[:, None] - idx[None, :]).abs()  # (T, T)
    adj = torch.softmax(-dist / sigma, dim=-1)  # softmax of -dist/sigma = row-normalised exp
    return adj.to(like.dtype)  # computed in float32, matched to half-precision features


def moving_average(x: torch.Tensor, window: int) -> torch.Tensor:
    """Centred moving average over time, averaging only real snippets at the edges: (B, T, d)."""
    if window == 1:
        return x
    pooled = F.avg_pool1d(
        x.transpose(1, 2), window, stride=1, padding=window // 2, count_include_pad=False
    )  # (B, d, T)
    return pooled.transpose(1, 2)


@REGISTRY.register("como", "como")
class CoMo(nn.Module):
    """Relation graphs over context, motion and time, fused into the snippet features.

    Args:
        in_dim: Feature width H (passed by the model, not an option).
        feature_dim: Input feature width D that context and motion read (passed by the model).
        relations: Relation graphs to use, any non-empty subset.
        fusion: How the graph branches are combined.
        context_window: Moving-average window (odd) smoothing the context features; 1 = none.
        hidden: Width d of context, motion and graph features; null = the input width.
        temporal_sigma: Decay length, in snippets, of the temporal graph.
        layer_norm: Layer-normalise the output of the residual.
        dropout: Dropout on the fused branches before the residual.
    """

    constraints: ClassVar[dict[str, Constraint]] = {
        "context_window": ODD_POSITIVE,
        "hidden": POSITIVE,
        "temporal_sigma": POSITIVE,
        "dropout": PROBABILITY,
    }

    def __init__(
        self,
        in_dim: int,
        feature_dim: int | None = None,
        relations: Sequence[Relation] = RELATIONS,  # type: ignore[assignment]
        fusion: Fusion = "gated",
        context_window: int = 5,
        hidden: int | None = None,
        temporal_sigma: float = 1.0,
        layer_norm: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not relations or any(r not in RELATIONS for r in relations):
            raise ValueError(
                f"relations must be a non-empty subset of {RELATIONS}, got {relations}"
            )
        # Canonical order, so that the same subset always builds the same layout.
        self.relations = [r for r in RELATIONS if r in relations]
        self.fusion = fusion
        self.context_window = context_window
        self.temporal_sigma = temporal_sigma
        d = hidden if hidden is not None else in_dim
        self.d = d

        # Only the projections some relation reads are built: an unused parameter would receive no
        # gradient and silently take part in weight decay and checkpoint size.
        uses_context = bool({"context", "context_motion"} & set(self.relations))
        uses_motion = bool({"motion", "context_motion"} & set(self.relations))
        source = feature_dim if feature_dim is not None else in_dim  # width of x
        self.phi_context = nn.Linear(source, d) if uses_context else None
        self.phi_motion = nn.Linear(source, d) if uses_motion else None

        # One graph-convolution weight per relation (A V W, bias-free as in GCNs).
        self.gcn = nn.ModuleDict(
            {r: nn.Linear(in_dim if r == "temporal" else d, d, bias=False) for r in self.relations}
        )
        if "context_motion" in self.relations:
            self.cm_query = nn.Linear(d, d, bias=False)  # the snippet's own motion term
        # Attention graphs use cosine similarity times a learned temperature, starting near
        # uniform (tau = 1): a graph first gathers the whole video and learns where to look.
        # Scaled dot products of noisy single-snippet features start sharp and random instead.
        self.log_tau = nn.ParameterDict(
            {r: nn.Parameter(torch.zeros(())) for r in self.relations if r != "temporal"}
        )

        n = len(self.relations)
        if fusion == "concat":
            self.out = nn.Linear(n * d, in_dim)
        else:
            self.out = nn.Linear(d, in_dim) if d != in_dim else nn.Identity()
        if fusion == "gated":
            # Sigmoid, not softmax, over branches: a softmax over a single branch is constant 1,
            # which would leave the gate untrained in the one-relation ablations.
            self.gate = nn.Linear(n * d, n)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(in_dim) if layer_norm else nn.Identity()
        self.out_dim = in_dim

    def forward(self, h: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """Fuse relation-graph features into the snippets: (B, T, H) -> (B, T, H).

        Args:
            h: Snippet embeddings (B, T, H).
            x: Input features (B, T, D) that context and motion are read from; defaults to h.
        """
        T = h.shape[1]
        x = h if x is None else x

        def graph(r: str, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
            sim = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(1, 2)  # (B, T, T)
            return torch.softmax(self.log_tau[r].exp() * sim, dim=-1)
        c: torch.Tensor | None = None
        m: torch.Tensor | None = None
        if self.phi_context is not None:
            c = moving_average(self.phi_context(x), self.context_window)  # (B, T, d)
        if self.phi_motion is not None:
            diff = torch.cat([torch.zeros_like(x[:, :1]), x[:, 1:] - x[:, :-1]], dim=1)  # (B, T, D)
            m = self.phi_motion(diff)  # (B, T, d)

        branches = []
        for r in self.relations:
            if r == "temporal":
                adj = temporal_adjacency(T, self.temporal_sigma, h)  # (T, T)
                z = self.gcn[r](adj @ h)  # (B, T, d)
            elif r == "context":
                adj = graph(r, c, c)  # (B, T, T)
                z = self.gcn[r](adj @ c)
            elif r == "motion":
                adj = graph(r, m, m)  # (B, T, T)
                z = self.gcn[r](adj @ m)
            else:  # context_motion: queries from motion, keys and values from context
                adj = graph(r, m, c)  # (B, T, T)
                z = self.gcn[r](adj @ c) + self.cm_query(m)
            branches.append(F.relu(z))  # (B, T, d)

        if self.fusion == "concat":
            fused = self.out(torch.cat(branches, dim=-1))  # (B, T, H)
        elif self.fusion == "sum":
            fused = self.out(torch.stack(branches).sum(dim=0))
        else:
            g = torch.sigmoid(self.gate(torch.cat(branches, dim=-1)))  # (B, T, n)
            stacked = torch.stack(branches, dim=-1)  # (B, T, d, n)
            fused = self.out((stacked * g[:, :, None, :]).sum(dim=-1))
        return self.norm(h + self.drop(fused))  # (B, T, H)
