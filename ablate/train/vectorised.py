"""One model variant called with the parameters of several members: the functional machinery
of :mod:`ablate.train.fused`.

A :class:`VectorisedModel` is a parameterless copy of the variant (a template for
``torch.func.functional_call``) whose ``nn.Dropout`` layers multiply by given masks. It runs a
training forward pass of N members on N batches, and an evaluation pass of N members on one
group of crops, in groups of ``per_call`` members: a group of one is a plain call with that
member's own parameters (its separate trial's own kernels), a larger group one ``vmap``-ed call
over the members' stacked parameters. The members' parameters, optimizers and RNGs stay with the
caller; this module only computes with them.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence

import torch
from torch import nn
from torch.func import functional_call, vmap

from ablate.errors import AblateError
from ablate.models import ModelOutput
from ablate.train.scoring import EVAL_GRAPH_BUDGET, own_scores

HAS_BUFFERS = ("fused training needs a model without buffers, which a vmapped forward would not "
               "update; this one has {names}")
DROPOUT_REUSED = ("fused training needs each dropout module to run once per forward pass; {name} "
                  "runs {count} times")
NOT_VECTORISABLE = ("this model variant cannot be trained fused ({problem}); train its seeds as "
                    "separate trials")

# A dropout layer of the template: module path, input shape, probability.
_Dropout = tuple[str, tuple[int, ...], float]


class _MaskedDropout(nn.Module):
    """``nn.Dropout`` whose mask (kept units scaled by 1 / (1 - p)) is given in the buffer
    ``mask``: under vmap one per member, drawn by the caller from the member's own generator."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        self.register_buffer("mask", None, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        return x * self.mask.to(x.dtype)  # (B, T, H), as nn.Dropout multiplies on CPU


