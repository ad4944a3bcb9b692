"""ASHA's rungs for the members of fused trials, so each member is stopped on its own.

Tune's ASHA scheduler decides per Tune trial, and a fused trial trains several planned trials
at once. A fused study therefore keeps the rungs itself: one :class:`Rungs` in a Ray actor that
each fused trial asks after every epoch, for all its members at once; a member it stops is
masked (:meth:`~ablate.train.fused.FusedTrainer.stop`) and trains no further, while the others
go on. The arithmetic is Tune's asynchronous successive halving with one bracket, decision for
decision (``tests/test_rungs.py`` replays random result streams through both).

The driver snapshots the rungs into the study directory (``rungs.json``) whenever it writes
``trials.json`` and when it stops, and a restarted driver seeds its actor from that snapshot, so
a resumed study keeps the decisions already made. After a crash (not a Ctrl-C or SIGTERM, which
write the snapshot) a decision made since the last snapshot, at most seconds before, is made
again from the rungs as they were then.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ablate.errors import short
from ablate.metrics import Mode

SNAPSHOT_KEYS = ("milestones", "reduction_factor", "sign", "stopped", "recorded")


@dataclass
class Rungs:
    """Asynchronous successive halving over planned trials, keyed by trial key.

    Attributes:
        milestones: Epochs at which a trial is compared with those that reached it before,
            highest first: ``grace_period * reduction_factor**k`` below ``max_t``.
        reduction_factor: A trial goes on past a milestone if it is in the best
            ``1/reduction_factor`` of the values recorded there.
        sign: +1 to maximise the metric, -1 to minimise it.
        recorded: Per milestone, each trial's signed metric there.
        stopped: The epoch at which each stopped trial was stopped (at the top milestone, when
            that is the last epoch, as Tune's ASHA does: such a trial trained every epoch).
    """

    milestones: tuple[int, ...]
    reduction_factor: float
    sign: float
    recorded: dict[int, dict[str, float]] = field(default_factory=dict)
    stopped: dict[str, int] = field(default_factory=dict)

    @classmethod
    def asha(cls, grace_period: int, max_t: int, reduction_factor: float, mode: Mode) -> Rungs:
        # np.log, as Tune computes it: the rung count must not differ by a rounding
        count = int(np.log(max_t / grace_period) / np.log(reduction_factor) + 1)
        milestones = tuple(grace_period * reduction_factor ** k for k in reversed(range(count)))
        return cls(milestones, reduction_factor, 1.0 if mode == "max" else -1.0,
                   {m: {} for m in milestones})

    def decide(self, key: str, epoch: int, value: float | None) -> bool:
        """Records a trial's metric at ``epoch``; False if the trial is (now) stopped."""
        if key in self.stopped:
            return False
        for milestone in self.milestones:  # highest first: only the newest milestone reached
            recorded = self.recorded[milestone]
            if epoch < milestone or key in recorded:
                continue
            if value is None:
                break
            signed = self.sign * float(value)
            if recorded and signed < np.nanpercentile(list(recorded.values()),
                                                      (1 - 1 / self.reduction_factor) * 100):
                self.stopped[key] = epoch
            recorded[key] = signed
            break
        return key not in self.stopped

    def decide_all(self, results: dict[str, tuple[int, float | None]]) -> list[str]:
        """:meth:`decide` for several trials (key -> (epoch, value)); the keys stopped."""
        return [key for key, (epoch, value) in results.items()
                if not self.decide(key, epoch, value)]

    def stopped_among(self, keys: list[str]) -> list[str]:
        return [key for key in keys if key in self.stopped]

    def to_json(self) -> dict[str, Any]:
        return {"milestones": list(self.milestones), "reduction_factor": self.reduction_factor,
                "sign": self.sign, "stopped": dict(self.stopped),
                "recorded": {str(m): dict(r) for m, r in self.recorded.items()}}

    @classmethod
    def from_json(cls, body: Any) -> Rungs:
        """The rungs :meth:`to_json` wrote.

        Raises:
            ValueError: ``body`` is not such a snapshot (names what is wrong).
        """
        if not isinstance(body, dict):
            raise ValueError(f"expected a JSON object, got {type(body).__name__}")
        unknown = sorted(set(body) - set(SNAPSHOT_KEYS))
        if unknown:
            raise ValueError(f"unknown key {short(unknown[0])} (known: {', '.join(SNAPSHOT_KEYS)})")
        recorded, stopped = body.get("recorded"), body.get("stopped")
        if not isinstance(recorded, dict) or not all(isinstance(r, dict)
                                                     for r in recorded.values()):
            raise ValueError("'recorded' must map each milestone to {trial: value}")
        if not isinstance(stopped, dict):
            raise ValueError("'stopped' must map each stopped trial to its epoch")
        try:
            rungs = cls(tuple(_whole(m) for m in body["milestones"]),
                        float(body["reduction_factor"]), float(body["sign"]),
                        {_whole(m): {str(k): float(v) for k, v in r.items()}
                         for m, r in recorded.items()},
                        {str(k): _whole(v) for k, v in stopped.items()})
        except KeyError as exc:
            raise ValueError(f"no {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise ValueError(str(exc)) from None
        if rungs.sign not in (1, -1):
            raise ValueError(f"sign must be 1 or -1, got {rungs.sign:g}")
        if set(rungs.recorded) != set(rungs.milestones):
            raise ValueError(f"'recorded' has milestones {sorted(rungs.recorded)}, not the "
                             f"rungs' {sorted(rungs.milestones)}")
        rungs.check_decisions()
        return rungs

    def check_decisions(self) -> None:
        """Each recorded value is a metric's (signed, in [-1, 1]), and each stopped trial was
        stopped where a decision is made: at an epoch it reached a milestone it is recorded
        at (never below the grace period).

        Raises:
            ValueError: Naming the first trial that breaks this.
        """
        for milestone, values in self.recorded.items():
            for key, value in values.items():
                if not (abs(value) <= 1 or math.isnan(value)):
                    raise ValueError(f"{short(key)} at epoch {milestone} is {value:g}, not a "
                                     f"metric in [-1, 1]")
        for key, epoch in self.stopped.items():
            if not any(m <= epoch and key in self.recorded[m] for m in self.milestones):
                raise ValueError(f"{short(key)} is stopped at epoch {epoch}, where no milestone it "
                                 f"is recorded at was reached (milestones "
                                 f"{sorted(self.milestones)})")

    def keys(self) -> set[str]:
        """Every trial the rungs know of."""
        return {key for values in self.recorded.values() for key in values} | set(self.stopped)

    def same_schedule(self, other: Rungs) -> bool:
        """Whether ``other`` has these milestones, reduction factor and direction (e.g. a
        snapshot and the rungs its study's spec gives now)."""
        return (self.milestones, self.reduction_factor, self.sign) == (
            other.milestones, other.reduction_factor, other.sign)


def _whole(value: Any) -> int:
    """An epoch or milestone read back from JSON: a whole number ("4" and 4.0 are 4)."""
    number = float(value)
    if not number.is_integer():
        raise ValueError(f"{value!r} is not a whole number of epochs")
    return int(number)
