"""Where and in what precision a trial runs: the device, CPU threads, autocast."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ablate.errors import AblateError

if TYPE_CHECKING:
    import contextlib

    from ablate.models import ModelOutput


def pick_device(preference: str) -> str:
    import torch

    if preference == "cuda" and not torch.cuda.is_available():
        raise AblateError("train.device: cuda requested but no CUDA device is available")
    if preference == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return preference


def set_cpu_threads(threads: int) -> int:
    """Sets torch's intra-op threads: explicit, else what Ray granted (OMP_NUM_THREADS), else
    the cores this process may run on."""
    import torch

    if threads <= 0:
        granted = os.environ.get("OMP_NUM_THREADS", "")
        threads = int(granted) if granted.isdigit() and int(granted) > 0 else len(
            os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    return threads


def autocast(device: str, amp: bool) -> contextlib.AbstractContextManager[Any]:
    """bfloat16 autocast on CUDA when ``amp`` is on; nothing on CPU."""
    import contextlib

    import torch

    if device == "cuda" and amp:
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _as_float(out: ModelOutput) -> ModelOutput:
    """A model output in float32, for the losses: BCE on probabilities is unsafe under
    autocast."""
    import dataclasses

    return dataclasses.replace(out, scores=out.scores.float(), features=out.features.float(),
                               extras={k: v.float() for k, v in out.extras.items()})
