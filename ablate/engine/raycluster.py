"""Connecting the driver to Ray: a local Ray, or an existing cluster and its token.

Ray 2.60's ``ray start`` turns token authentication on whenever it finds a token
(``~/.ray/auth_token``, ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``); every process that joins
or connects must then present it. A driver given an address sends one only with
``RAY_AUTH_MODE=token``, and a driver in that mode refuses the workers of a cluster without
authentication, so the mode must follow the cluster. Ray reads the mode once, when first
imported: :func:`token_check` asks the cluster from a subprocess (``ray status``, which fails
at once with an authentication error), so the caller can set the mode before that.

Given an address where nothing answers, ``ray.init`` (and ``ray status``) wait minutes, printing
Ray's C++ warnings; :func:`check_reachable` resolves the host and connects to the port first,
with a timeout, so such an address is one line within seconds.
"""

from __future__ import annotations

import enum
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ablate.errors import AblateError

RAY_UNREACHABLE = "cannot connect to the Ray cluster at {address}: {problem}"
NOTHING_THERE = ("cannot connect to the Ray cluster at {address}: {problem}; check --address "
                 "(or RAY_ADDRESS: the head's HOST:PORT, 6379 by default) and that the cluster "
                 "runs (`ray status` on its head)")
RAY_CLIENT_MISSING = ("--address {address} connects through Ray Client, which is not "
                      "installed: pip install \"ray[client]\" (or give the head's HOST:PORT, "
                      "6379 by default, from a machine of the cluster)")
REACH_SECONDS = 5.0  # to resolve a cluster's host, and again to connect to its port
CLIENT_PORT = 10001  # Ray Client's default
RAY_TOKEN = ("the Ray cluster at {address} checks a token and this machine has {which}; copy "
             "the token of its head (~/.ray/auth_token there) to ~/.ray/auth_token here, or "
             "set RAY_AUTH_TOKEN")
PROBE_SECONDS = 30


class TokenCheck(enum.Enum):
    OPEN = "open"  # no token needed, or the cluster could not be asked
    ACCEPTED = "accepted"  # a token is needed, and this machine's is accepted
    MISSING = "missing"  # a token is needed, and this machine has none
    REFUSED = "refused"  # a token is needed, and this machine's is another one


