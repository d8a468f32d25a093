"""End-to-end harness: `ratesvc sim` and `ratesvc run` as real subprocesses on free ports.

Fixtures are re-exported by tests/e2e/conftest.py; helpers are imported from here.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_sync

from ratesvc.embedded import free_port
from testkit.market import EXPECTED, PRICES  # noqa: F401  pylint: disable=unused-import
from testkit.procs import Daemon

START_TIMEOUT_S = 60.0


def wait_until(predicate: Callable[[], Any], *, timeout_s: float = 30.0, what: str = "") -> Any:
    """Poll `predicate` until it returns something truthy; fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except (httpx.HTTPError, OSError, KeyError, ValueError) as err:
            last_error = err
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what or predicate} (last error: {last_error})")


class Sim:
    """Client for a running `ratesvc sim` (control API)."""

    def __init__(self, binance_port: int, coingecko_port: int) -> None:
        self.binance_port, self.coingecko_port = binance_port, coingecko_port
        self.control = httpx.Client(base_url=f"http://127.0.0.1:{binance_port}/_sim", timeout=5)

    def env(self) -> dict[str, str]:
        """Settings that point ratesvc at this simulator."""
        return {
            "BINANCE_WS_URL": f"ws://127.0.0.1:{self.binance_port}",
            "BINANCE_REST_URL": f"http://127.0.0.1:{self.binance_port}",
            "COINGECKO_API_URL": f"http://127.0.0.1:{self.coingecko_port}/api/v3",
        }

    def post(self, path: str, body: dict) -> dict:
        """POST to the control API and return its JSON answer."""
        response = self.control.post(path, json=body)
        response.raise_for_status()
        return response.json()

    def fault(self, target: str, kind: str, **params: Any) -> dict:
        """Inject a fault."""
        return self.post("/fault", {"target": target, "kind": kind, **params})

    def clear(self) -> dict:
        """Clear every fault."""
        return self.post("/clear", {})


@pytest.fixture(name="sim", scope="module")
def sim_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    """A `ratesvc sim` subprocess for the module, reset before use."""
    workdir = tmp_path_factory.mktemp("sim")
    ports = free_port(), free_port()
    proc = Daemon.ratesvc(
        "sim",
        ["sim", "--binance-port", str(ports[0]), "--coingecko-port", str(ports[1])],
        env={**os.environ, "LOG_LEVEL": "INFO"},
        workdir=workdir,
    ).start()
    sim = Sim(*ports)
    try:
        wait_until(lambda: sim.control.get("/state").status_code == 200, what="sim up")
        yield sim
    finally:
        proc.stop(strict=True)


class Service:
    """A running `ratesvc run` and an HTTP client for its API."""

    def __init__(self, proc: Daemon, port: int) -> None:
        self.proc, self.port = proc, port
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5)

    def courses(self, **params: Any) -> httpx.Response:
        """GET /courses with query parameters."""
        return self.http.get("/courses", params=params)

    def values(self, exchanger: str) -> dict[str, str]:
        """direction -> value text, as that exchanger serves it now."""
        body = self.courses(exchanger=exchanger).json()
        return {c["direction"]: str(c["value"]) for c in body["courses"]}


def service_env(
    sim: Sim, redis_url: str | None, database_url: str | None, data_dir: Path, **extra: str
) -> dict[str, str]:
    """Environment for `ratesvc run` against the simulator, with test-friendly cadences."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("REDIS_URL", "DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR")
    }
    env.update(sim.env())
    env.update(
        DATA_DIR=str(data_dir),
        LOG_LEVEL="INFO",
        COLLECTOR_METRICS_PORT="0",
        PERSISTER_METRICS_PORT="0",
        COINGECKO_POLL_INTERVAL_S="1",
        COINGECKO_ACTIVE_POLL_INTERVAL_S="1",
        COINGECKO_CALLS_PER_MONTH="100000000",  # the simulator has no quota
        FAILBACK_HOLD_DOWN_S="2",
        PUBLISH_MIN_INTERVAL_MS="50",
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    if database_url:
        env["DATABASE_URL"] = database_url
    env.update(extra)
    return env


def start_service(env: dict[str, str], workdir: Path) -> Service:
    """Start `ratesvc run` on a free port and wait until /health answers."""
    port = free_port()
    proc = Daemon.ratesvc("run", ["run", "--port", str(port)], env=env, workdir=workdir).start()
    service = Service(proc, port)
    try:
        wait_until(
            lambda: service.http.get("/health").status_code == 200,
            timeout_s=START_TIMEOUT_S,
            what="ratesvc run to answer /health",
        )
    except AssertionError:
        proc.stop(strict=True)
        raise AssertionError(f"ratesvc run did not start:\n{proc.tail(4000)}") from None
    return service


def numeric(values: dict[str, str]) -> dict[str, Decimal]:
    return {k: Decimal(v) for k, v in values.items()}


@pytest.fixture(name="service", scope="module")
def service_fixture(
    sim: Sim, redis_url: str, database_url: str, tmp_path_factory
) -> Iterator[Service]:
    """One `ratesvc run` for the module, on the session's Redis and Postgres."""
    sim.post("/reset", {})
    sim.post("/prices", PRICES)
    redis_sync.Redis.from_url(redis_url).flushdb()
    workdir = tmp_path_factory.mktemp("run")
    service = start_service(service_env(sim, redis_url, database_url, workdir / "data"), workdir)
    try:
        yield service
    finally:
        service.proc.stop(strict=True)


def all_served(service: Service, exchanger: str, *, expected: bool = True) -> bool:
    """True when `exchanger` serves all eight directions (the EXPECTED values if `expected`)."""
    response = service.courses(exchanger=exchanger)
    if response.status_code != 200:
        return False
    values = numeric({c["direction"]: str(c["value"]) for c in response.json()["courses"]})
    if not expected:
        return len(values) == 8
    return values == numeric(EXPECTED[exchanger])
