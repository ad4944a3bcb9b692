"""Early-stopping schedulers: a spec's ``scheduler`` block becomes a :class:`Schedule`, built
once by the plan (:func:`build_schedule`).

A schedule answers the two questions the rest of the harness asks of a scheduler: at which
epochs it may stop a trial (test is scored there too, so a trial stopped early reports the test
scores of its own final epoch), and which rungs the study keeps to decide that
(:mod:`ablate.study.rungs`: for every planned trial, fused or not, in an order that makes the
decisions independent of timing, so a resumed study decides as an uninterrupted one; Tune runs
no scheduler of its own). A new scheduler is a class here with an entry in :data:`SCHEDULES`
(and its name in :data:`SchedulerType`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, get_args

from ablate.metrics import Mode
from ablate.study.rungs import Rungs

SchedulerType = Literal["none", "asha"]
SCHEDULERS: tuple[str, ...] = get_args(SchedulerType)


@dataclass(frozen=True)
class SchedulerSpec:
    """The spec's ``scheduler`` block (``scheduler: asha`` is ``{type: asha}``)."""

    type: SchedulerType = "none"
    grace_period: int = 2
    reduction_factor: int = 2


class Schedule(Protocol):
    """What a study's scheduler decides, for a plan whose trials train ``max_t`` epochs."""

    @property
    def stop_epochs(self) -> frozenset[int]:
        """Epochs after which a trial may be stopped."""

    def rungs(self) -> Rungs | None:
        """The rungs the study keeps for its trials before any result; None when nothing is
        stopped early."""


@dataclass(frozen=True)
class Unscheduled:
    """Every trial trains all its epochs."""

    @property
    def stop_epochs(self) -> frozenset[int]:
        return frozenset()

    def rungs(self) -> Rungs | None:
        return None


@dataclass(frozen=True)
class Asha:
    """Asynchronous successive halving (Li et al. 2020) with one bracket, Tune's
    ``ASHAScheduler``'s arithmetic: at each milestone a trial goes on only if it is in the best
    ``1 / reduction_factor`` of the trials before it (in the study's order) there."""

    grace_period: int
    max_t: int
    reduction_factor: int
    mode: Mode

    @classmethod
    def from_spec(cls, spec: SchedulerSpec, epochs: int, mode: Mode) -> Asha:
        return cls(min(spec.grace_period, epochs), epochs, spec.reduction_factor, mode)

    @property
    def stop_epochs(self) -> frozenset[int]:
        return frozenset(self.rungs().milestones)

    def rungs(self) -> Rungs:
        return Rungs.asha(self.grace_period, self.max_t, self.reduction_factor, self.mode)


SCHEDULES: dict[str, Callable[[SchedulerSpec, int, Mode], Schedule]] = {
    "none": lambda spec, epochs, mode: Unscheduled(),
    "asha": Asha.from_spec,
}


def build_schedule(spec: SchedulerSpec, epochs: int, mode: Mode) -> Schedule:
    """The schedule of a study whose trials train ``epochs`` epochs."""
    return SCHEDULES[spec.type](spec, epochs, mode)
