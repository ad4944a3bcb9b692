"""The study's ASHA rungs at run time: one Ray actor that every Tune trial asks after each epoch,
and that writes the rungs to the study directory before a trial acts on a decision.

Tune runs no scheduler of its own for a study with ASHA (a FIFO one): the trials stop
themselves on the answers of this actor (:class:`~ablate.engine.trainable.RungsDecision`), fused
or not, so one implementation of the rungs exists and one snapshot of it (``rungs.json``) makes
a resume exact. How it decides, and why in the trials' order, is in :mod:`ablate.study.rungs`.

The driver tells the actor the Tune trials in the order Tune created them, and their states, as
they change (:meth:`RungsKeeper.observe`): the order the rungs compare them in, and which trials
ended. A trial waits at a milestone for the trials before it; one that Tune cannot start (a
cluster that lost the resources for it, while the trials after it hold theirs) is waited for at
most :data:`STALL_SECONDS`, so a study never hangs on it.
"""

from __future__ import annotations

import time
from typing import Any

from ablate.study.record import DONE, FAILED, RUNNING
from ablate.study.rungs import Rungs
from ablate.study.storage import StudyDir

STALL_SECONDS = 120.0  # how long a trial waits for an earlier one that Tune does not run
ENDED = (DONE, FAILED)


class RungsKeeper:
    """The body of the rungs actor: the study's :class:`Rungs`, the Tune trials' states as the
    driver last saw them, and the snapshot in ``rungs.json``.

    Args:
        rungs: The rungs to start from (a fresh study's, or its snapshot).
        study_dir: Where the snapshot is written.
    """

    def __init__(self, rungs: Rungs, study_dir: StudyDir) -> None:
        self.rungs = rungs
        self.study_dir = study_dir
        self.states: dict[str, str] = {}
        self.idle_since = dict.fromkeys(rungs.order, time.monotonic())  # not running since

    def observe(self, states: list[tuple[str, str]]) -> None:
        """The planned trials of Tune's trials, in the order Tune created them, each with the
        state of its record (:mod:`ablate.study.record`)."""
        now = time.monotonic()
        for key, state in states:
            if state == RUNNING:
                self.idle_since.pop(key, None)
            else:
                self.idle_since.setdefault(key, now)
            self.states[key] = state
        if self.rungs.register([key for key, _ in states]):
            self._persist()

    def ask(self, results: dict[str, tuple[int, float | None, bool]]) -> tuple[list[str],
                                                                                list[str]]:
        """Decides the results of the trials that need wait for none before them.

        Args:
            results: Per trial key, (epoch, metric value, whether that epoch is the trial's
                last: nothing there changes what it trains, so it waits for no one).

        Returns:
            (the trials stopped, the trials to ask again: those still waiting).
        """
        order = {key: i for i, key in enumerate(self.rungs.order)}
        ready, waiting = {}, []
        for key in sorted(results, key=lambda k: order.get(k, len(order))):
            epoch, value, last = results[key]
            if last or not self._blocked(key, epoch):
                ready[key] = (epoch, value)
            else:
                waiting.append(key)
        before = self._size()
        stopped = self.rungs.decide_all(ready)
        if self._size() != before:
            self._persist()  # before the trial acts on it: a resume makes no decision again
        return stopped, waiting

    def stopped_at(self, epochs: dict[str, int]) -> list[str]:
        """:meth:`Rungs.stopped_at`: the trials to train no further."""
        return self.rungs.stopped_at(epochs)

    def snapshot(self) -> dict[str, Any]:
        return self.rungs.to_json()

    def _blocked(self, key: str, epoch: int) -> bool:
        ended = frozenset(k for k, s in self.states.items() if s in ENDED)
        now = time.monotonic()
        return any(k == key or now - self.idle_since.get(k, now) < STALL_SECONDS
                   for k in self.rungs.waits_for(key, epoch, ended))

    def _size(self) -> tuple[int, int]:
        return sum(map(len, self.rungs.recorded.values())), len(self.rungs.stopped)

    def _persist(self) -> None:
        self.study_dir.write_rungs(self.rungs.to_json())
