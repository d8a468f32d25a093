"""`ratesvc run`: the whole service as one process tree.

Starts embedded Redis/Postgres for whichever of REDIS_URL / DATABASE_URL is unset (data kept under
DATA_DIR, so history survives a restart), applies migrations, then runs the collector, persister
and API as child processes (`python -m ratesvc <role>`), restarting a child that dies. With
`--sim` the bundled simulator is one more child and the collector is pointed at it (offline.py).
Ctrl-C or SIGTERM stops the children, then the embedded servers, leaving no process behind.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from loguru import logger

from ratesvc.offline import SimPorts, sim_data_dir
from ratesvc.settings import Settings, reveal

if TYPE_CHECKING:
    from ratesvc.embedded import Servers

ROLES = ("persister", "collector", "api")
SIM_START_ATTEMPTS = 3  # another process may take a port between our check and the sim's bind
RESTART_MAX_S = 30.0
STOP_GRACE_S = 10.0


@dataclass
class Child:
    """One role process and its restart bookkeeping."""

    role: str
    argv: list[str]
    env: dict[str, str] = field(repr=False)  # holds REDIS_URL and DATABASE_URL
    proc: subprocess.Popen | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = field(default=0.0)

    @property
    def alive(self) -> bool:
        """Started and not exited."""
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Spawn the role in its own session, so the terminal's Ctrl-C reaches only us."""
        self.proc = subprocess.Popen(  # pylint: disable=consider-using-with
            self.argv, env=self.env, start_new_session=True
        )
        self.started_at = time.monotonic()
        logger.info("started {role} (pid {pid})", role=self.role, pid=self.proc.pid)

    def poll_restart(self) -> None:
        """Restart a child that exited, with capped exponential backoff."""
        if self.proc is None or self.proc.poll() is None:
            return
        now = time.monotonic()
        if self.next_start == 0.0:
            if now - self.started_at > 60:
                self.restarts = 0  # it ran fine for a while: start the backoff afresh
            delay = min(RESTART_MAX_S, 0.5 * 2**self.restarts)
            logger.error(
                "{role} exited with code {code}; restarting in {delay:.1f}s",
                role=self.role,
                code=self.proc.returncode,
                delay=delay,
            )
            self.next_start = now + delay
        elif now >= self.next_start:
            self.restarts += 1
            self.next_start = 0.0
            self.start()

    def terminate(self) -> None:
        """Ask the child to stop (SIGTERM)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait_or_kill(self, deadline: float) -> None:
        """Wait for the child until `deadline`, then SIGKILL it."""
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            logger.warning("{role} did not stop in time; killing it", role=self.role)
            self.proc.kill()
            self.proc.wait()


def _child_env(
    settings: Settings, redis_url: str, database_url: str, host: str, port: int
) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        REDIS_URL=redis_url,
        DATABASE_URL=database_url,
        API_HOST=host,
        API_PORT=str(port),
        LOG_LEVEL=settings.log_level,
        PYTHONUNBUFFERED="1",
    )
    # One consumer name for every persister this run starts: a restarted persister re-reads the
    # entries its predecessor left pending at once instead of waiting for the claim idle time.
    env.setdefault("PERSISTER_CONSUMER", f"run-{socket.gethostname()}-{os.getpid()}")
    return env


def _argv(env_file: Path | None, *args: str) -> list[str]:
    argv = [sys.executable, "-m", "ratesvc"]
    if env_file is not None:
        argv += ["--env-file", str(env_file)]
    return argv + list(args)


def _print_banner(
    host: str, port: int, servers: Servers, settings: Settings, extra: list[str] | None = None
) -> None:
    """Where everything listens; URLs are printed with their passwords masked."""
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    base = f"http://{shown_host}:{port}"
    lines = [
        "ratesvc is running:",
        f"  rates     {base}/courses   (versioned: {base}/v1/courses)",
        f"  docs      {base}/docs",
        f"  health    {base}/health  {base}/ready",
        f"  metrics   {base}/metrics  collector :{settings.collector_metrics_port}"
        f"  persister :{settings.persister_metrics_port}",
    ]
    for line in servers.describe():
        kind, _, where = line.partition(": ")
        lines.append(f"  {kind:<9} {where}")
    lines += extra or []
    lines.append("Press Ctrl-C to stop.")
    print("\n".join(lines), flush=True)


class Stopping:
    """Set by SIGINT/SIGTERM: the supervision loop and every wait check it."""

    def __init__(self) -> None:
        self.requested = False
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        logger.info("received {sig}, stopping", sig=signal.Signals(signum).name)
        self.requested = True


def _start_sim(
    env: dict[str, str], env_file: Path | None, stop: Stopping
) -> tuple[Child, SimPorts] | None:
    """Start `ratesvc sim` as a child and wait until it answers; other ports if its bind fails.

    None when a stop was requested meanwhile.
    """
    for attempt in range(1, SIM_START_ATTEMPTS + 1):
        ports = SimPorts.pick(prefer_defaults=attempt == 1)
        child = Child("sim", _argv(env_file, *ports.args()), env)
        child.start()
        serving = False
        try:
            serving = ports.wait(alive=lambda c=child: c.alive, stopping=lambda: stop.requested)
        finally:
            if not serving:  # failed, timed out or interrupted: never leave it behind
                child.terminate()
                child.wait_or_kill(time.monotonic() + STOP_GRACE_S)
        if serving:
            return child, ports
        if stop.requested:
            return None
    raise RuntimeError("the simulator did not start (see its log lines above)")


def _supervise(children: list[Child], stop: Stopping) -> None:
    """Restart children that die, until a stop is requested."""
    while not stop.requested:
        for child in children:
            child.poll_restart()
        time.sleep(0.2)


def _stop_all(children: list[Child]) -> None:
    """Stop every child, newest first (SIGTERM, then SIGKILL after the grace period)."""
    for child in reversed(children):
        child.terminate()
    deadline = time.monotonic() + STOP_GRACE_S
    for child in children:
        child.wait_or_kill(deadline)
    logger.info("all roles stopped")


def _servers_wanted(settings: Settings, *, sim: bool) -> tuple[Path, str | None, str | None]:
    """(data dir, REDIS_URL, DATABASE_URL) for ensure_servers; None = embedded.

    An offline run always uses embedded servers of its own: simulated prices never reach a real
    database, nor the history of a real run.
    """
    if not sim:
        return settings.data_dir, reveal(settings.redis_url), reveal(settings.database_url)
    if settings.redis_url or settings.database_url:
        logger.warning("--sim ignores REDIS_URL and DATABASE_URL: simulated prices stay apart")
    return sim_data_dir(settings.data_dir), None, None


def run_all(
    settings: Settings,
    *,
    host: str | None,
    port: int | None,
    env_file: Path | None,
    sim: bool = False,
) -> int:
    """Run every role (and the simulator, with `sim`) until SIGINT/SIGTERM; the exit code."""
    # pylint: disable=import-outside-toplevel
    from ratesvc.embedded import ensure_servers
    from ratesvc.store.db import migrate

    host = host or settings.api_host
    port = port or settings.api_port
    stop = Stopping()
    data_dir, redis_url, database_url = _servers_wanted(settings, sim=sim)
    with ensure_servers(data_dir, redis_url=redis_url, database_url=database_url) as servers:
        asyncio.run(migrate(servers.database_url))
        env = _child_env(settings, servers.redis_url, servers.database_url, host, port)
        children: list[Child] = []
        extra: list[str] = []
        try:
            if sim:
                started = _start_sim(env, env_file, stop)
                if started is None:
                    return 130  # interrupted while the simulator was starting
                children.append(started[0])
                env |= started[1].env(os.environ)
                extra = started[1].banner()
            for role in ROLES:
                children.append(Child(role, _argv(env_file, role), env))
                children[-1].start()
            _print_banner(host, port, servers, settings, extra)
            _supervise(children, stop)
        finally:
            _stop_all(children)
    return 0
