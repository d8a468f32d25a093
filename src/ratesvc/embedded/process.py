"""Process helpers of the embedded servers: ports, liveness, signals, binaries, log tails."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable

from loguru import logger

from ratesvc.errors import RatesvcError

LOCALHOST = "127.0.0.1"
PORT_ATTEMPTS = 3  # an auto-picked port can be taken between picking and binding: retry


class EmbeddedServerError(RatesvcError):
    """An embedded server could not be started or is misconfigured."""


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port that is free on `host` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def package_dir(name: str, *, needed_for: str) -> Path:
    """The directory of installed package `name`, without importing it.

    When it is missing, the error says which variable points the service at an external server
    instead.
    """
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        variable = "REDIS_URL" if needed_for == "Redis" else "DATABASE_URL"
        raise EmbeddedServerError(
            f"an embedded {needed_for} needs the Python package {name!r}, which is not "
            f"installed: install it, or set {variable} to an external server"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def wait_for(check: Callable[[], bool], *, timeout_s: float, interval_s: float = 0.05) -> bool:
    """Poll `check` until it returns True (-> True) or `timeout_s` passes (-> False)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def pid_alive(pid: int) -> bool:
    """Whether process `pid` is running; an exited one awaiting its reaper (zombie) is not."""
    with contextlib.suppress(ChildProcessError):
        # When we are a subreaper/PID 1 an orphaned postmaster becomes our child; reap its zombie.
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    # The daemonized postmaster is re-parented to PID 1, which in containers may reap it late.
    with contextlib.suppress(OSError, IndexError):
        state = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
        return state.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def cmdline(pid: int) -> str:
    """The command line of `pid` ('' if gone); guards against acting on a recycled pid."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return ""
    except OSError:
        return ""
    done = subprocess.run(["ps", "-p", str(pid), "-o", "args="], capture_output=True, check=False)
    return done.stdout.decode(errors="replace")


def kill_pid(pid: int, *, timeout_s: float, first: signal.Signals = signal.SIGTERM) -> None:
    """Send `first`, wait up to `timeout_s` for `pid` to exit, then SIGKILL it."""
    for sig, wait_s in ((first, timeout_s), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if wait_for(lambda: not pid_alive(pid), timeout_s=wait_s):
            return
    logger.error("process {pid} survived SIGKILL", pid=pid)


def log_tail(path: Path, lines: int = 15) -> str:
    """The last `lines` lines of a server log, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"
