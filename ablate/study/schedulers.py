"""Early-stopping schedulers: a spec's ``scheduler`` block becomes a :class:`Schedule`, built
once by the plan (:func:`build_schedule`).

A schedule answers the three questions the rest of the harness asks of a scheduler: at which
epochs it may stop a trial (test is scored there too, so a trial stopped early reports the test
scores of its own final epoch), which rungs the study keeps itself for the members of fused
trials (:mod:`ablate.study.rungs`: Tune's scheduler decides per Tune trial, and a fused trial
trains several planned trials), and which scheduler Tune runs for unfused trials. A new
scheduler is a class here with an entry in :data:`SCHEDULES` (and its name in
:data:`SchedulerType`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, get_args

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
        """The rungs the study keeps for fused members before any result; None when nothing
        is stopped early."""

    def tune_scheduler(self) -> Any:
        """Tune's scheduler for unfused trials (ranked by the study's metric), or None."""


@dataclass(frozen=True)
class Unscheduled:
    """Every trial trains all its epochs."""

    @property
    def stop_epochs(self) -> frozenset[int]:
        return frozenset()

    def rungs(self) -> Rungs | None:
        return None

    def tune_scheduler(self) -> Any:
        return None


@dataclass(frozen=True)
class Asha:
    """Asynchronous successive halving (Li et al. 2020) with one bracket, as Tune's
    ``ASHAScheduler`` runs it: at each milestone a trial goes on only if it is in the best
    ``1 / reduction_factor`` of the trials that reached it before."""

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

    def tune_scheduler(self) -> Any:
        from ray.tune.schedulers import ASHAScheduler

        return ASHAScheduler(time_attr="epoch", max_t=self.max_t, grace_period=self.grace_period,
                             reduction_factor=self.reduction_factor)


SCHEDULES: dict[str, Callable[[SchedulerSpec, int, Mode], Schedule]] = {
    "none": lambda spec, epochs, mode: Unscheduled(),
    "asha": Asha.from_spec,
}


def build_schedule(spec: SchedulerSpec, epochs: int, mode: Mode) -> Schedule:
    """The schedule of a study whose trials train ``epochs`` epochs."""
    return SCHEDULES[spec.type](spec, epochs, mode)
