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
    it is, whatever ``address`` says.

    Raises:
        AblateError: The cluster does not answer or refuses this driver.
    """
    import ray
    from ray.exceptions import AuthenticationError

    if ray.is_initialized():
        return
    target = address or os.environ.get("RAY_ADDRESS") or "local"
    check_reachable(target)
    # ray.init installs its own SIGTERM handler (exit at once, whatever is being written);
    # the caller's choice of how to stop stands.
    handler = signal.getsignal(signal.SIGTERM)
    try:
        ray.init(address=target, include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR", configure_logging=True)
    except AuthenticationError:  # token mode, and no token here
        raise AblateError(RAY_TOKEN.format(address=target, which="none")) from None
    except ConnectionError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise AblateError(RAY_UNREACHABLE.format(address=target, problem=first[:200])) from None
    finally:
        if handler is not None:
            signal.signal(signal.SIGTERM, handler)


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
