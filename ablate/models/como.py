"""CoMo: context-motion interrelation over the snippets of a video.

Our reconstruction of the abstract's "relation between the appearance of the surroundings (context)
and motion, rather than only temporal dependencies or motion". Each snippet h_t gets

- a context feature c_t = phi_c(x_t), smoothed by a moving average over ``context_window`` snippets
  (the scene changes slowly; a single snippet sees it only faintly), and
- a motion feature m_t = phi_m(x_t - x_{t-1}), with zero motion at t = 0.

Both read the input features x, not the embedding h: whatever is constant over a video (the scene)
cancels exactly in x_t - x_{t-1}, so a motion-only graph cannot recover the scene by averaging,
and the relation types stay clean ablation axes.

The relation types (an ablation axis, any non-empty subset) are the ``RELATIONS`` table: one entry
per relation, naming what it reads and the module that builds its graph and branch.

- ``temporal`` reads h: A_ij = exp(-|i - j| / sigma), row-normalised (HL-Net's distance branch,
  XD-Violence): who is near whom in time.
- ``context`` reads c: A = softmax(tau * cos(W_q c_i, W_k c_j)), applied to c: snippets that look
  alike (on the synthetic benchmark, the same camera and so the same scene).
- ``motion`` reads m: A = softmax(tau * cos(W_q m_i, W_k m_j)), applied to m: snippets that move
  alike. It never aggregates h.
- ``context_motion`` (the interrelation) reads m, c and h: the context read in the light of
  each snippet's motion. The query is the snippet's context shifted by its motion,
  q_t = c_t + W_q m_t, so motion decides which snippets' context it gathers:
  r_t = W_r sum_s softmax_s(tau * cos(W_q' q_t, W_k c_s)) c_s. The snippet's own motion
  u_t = W_u [h_t; m_t] then rescales that context feature-wise (FiLM):
  z_t = (1 + W_gamma u_t) * r_t + W_beta u_t. The product makes the branch a function of the
  (context, motion) pair, not a sum of one term per input: a context feature can be turned up
  where the snippet's motion makes it matter ("running" on a roadway) and down elsewhere.

Attention graphs use the cosine similarity of learned query and key projections (starting as the
identity) times a learned temperature tau, starting at ``attention_temperature`` = 10: sharp
enough to select the snippets that look alike from the first step, and a tau that gradients move
(at tau = 1 a graph over tens of snippets is near uniform and stays so; see
:class:`SimilarityAttention`). Each branch is ReLU(z); branches are
fused (``concat``: a linear map of their concatenation; ``sum``; ``gated``: a per-snippet sigmoid
gate per branch), added to h as a residual, optionally layer-normalised. In eval mode the module
records each attention graph's mean normalised entropy (1 = uniform) for :meth:`CoMo.diagnostics`.

Memory is O(T^2) per graph. Training uses T = 32; evaluation runs one whole video at a time
(B = 1), which is fine up to a few thousand snippets (T = 5,000 is about 100 MB per graph). There
is no padding mask: batches of videos of different lengths are not supported.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal, NamedTuple, get_args

import torch
import torch.nn.functional as F
from torch import nn

from ablate.models.registry import ODD_POSITIVE, POSITIVE, PROBABILITY, REGISTRY, Constraint

Relation = Literal["temporal", "context", "motion", "context_motion"]
Fusion = Literal["concat", "sum", "gated"]
Source = Literal["h", "context", "motion"]


class Inputs(NamedTuple):
    """What the relations read: the embedding h (B, T, H) and, when some relation reads them,
    context c and motion m features (B, T, d)."""

    h: torch.Tensor
    context: torch.Tensor | None
    motion: torch.Tensor | None


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


class SimilarityAttention(nn.Module):
    """softmax(tau * cos(W_q q_i, W_k k_j)) over j: learned projections decide which directions
    make two snippets alike, and a learned temperature tau how sharply the graph selects.

    The projections start as the identity (the cosine of the features themselves) and tau at
    ``temperature``. Cosines lie in [-1, 1], so tau bounds the log-ratio of two attention weights
    by 2 tau: at tau = 1 the most alike snippet of a video gets at most e^2 = 7.4 times the
    weight of the least alike, a graph over tens of snippets is near uniform whatever the
    features say, and since the gradient on log tau scales with tau it barely moves. At tau = 10
    the graph can select from the first step, and learning moves tau either way.
    """

    def __init__(self, d: int, temperature: float) -> None:
        super().__init__()
        self.query = nn.Linear(d, d, bias=False)
        self.key = nn.Linear(d, d, bias=False)
        for layer in (self.query, self.key):
            nn.init.eye_(layer.weight)
        self.log_tau = nn.Parameter(torch.tensor(math.log(temperature)))

    @property
    def temperature(self) -> float:
        return float(self.log_tau.detach().exp())

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        q, k = F.normalize(self.query(q), dim=-1), F.normalize(self.key(k), dim=-1)
        return torch.softmax(self.log_tau.exp() * (q @ k.transpose(1, 2)), dim=-1)  # (B, T, T)


class TemporalRelation(nn.Module):
    """Distance-decay graph over time applied to h (no attention, nothing learned in the graph)."""

    def __init__(self, in_dim: int, d: int, sigma: float) -> None:
        super().__init__()
        self.sigma = sigma
        self.gcn = nn.Linear(in_dim, d, bias=False)

    def forward(self, inp: Inputs) -> tuple[torch.Tensor, torch.Tensor | None]:
        adj = temporal_adjacency(inp.h.shape[1], self.sigma, inp.h)  # (T, T)
        return self.gcn(adj @ inp.h), None  # (B, T, d)


class SelfRelation(nn.Module):
    """An attention graph over one feature applied to that feature (``context`` or ``motion``)."""

    def __init__(self, source: Source, d: int, temperature: float) -> None:
        super().__init__()
        self.source = source
        self.attention = SimilarityAttention(d, temperature)
        self.gcn = nn.Linear(d, d, bias=False)

    def forward(self, inp: Inputs) -> tuple[torch.Tensor, torch.Tensor | None]:
        f = getattr(inp, self.source)  # (B, T, d)
        adj = self.attention(f, f)  # (B, T, T)
        return self.gcn(adj @ f), adj


class InterRelation(nn.Module):
    """Motion-conditioned reading of context, modulating the snippet's own motion (FiLM)."""

    def __init__(self, in_dim: int, d: int, temperature: float) -> None:
        super().__init__()
        self.query = nn.Linear(d, d, bias=False)  # how motion shifts what a snippet asks for
        self.attention = SimilarityAttention(d, temperature)
        self.read = nn.Linear(d, d, bias=False)  # the graph convolution of the read context
        self.own = nn.Linear(in_dim + d, d)  # u_t from [h_t; m_t]
        self.gamma = nn.Linear(d, d)
        self.beta = nn.Linear(d, d)
        # Motion's shift of the query and its rescaling of the context start small: the branch
        # starts as a context graph plus the snippet's own motion, and learns how motion
        # conditions the reading, instead of starting from products of random maps (which
        # drown the context signal and train slowly).
        for layer in (self.query, self.gamma):
            nn.init.normal_(layer.weight, std=0.01)
        nn.init.zeros_(self.gamma.bias)

    def forward(self, inp: Inputs) -> tuple[torch.Tensor, torch.Tensor | None]:
        c, m = inp.context, inp.motion  # (B, T, d) each
        adj = self.attention(c + self.query(m), c)  # (B, T, T): queries shifted by motion
        relevant = self.read(adj @ c)  # (B, T, d): the context relevant to the snippet's motion
        own = self.own(torch.cat([inp.h, m], dim=-1))  # (B, T, d)
        return (1 + self.gamma(own)) * relevant + self.beta(own), adj