class VectorisedModel:
    """A model variant as a template that members' parameters are passed to.

    Args:
        model: One member's model (its layout is shared by all members; its parameters are not
            used).
        batch: The shape (B, T, D) of one member's training batch, which fixes the dropout
            masks' shapes.

    Raises:
        AblateError: The model has buffers, or runs a dropout module more than once per pass.
    """

    def __init__(self, model: nn.Module, batch: tuple[int, ...]) -> None:
        buffers = [name for name, _ in model.named_buffers()]
        if buffers:
            raise AblateError(HAS_BUFFERS.format(names=", ".join(buffers)))
        self.names = [name for name, _ in model.named_parameters()]
        self.template, self.dropout = _template(model, batch)
        # Evaluation records CoMo's attention graphs; they are captured as outputs (vmap cannot
        # reduce them to floats) and handed to each member's own CoMo (see eval_scores).
        self._graphs: list[tuple[str, torch.Tensor]] = []
        como = getattr(self.template, "como", None)
        if como is not None and hasattr(como, "_record_entropy"):
            como._record_entropy = lambda relation, adj: self._graphs.append((relation, adj))
        self._train_vmap = vmap(lambda *args: _fields(self._train_call(*args)),
                                randomness="error")  # vmap returns tensors, not ModelOutput
        self._eval_vmap = vmap(self._eval_call, in_dims=(0, None), randomness="error")

    def named(self, params: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """One member's parameters by name, for a call that serves it alone."""
        return dict(zip(self.names, params, strict=True))

    def stack(self, params: Sequence[Sequence[torch.Tensor]]) -> dict[str, torch.Tensor]:
        """The members' parameters stacked on a new first dim, (N, ...) each; differentiable,
        so gradients reach each member's own parameters."""
        columns = zip(*params, strict=True)
        return {name: torch.stack(column) for name, column in zip(self.names, columns,
                                                                    strict=True)}

    def masks(self, generators: Sequence[torch.Generator],
              device: torch.device) -> dict[str, torch.Tensor]:
        """Each dropout layer's masks, (N, B, T, H): every member draws its layers in the order
        its separate forward pass does, from its own generator."""
        masks = {name: torch.empty((len(generators), *shape), device=device)
                 for name, shape, _ in self.dropout}
        for i, generator in enumerate(generators):
            for name, _, p in self.dropout:
                masks[name][i].bernoulli_(1 - p, generator=generator)
        for name, _, p in self.dropout:
            masks[name].div_(1 - p)
        return {f"{name}.mask": mask for name, mask in masks.items()}

    def train_outputs(self, params: Sequence[Sequence[torch.Tensor]],
                      generators: Sequence[torch.Generator], x: torch.Tensor,
                      per_call: int) -> list[ModelOutput]:
        """Each member's training forward pass on its batch ``x[i]`` (N, B, S, D), its dropout
        masks drawn from ``generators[i]``, in groups of ``per_call`` members."""
        outputs: list[ModelOutput] = []
        masks = self.masks(generators, x.device)  # (N, B, T, H) per dropout layer
        for start in range(0, len(params), per_call):
            group = params[start:start + per_call]
            part = slice(start, start + len(group))
            group_masks = {name: mask[part] for name, mask in masks.items()}
            if len(group) == 1:  # a plain call: the separate trial's own kernels
                only = {name: mask[0] for name, mask in group_masks.items()}
                outputs.append(self._train_call(self.named(group[0]), only, x[start]))
                continue
            with vectorising():
                scores, features, extras = self._train_vmap(
                    self.stack(group), group_masks, x[part])  # (n, B, T), (n, B, T, H)
            outputs += [ModelOutput(scores[i], features[i], {k: v[i] for k, v in extras.items()})
                        for i in range(len(group))]
        return outputs

    def eval_scores(self, models: Sequence[nn.Module], stacked: dict[str, torch.Tensor],
                    per_call: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The members' scores and CLAV gates of crops ``x`` (g, T, D), shared by the members:
        (N, g, T) each, as :data:`~ablate.train.scoring.VideoForward` returns them.

        Args:
            models: The members' own models, in eval mode: a group of one calls its model, and
                each model's CoMo records the attention graphs of its slice.
            stacked: The members' parameters, :meth:`stack`-ed (unused when ``per_call`` is 1).
            per_call: Members per vmapped call.
            x: The crops.
        """
        g, t = x.shape[0], x.shape[1]
        # Groups small enough that n x g x T x T graph elements stay within the budget.
        size = min(per_call, max(1, EVAL_GRAPH_BUDGET // max(1, g * t * t)))
        scores, gates = [], []
        for start in range(0, len(models), size):
            n = min(size, len(models) - start)
            if n == 1:  # the member's own model, as its separate trial calls it (no dropout)
                score, gate = own_scores(models[start], x)  # (1, g, T)
                scores.append(score)
                gates.append(gate)
                continue
            part = {name: value[start:start + n] for name, value in stacked.items()}
            self._graphs.clear()
            with vectorising():
                out, graphs = self._eval_vmap(part, x)  # (n, g, T); (n, g, T, T)
            # Each member's CoMo records its own graphs, as its separate forward would.
            comos = [getattr(model, "como", None) for model in models[start:start + n]]
            for (relation, _), adj in zip(self._graphs, graphs, strict=True):
                for j, como in enumerate(comos):
                    como._record_entropy(relation, adj[j])
            self._graphs.clear()
            scores.append(out["scores"])
            gates.append(out.get("gate"))
        gate = torch.cat(gates) if gates[0] is not None else None
        return torch.cat(scores), gate  # (N, g, T) each

    def _train_call(self, params: dict[str, torch.Tensor], masks: dict[str, torch.Tensor],
                    x: torch.Tensor) -> ModelOutput:
        return functional_call(self.template, (params, masks), (x,))

    def _eval_call(self, params: dict[str, torch.Tensor],
                   x: torch.Tensor) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
        out = functional_call(self.template, params, (x,))
        result = {"scores": out.scores}
        if "clav_gate" in out.extras:
            result["gate"] = out.extras["clav_gate"]
        return result, [adj for _, adj in self._graphs]


@contextlib.contextmanager
def vectorising() -> Iterator[None]:
    """Turns vmap's refusals (data-dependent control flow, randomness other than the dropout
    handled here) into an error that says what to do."""
    try:
        yield
    except RuntimeError as exc:
        if "vmap" not in str(exc):
            raise
        raise AblateError(NOT_VECTORISABLE.format(problem=str(exc).splitlines()[0])) from exc


def _fields(out: ModelOutput) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    return out.scores, out.features, out.extras


def _template(model: nn.Module, batch: tuple[int, ...]) -> tuple[nn.Module, list[_Dropout]]:
    """A parameterless copy of ``model`` for ``functional_call``, its ``nn.Dropout`` layers
    replaced by :class:`_MaskedDropout`, and those layers in the order a training forward pass
    of a batch of shape ``batch`` (B, T, D) calls them, with their input shapes."""
    template = copy.deepcopy(model).to("meta")
    calls: list[_Dropout] = []
    hooks = [module.register_forward_pre_hook(
        lambda module, args, name=name: calls.append((name, tuple(args[0].shape), module.p)))
        for name, module in template.named_modules() if isinstance(module, nn.Dropout)]
    template.train()
    with torch.no_grad(), torch.random.fork_rng(devices=[]):  # a meta pass, to be safe
        template(torch.empty(batch, device="meta"))
    for hook in hooks:
        hook.remove()
    names = [name for name, _, _ in calls]
    for name in names:
        if names.count(name) > 1:
            raise AblateError(DROPOUT_REUSED.format(name=name, count=names.count(name)))
    for name, module in list(template.named_modules()):
        if isinstance(module, nn.Dropout):
            parent, _, child = name.rpartition(".")
            setattr(template.get_submodule(parent), child, _MaskedDropout(module.p))
    return template, [(name, shape, p) for name, shape, p in calls if p > 0]
