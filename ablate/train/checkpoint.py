"""Trial checkpoints: written atomically, the previous one kept as a fallback.

A checkpoint holds the model, optimizer and RNG states, the epoch and the metric history, so a
resumed trial continues bit-for-bit (on CPU) where it stopped, and the fingerprint of the data
it was trained on (``data_sha256``), so it is never continued on other data
(:func:`ablate.train.driver.check_same_data`). It is saved as ``checkpoint.pt``;
before it is replaced, the last good one is moved to ``checkpoint.prev.pt``. A truncated or
corrupt latest checkpoint (a kill during the write cannot produce one, but a full disk or a bad
copy can) falls back to the previous one with a warning.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from ablate.errors import AblateError

LATEST = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"


def save_checkpoint(directory: Path, state: dict[str, Any]) -> Path:
    """Atomically writes ``state`` to ``directory/checkpoint.pt``, keeping the previous one."""
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    latest = directory / LATEST
    tmp = directory / f".{LATEST}.tmp-{os.getpid()}"
    torch.save(state, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    if latest.exists():
        os.replace(latest, directory / PREVIOUS)
    os.replace(tmp, latest)
    return latest


class _NotACheckpoint(ValueError):
    """A readable file that is not one of ours (e.g. a bare state dict copied in)."""


def _read(path: Path) -> dict[str, Any]:
    import torch

    # weights_only: a checkpoint is data; unpickling it must never run code from the file.
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "epoch" not in state or "model" not in state:
        raise _NotACheckpoint("not an ablate checkpoint")
    return state


def _problem(exc: Exception) -> str:
    # torch's own texts run to paragraphs and, for weights_only refusals, suggest loading the
    # file unsafely; name the kind of failure instead.
    import pickle

    if isinstance(exc, _NotACheckpoint):
        return str(exc)
    if isinstance(exc, pickle.UnpicklingError):  # garbage, or objects beyond plain data
        return f"corrupt, or holds more than tensors and plain data: {exc.__class__.__name__}"
    return f"corrupt or truncated: {exc.__class__.__name__}"


def load_checkpoint(directory: Path) -> dict[str, Any] | None:
    """The newest readable checkpoint in ``directory``, or None when there is none.

    Raises:
        AblateError: Checkpoints exist but none of them can be read.
    """
    candidates = [directory / LATEST, directory / PREVIOUS]
    present = [p for p in candidates if p.exists()]
    if not present:
        return None
    problems = []
    for path in present:
        try:
            state = _read(path)
        except Exception as exc:  # torch raises several types for truncated/corrupt files
            problems.append(f"{path.name} ({_problem(exc)})")
            continue
        if problems:
            warnings.warn(f"{directory}: unreadable checkpoint {problems[0]}; resuming from "
                          f"{path.name} (epoch {state['epoch']})", stacklevel=2)
        return state
    raise AblateError(f"{directory}: no readable checkpoint: {', '.join(problems)}; "
                      f"delete the directory to start the trial again")