class Shape(NamedTuple):
    """What a relation's branch is built from: widths, the temporal decay and the attention's
    initial temperature."""

    in_dim: int
    d: int
    sigma: float
    temperature: float


@dataclass(frozen=True)
class RelationEntry:
    """One relation type: what it reads and how its branch is built."""

    reads: frozenset[str]
    build: Callable[[Shape], nn.Module]


RELATIONS: dict[str, RelationEntry] = {
    "temporal": RelationEntry(frozenset({"h"}), lambda s: TemporalRelation(s.in_dim, s.d, s.sigma)),
    "context": RelationEntry(frozenset({"context"}),
                             lambda s: SelfRelation("context", s.d, s.temperature)),
    "motion": RelationEntry(frozenset({"motion"}),
                            lambda s: SelfRelation("motion", s.d, s.temperature)),
    "context_motion": RelationEntry(frozenset({"h", "context", "motion"}),
                                    lambda s: InterRelation(s.in_dim, s.d, s.temperature)),
}
"""Relation type -> what it reads and its builder; the keys are the allowed ``relations``."""
assert tuple(RELATIONS) == get_args(Relation)


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
        attention_temperature: Initial temperature tau of the attention graphs (learned).
        layer_norm: Layer-normalise the output of the residual.
        dropout: Dropout on the fused branches before the residual.
    """

    constraints: ClassVar[dict[str, Constraint]] = {
        "context_window": ODD_POSITIVE,
        "hidden": POSITIVE,
        "temporal_sigma": POSITIVE,
        "attention_temperature": POSITIVE,
        "dropout": PROBABILITY,
    }

    def __init__(
        self,
        in_dim: int,
        feature_dim: int | None = None,
        relations: Sequence[Relation] = tuple(RELATIONS),  # type: ignore[assignment]
        fusion: Fusion = "gated",
        context_window: int = 5,
        hidden: int | None = None,
        temporal_sigma: float = 1.0,
        attention_temperature: float = 10.0,
        layer_norm: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        # Canonical order (the registry's validator checked the subset), so that the same
        # subset always builds the same layout.
        self.relations = [r for r in RELATIONS if r in relations]
        self.fusion = fusion
        self.context_window = context_window
        d = hidden if hidden is not None else in_dim
        self.d = d

        # Only the projections some relation reads are built: an unused parameter would receive no
        # gradient and silently take part in weight decay and checkpoint size.
        reads = set().union(*(RELATIONS[r].reads for r in self.relations))
        source = feature_dim if feature_dim is not None else in_dim  # width of x
        self.phi_context = nn.Linear(source, d) if "context" in reads else None
        self.phi_motion = nn.Linear(source, d) if "motion" in reads else None
        shape = Shape(in_dim, d, temporal_sigma, attention_temperature)
        self.branches = nn.ModuleDict({r: RELATIONS[r].build(shape) for r in self.relations})

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
        self._entropy: dict[str, list[float]] = {}

    def inputs(self, h: torch.Tensor, x: torch.Tensor) -> Inputs:
        """Context and motion features of x, for the relations that read them."""
        c = m = None
        if self.phi_context is not None:
            c = moving_average(self.phi_context(x), self.context_window)  # (B, T, d)
        if self.phi_motion is not None:
            diff = torch.cat([torch.zeros_like(x[:, :1]), x[:, 1:] - x[:, :-1]], dim=1)  # (B, T, D)
            m = self.phi_motion(diff)  # (B, T, d)
        return Inputs(h, c, m)

    def forward(self, h: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """Fuse relation-graph features into the snippets: (B, T, H) -> (B, T, H).

        Args:
            h: Snippet embeddings (B, T, H).
            x: Input features (B, T, D) that context and motion are read from; defaults to h.
        """
        inp = self.inputs(h, h if x is None else x)
        branches = []
        for r in self.relations:
            z, adj = self.branches[r](inp)  # (B, T, d), (B, T, T) or None
            if adj is not None and not self.training:
                self._record_entropy(r, adj)
            branches.append(F.relu(z))

        if self.fusion == "concat":
            fused = self.out(torch.cat(branches, dim=-1))  # (B, T, H)
        elif self.fusion == "sum":
            fused = self.out(torch.stack(branches).sum(dim=0))
        else:
            g = torch.sigmoid(self.gate(torch.cat(branches, dim=-1)))  # (B, T, n)
            stacked = torch.stack(branches, dim=-1)  # (B, T, d, n)
            fused = self.out((stacked * g[:, :, None, :]).sum(dim=-1))
        return self.norm(h + self.drop(fused))  # (B, T, H)

    def _record_entropy(self, relation: str, adj: torch.Tensor) -> None:
        t = adj.shape[-1]
        if t < 2:
            return
        p = adj.detach().float()
        entropy = -(p * p.clamp_min(1e-12).log()).sum(-1).mean()  # mean over rows and videos
        self._entropy.setdefault(relation, []).append(float(entropy) / math.log(t))

    def diagnostics(self) -> dict[str, float]:
        """Each attention relation's temperature, and its mean normalised attention entropy over
        the eval-mode forward passes since the last call (1 = uniform, 0 = one snippet)."""
        out: dict[str, float] = {}
        for r in self.relations:
            attention = getattr(self.branches[r], "attention", None)
            if attention is None:
                continue
            out[f"como.{r}.temperature"] = attention.temperature
            values = self._entropy.get(r)
            if values:
                out[f"como.{r}.entropy"] = sum(values) / len(values)
        self._entropy = {}
        return out
