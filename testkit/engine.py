"""The container engine the compose test drives: one already running, or a private dockerd.

A running engine (DOCKER_HOST, else /var/run/docker.sock) is used as it is and never stopped.
Otherwise, as root with Debian's docker.io installed, a private dockerd is started with its own
socket, data root and config under ENGINE_HOME, so images built for the tests (stand-ins tagged
with real image names, see testkit/standins) never land in a developer's own engine. It runs
without NAT or IP forwarding (`--iptables=false --ip-forward=false --ip-masq=false
--bridge=none`): containers reach their compose network and ports published on loopback only.
A private engine is stopped by PID when the session ends. One session at a time holds a lock, so
two test runs on one machine take turns instead of stopping each other's engine.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from testkit.procs import Daemon

ENGINE_HOME = Path(os.environ.get("RATESVC_ENGINE_HOME", "/var/lib/ratesvc-compose"))
RUN_DIR = Path(os.environ.get("RATESVC_ENGINE_RUN_DIR", "/run/ratesvc-compose"))
DEFAULT_SOCKET = Path("/var/run/docker.sock")
LOCK_PATH = Path(tempfile.gettempdir()) / "ratesvc-compose.lock"
DOCKERD_FLAGS = (
    "--iptables=false",
    "--ip-forward=false",
    "--ip-masq=false",
    "--bridge=none",
    "--storage-driver=overlay2",
)
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


class EngineUnavailable(RuntimeError):
    """No engine runs and none can be started here; the message says why."""


@dataclass
class Engine:
    """A reachable Docker engine and how to talk to it."""

    docker: str  # the docker client
    host: str  # DOCKER_HOST for every client (docker, compose)
    private: bool  # started (or adopted) by this harness, stopped at the end
    version: str = ""
    started_s: float = 0.0  # how long starting it took (0 when it was running already)
    pid: int | None = None  # the private dockerd's PID
    daemon: Daemon | None = field(default=None, repr=False)

    def env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """`base` (default os.environ) pointing every client at this engine."""
        env = dict(os.environ if base is None else base)
        env["DOCKER_HOST"] = self.host
        return env

    def run(
        self, *args: str, timeout_s: float = 120.0, check: bool = True, input_bytes=None
    ) -> subprocess.CompletedProcess:
        """`docker ARGS` against this engine; raises with its output when it fails and `check`."""
        result = subprocess.run(
            [self.docker, *args],
            env=self.env(),
            input=input_bytes,
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"docker {' '.join(args)} failed ({result.returncode}):\n"
                + (result.stdout + result.stderr).decode(errors="replace")[-3000:]
            )
        return result

    def text(self, *args: str, timeout_s: float = 120.0) -> str:
        """stdout of `docker ARGS` (which must succeed), stripped."""
        return self.run(*args, timeout_s=timeout_s).stdout.decode().strip()

    def describe(self) -> str:
        """One line: which engine, started or found."""
        kind = "private dockerd (started by the test)" if self.private else "running engine"
        return f"{kind} {self.version} at {self.host}"


def docker_client() -> str | None:
    """The docker CLI, if installed."""
    return shutil.which("docker")


def server_version(docker: str, host: str) -> str | None:
    """The engine's version if one answers at `host`, else None."""
    try:
        probe = subprocess.run(
            [docker, "version", "--format", "{{.Server.Version}}"],
            env={**os.environ, "DOCKER_HOST": host},
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return None
    return probe.stdout.strip() if probe.returncode == 0 and probe.stdout.strip() else None


def running_engine() -> Engine | None:
    """The engine a developer runs (DOCKER_HOST, else the default socket), if it answers."""
    docker = docker_client()
    if docker is None:
        return None
    host = os.environ.get("DOCKER_HOST") or f"unix://{DEFAULT_SOCKET}"
    version = server_version(docker, host)
    return Engine(docker, host, private=False, version=version) if version else None


def private_host() -> str:
    """DOCKER_HOST of the private engine."""
    return f"unix://{RUN_DIR / 'docker.sock'}"


def start_private_engine() -> Engine:
    """Start (or adopt a leftover of) the private dockerd; EngineUnavailable when impossible."""
    docker, dockerd = docker_client(), shutil.which("dockerd")
    if docker is None or dockerd is None:
        raise EngineUnavailable(
            "no Docker engine runs and docker.io is not installed (apt-get install docker.io)"
        )
    if os.geteuid() != 0:
        raise EngineUnavailable("no Docker engine runs and starting dockerd needs root")
    host = private_host()
    pidfile = RUN_DIR / "dockerd.pid"
    version = server_version(docker, host)
    if version:  # left running by an interrupted session (we hold the lock): ours to stop
        return Engine(docker, host, private=True, version=version, pid=_read_pid(pidfile))
    ENGINE_HOME.mkdir(parents=True, exist_ok=True)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    config = ENGINE_HOME / "daemon.json"
    config.write_text("{}\n", encoding="utf-8")  # ignore /etc/docker/daemon.json
    args = [
        dockerd,
        *DOCKERD_FLAGS,
        f"--config-file={config}",
        f"--data-root={ENGINE_HOME / 'docker'}",
        f"--exec-root={RUN_DIR / 'exec'}",
        f"--pidfile={pidfile}",
        f"--host={host}",
    ]
    began = time.monotonic()
    daemon = Daemon("dockerd", args, env=os.environ, workdir=ENGINE_HOME).start()
    deadline = began + START_TIMEOUT_S
    while time.monotonic() < deadline:
        version = server_version(docker, host)
        if version:
            return Engine(
                docker,
                host,
                private=True,
                version=version,
                started_s=time.monotonic() - began,
                pid=daemon.pid,
                daemon=daemon,
            )
        if not daemon.alive:
            break
        time.sleep(0.1)
    daemon.stop(timeout_s=10)
    raise EngineUnavailable(f"dockerd did not start:\n{daemon.tail(2000)}")


def stop_private_engine(engine: Engine) -> None:
    """SIGTERM the private dockerd by its PID and wait for it (SIGKILL after STOP_TIMEOUT_S)."""
    if not engine.private:
        return
    if engine.daemon is not None:
        engine.daemon.stop(timeout_s=STOP_TIMEOUT_S)
        return
    if engine.pid is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(engine.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline and Path(f"/proc/{engine.pid}").exists():
            time.sleep(0.1)
        if Path(f"/proc/{engine.pid}").exists():
            os.kill(engine.pid, signal.SIGKILL)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def engine_lock(timeout_s: float) -> Iterator[float]:
    """Hold the machine-wide compose-test lock; yields how long it took to get it."""
    LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    with LOCK_PATH.open("a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() - began > timeout_s:
                    raise TimeoutError(
                        f"another compose test run held {LOCK_PATH} for {timeout_s:.0f} s"
                    ) from None
                time.sleep(1.0)
        try:
            yield time.monotonic() - began
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
