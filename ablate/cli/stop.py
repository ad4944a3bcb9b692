"""How ``ablate run`` is stopped: Ctrl-C (SIGINT) and SIGTERM alike.

SLURM, Kubernetes and ``kill`` send SIGTERM; a terminal sends SIGINT. Both end the study the
same way: while Tune runs, its own SIGINT handler stops it after a last snapshot of its state
(so the next run resumes exactly); before or after that, the work in hand is abandoned through
``KeyboardInterrupt``. The exit status is the shell's for the signal: 130 or 143. ``ablate
run`` installs this as its first step, and keeps it in force while Ray starts
(:func:`ablate.engine.raycluster.connect_ray`), so a stop is handled alike from the start; a
signal to the whole process group reaches the driver alone, since a local Ray's processes run
in a session of their own.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

EXIT_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}


@dataclass
class Stop:
    """The signal that stopped the command (SIGINT unless SIGTERM arrived)."""

    signum: int = signal.SIGINT

    @property
    def exit_status(self) -> int:
        return EXIT_STATUS[self.signum]


@contextmanager
def graceful_stop() -> Iterator[Stop]:
    """Routes SIGTERM to what SIGINT does at that moment, and records which one came."""
    stop = Stop()

    def on_sigterm(signum: int, frame) -> None:
        stop.signum = signum
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler) and handler is not signal.default_int_handler:
            handler(signal.SIGINT, frame)  # Tune's graceful stop
        else:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGTERM, previous)