def _refuses(address: str, mode: str | None) -> bool:
    """Whether ``ray status`` against ``address`` fails authentication in ``mode``."""
    import shutil
    import sys
    from pathlib import Path

    ray = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    if ray is None:
        return False
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    if mode is not None:
        env["RAY_AUTH_MODE"] = mode
    try:
        probe = subprocess.run([ray, "status", "--address", address], capture_output=True,
                               text=True, timeout=PROBE_SECONDS, env=env,
                               stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode != 0 and "AuthenticationError" in probe.stdout + probe.stderr


def has_token() -> bool:
    """Whether this machine has a Ray token where Ray looks for one."""
    from pathlib import Path

    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token"
    return bool(os.environ.get("RAY_AUTH_TOKEN")) or Path(path).is_file()


def token_check(address: str) -> TokenCheck:
    """Whether the cluster at ``address`` checks a token, and this machine's standing."""
    if not _refuses(address, None):
        return TokenCheck.OPEN
    if not has_token():
        return TokenCheck.MISSING
    return TokenCheck.REFUSED if _refuses(address, "token") else TokenCheck.ACCEPTED


def connect_ray(address: str | None) -> None:
    """Starts a local Ray, or connects to the cluster at ``address`` (else ``RAY_ADDRESS``).

    A Ray this process already started or joined (a notebook's, the test suite's) is used as
    it is, whatever ``address`` says. A local Ray's processes get a session of their own
    (:func:`_own_session`). A stop while Ray starts is handed to the caller's handlers of
    SIGINT and SIGTERM once it has started.

    Raises:
        AblateError: The cluster does not answer or refuses this driver.
    """
    import ray
    from ray.exceptions import AuthenticationError

    if ray.is_initialized():
        return
    target = address or os.environ.get("RAY_ADDRESS") or "local"
    check_reachable(target)
    try:
        with _own_session(target == "local"), _keep_stop_handlers():
            ray.init(address=target, include_dashboard=False, log_to_driver=False,
                     logging_level="ERROR", configure_logging=True)
    except AuthenticationError:  # token mode, and no token here
        raise AblateError(RAY_TOKEN.format(address=target, which="none")) from None
    except ConnectionError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise AblateError(RAY_UNREACHABLE.format(address=target, problem=first[:200])) from None


@contextmanager
def _keep_stop_handlers() -> Iterator[None]:
    """Holds a stop (SIGINT, SIGTERM) that arrives while Ray starts, and hands it to the
    caller's handler once Ray has started.

    Ray's own SIGTERM handlers (exit at once with status 15 or 1, whatever is being written)
    are not installed; an exception raised inside ``ray.init`` may be swallowed there, and one
    raised in a process Ray has forked but not yet executed ends that process instead.
    """
    import threading

    from ray._private import utils

    if threading.current_thread() is not threading.main_thread():  # no handlers to keep
        yield
        return
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    held: list[int] = []
    install = utils.set_sigterm_handler
    utils.set_sigterm_handler = lambda handler: None
    for signum in handlers:
        signal.signal(signum, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        utils.set_sigterm_handler = install
        for signum, handler in handlers.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
    if held and callable(handler := handlers[held[0]]):
        handler(held[0], None)
    elif held:
        signal.raise_signal(held[0])


@contextmanager
def _own_session(local: bool) -> Iterator[None]:
    """Starts the processes of a local Ray (GCS, raylet, and through the raylet the trial
    workers) in a session of their own, as Ray itself does on Windows.

    SLURM and container runtimes stop a job by signalling its whole process group: Ray's
    processes in the driver's group would die at once, and the driver, left without its GCS,
    could neither stop Tune nor record anything. In their own session they outlive the signal
    while the driver stops the study; the kernel still ends them with the driver (Ray's
    fate-sharing), so they are never left behind. Without that fate-sharing (not Linux) Ray's
    reaper needs them in the driver's group, and they stay there.
    """
    from ray._private import services, utils

    if not local or not utils.detect_fate_sharing_support():
        yield
        return
    popen = services.ConsolePopen

    class SessionPopen(popen):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **{**kwargs, "start_new_session": True})

    services.ConsolePopen = SessionPopen
    try:
        yield
    finally:
        services.ConsolePopen = popen


def check_reachable(address: str) -> None:
    """Fails in seconds, with one line, where Ray would wait minutes: a cluster address whose
    host does not resolve or whose port nothing listens on, or a ``ray://`` address without
    Ray Client installed. ``local``, ``auto`` and addresses without a port are Ray's to read.

    Raises:
        AblateError: Naming the address, the problem and what to do.
    """
    import importlib.util

    if address in ("local", "auto"):
        return
    client = address.startswith("ray://")
    if client and importlib.util.find_spec("grpc") is None:
        raise AblateError(RAY_CLIENT_MISSING.format(address=address))
    host, _, port = address.removeprefix("ray://").rstrip("/").rpartition(":")
    if client and not host:
        host, port = port, str(CLIENT_PORT)
    host = host.strip("[]")  # [::1]:6379
    if not host or not port.isdigit():
        return
    problem = _unreachable(host, int(port))
    if problem:
        raise AblateError(NOTHING_THERE.format(address=address, problem=problem))


def _unreachable(host: str, port: int) -> str | None:
    """Why nothing answers at ``host:port`` (None: something listens there)."""
    import socket
    from concurrent.futures import ThreadPoolExecutor
    from concurrent.futures import TimeoutError as Late

    # getaddrinfo has no timeout of its own: a slow resolver is waited for in a thread
    pool = ThreadPoolExecutor(1, thread_name_prefix="ray-address")
    try:
        found = pool.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
        addresses = found.result(timeout=REACH_SECONDS)
    except Late:
        return f"the host {host} did not resolve within {REACH_SECONDS:g} s"
    except (socket.gaierror, UnicodeError) as exc:
        return f"the host {host} does not resolve ({getattr(exc, 'strerror', None) or exc})"
    finally:
        pool.shutdown(wait=False)
    problem = None
    for family, kind, proto, _, target in addresses[:3]:  # at most 3 x REACH_SECONDS
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.settimeout(REACH_SECONDS)
                probe.connect(target)
            return None
        except OSError as exc:
            problem = (f"nothing answers on port {port} of {host} "
                       f"({exc.strerror or 'timed out'})")
    return problem
