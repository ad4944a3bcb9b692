"""ASHA's rungs, kept by the study itself for every trial, fused or not, so that its decisions
are the same however often the study is interrupted.

One :class:`Rungs` lives in a Ray actor (:mod:`ablate.engine.asha`) that each Tune trial asks
after every epoch, for all the planned trials it trains at once; a trial it stops trains no
further (a member of a fused trial is masked, :meth:`~ablate.train.fused.FusedTrainer.stop`,
while the others go on). The arithmetic is Tune's asynchronous successive halving with one
bracket, decision for decision (``tests/test_rungs.py`` replays random result streams through
both).

Tune's ASHA compares a trial at a milestone with the trials that happened to reach it before, so
its decisions follow the timing of the trials, which a restart changes. These rungs compare a
trial with the trials *before it in* :attr:`Rungs.order` (the order Tune created them: the plan's
order, or a search's sampling order) instead: a trial's result at a milestone is decided only
once every earlier trial has a value there, was stopped before it, or ended
(:meth:`Rungs.waits_for`). Decisions then depend on the trials' results alone, never on their
timing, and a study killed and resumed decides as an uninterrupted one. The actor writes the
rungs to the study directory (``rungs.json``) whenever a decision changes them, before the trial
acts on it, and a restarted driver seeds its actor from that snapshot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ablate.errors import short
from ablate.metrics import Mode

SNAPSHOT_KEYS = ("milestones", "reduction_factor", "sign", "stopped", "recorded", "order")


@dataclass
class Rungs:
    """Asynchronous successive halving over planned trials, keyed by trial key.

    Attributes:
        milestones: Epochs at which a trial is compared with those before it, highest first:
            ``grace_period * reduction_factor**k`` below ``max_t``.
        reduction_factor: A trial goes on past a milestone if it is in the best
            ``1/reduction_factor`` of the values recorded there.
        sign: +1 to maximise the metric, -1 to minimise it.
        recorded: Per milestone, each trial's signed metric there.
        stopped: The epoch at which each stopped trial was stopped (at the top milestone, when
            that is the last epoch, as Tune's ASHA does: such a trial trained every epoch).
        order: The trials in the order they are compared (:meth:`register`).
    """

    milestones: tuple[int, ...]
    reduction_factor: float
    sign: float
    recorded: dict[int, dict[str, float]] = field(default_factory=dict)
    stopped: dict[str, int] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)

    @classmethod
    def asha(cls, grace_period: int, max_t: int, reduction_factor: float, mode: Mode) -> Rungs:
        # np.log, as Tune computes it: the rung count must not differ by a rounding
        count = int(np.log(max_t / grace_period) / np.log(reduction_factor) + 1)
        milestones = tuple(grace_period * reduction_factor ** k for k in reversed(range(count)))
        return cls(milestones, reduction_factor, 1.0 if mode == "max" else -1.0,
                   {m: {} for m in milestones})

    def register(self, keys: list[str]) -> bool:
        """Appends the trials of ``keys`` not yet in :attr:`order`; whether any was new."""
        new = [key for key in dict.fromkeys(keys) if key not in self.order]
        self.order.extend(new)
        return bool(new)

    def milestone_of(self, key: str, epoch: int) -> int | None:
        """The milestone a result of ``key`` at ``epoch`` is recorded at: the highest reached
        that has no value of the trial yet (None: nothing to record)."""
        for milestone in self.milestones:  # highest first: only the newest milestone reached
            if epoch >= milestone and key not in self.recorded[milestone]:
                return milestone
        return None

    def waits_for(self, key: str, epoch: int, ended: frozenset[str] = frozenset()) -> list[str]:
        """The trials before ``key`` in :attr:`order` that its result at ``epoch`` must wait
        for: none has a value at its milestone yet, nor was stopped, nor is in ``ended``
        (finished or failed for good). ``key`` itself when it is not in the order yet."""
        milestone = self.milestone_of(key, epoch)
        if milestone is None or key in self.stopped:
            return []
        if key not in self.order:
            return [key]
        recorded = self.recorded[milestone]
        return [prior for prior in self.order[:self.order.index(key)]
                if prior not in recorded and prior not in self.stopped and prior not in ended]

    def decide(self, key: str, epoch: int, value: float | None) -> bool:
        """Records a trial's metric at ``epoch``; False if the trial is (now) stopped. A trial
        stopped at a later epoch than ``epoch`` (a resumed one, behind the decision) goes on."""
        if key in self.stopped:
            return epoch < self.stopped[key]
        milestone = self.milestone_of(key, epoch)
        if milestone is None or value is None:
            return True
        recorded = self.recorded[milestone]
        signed = self.sign * float(value)
        if recorded and signed < np.nanpercentile(list(recorded.values()),
                                                  (1 - 1 / self.reduction_factor) * 100):
            self.stopped[key] = epoch
        recorded[key] = signed
        return key not in self.stopped

    def decide_all(self, results: dict[str, tuple[int, float | None]]) -> list[str]:
        """:meth:`decide` for several trials (key -> (epoch, value)); the keys stopped."""
        return [key for key, (epoch, value) in results.items()
                if not self.decide(key, epoch, value)]

    def stopped_at(self, epochs: dict[str, int]) -> list[str]:
        """The trials of ``epochs`` (key -> the epoch it trained to) stopped at that epoch or
        before: those to train no further."""
        return [key for key, epoch in epochs.items()
                if key in self.stopped and epoch >= self.stopped[key]]

    def to_json(self) -> dict[str, Any]:
        return {"milestones": list(self.milestones), "reduction_factor": self.reduction_factor,
                "sign": self.sign, "stopped": dict(self.stopped), "order": list(self.order),
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
        order = body.get("order", [])  # absent in snapshots of fused studies' rungs before it
        if not isinstance(order, list) or not all(isinstance(k, str) for k in order):
            raise ValueError("'order' must list the trial keys")
        try:
            rungs = cls(tuple(_whole(m) for m in body["milestones"]),
                        float(body["reduction_factor"]), float(body["sign"]),
                        {_whole(m): {str(k): float(v) for k, v in r.items()}
                         for m, r in recorded.items()},
                        {str(k): _whole(v) for k, v in stopped.items()}, list(order))
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
        return ({key for values in self.recorded.values() for key in values}
                | set(self.stopped) | set(self.order))

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
