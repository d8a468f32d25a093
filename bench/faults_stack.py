"""The system under test of bench/faults.py: own Redis and Postgres, `ratesvc sim`, `ratesvc run`.

Redis and Postgres are EmbeddedRedis / EmbeddedPostgres on fixed free ports and data directories
owned by the benchmark, so a scenario can stop and start them; `ratesvc run` gets REDIS_URL and
DATABASE_URL (so it starts no servers of its own) and fixed COLLECTOR_METRICS_PORT /
PERSISTER_METRICS_PORT, so the collector's `ratesvc_ticks_published_total` can be read.
Only loopback addresses are used; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import redis as redis_sync
from prometheus_client.parser import text_string_to_metric_families

from ratesvc.bus import GROUP, STREAM
from ratesvc.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from testkit.market import PRICES  # the prices the e2e tests expect, one definition
from testkit.procs import Daemon

START_TIMEOUT_S = 90.0
# The service's defaults, except the CoinGecko cadence (stated in the report).
SERVICE_ENV = {
    "COINGECKO_POLL_INTERVAL_S": "5",
    "COINGECKO_ACTIVE_POLL_INTERVAL_S": "5",
    "COINGECKO_CALLS_PER_MONTH": "100000000",  # the simulator has no quota
    "LOG_LEVEL": "INFO",
}
Metrics = dict[str, list[tuple[dict[str, str], float]]]


def wait_for(
    predicate: Callable[[], Any], timeout_s: float, interval_s: float = 0.02
) -> float | None:
    """Seconds until `predicate()` is truthy (errors count as false), None after `timeout_s`."""
    started = time.monotonic()
    deadline = started + timeout_s
    while True:
        try:
            if predicate():
                return time.monotonic() - started
        except (httpx.HTTPError, OSError, redis_sync.RedisError, KeyError, ValueError):
            pass
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval_s)


def until(
    predicate: Callable[[], Any], since: float, timeout_s: float, interval_s: float = 0.02
) -> float | None:
    """Seconds from the monotonic moment `since` until `predicate()` holds (None: timed out)."""
    if wait_for(predicate, timeout_s, interval_s) is None:
        return None
    return time.monotonic() - since


def secs(value: float | None, timeout_s: float | None = None) -> str:
    """'1.23 s', or 'not within N s' for a wait that timed out."""
    if value is None:
        return f"not within {timeout_s:g} s" if timeout_s else "n/a"
    return f"{value:.2f} s"


def parse_metrics(text: str) -> Metrics:
    """Prometheus text -> sample name -> [(labels, value)]."""
    out: Metrics = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return out


def metric(metrics: Metrics | None, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 when absent)."""
    if not metrics:
        return 0.0
    return sum(
        value
        for have, value in metrics.get(name, [])
        if all(have.get(k) == v for k, v in labels.items())
    )


def children_of(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of the direct children of `pid` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append((int(entry.name), cmdline))
    return found


class Stack:  # pylint: disable=too-many-instance-attributes
    """Everything the scenarios act on, with small clients for each part."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        data = workdir / "data"
        self.redis = EmbeddedRedis(data, port=free_port())
        self.postgres = EmbeddedPostgres(data, port=free_port())
        self.ports = {
            name: free_port()
            for name in ("binance", "coingecko", "api", "collector", "persister", "standby")
        }
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("REDIS_URL", "DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR")
        }
        self.env.update(SERVICE_ENV)
        self.env.update(
            BINANCE_WS_URL=f"ws://127.0.0.1:{self.ports['binance']}",
            BINANCE_REST_URL=f"http://127.0.0.1:{self.ports['binance']}",
            COINGECKO_API_URL=f"http://127.0.0.1:{self.ports['coingecko']}/api/v3",
            REDIS_URL=self.redis.url,
            DATABASE_URL=self.postgres.url,
            DATA_DIR=str(data),
            COLLECTOR_METRICS_PORT=str(self.ports["collector"]),
            PERSISTER_METRICS_PORT=str(self.ports["persister"]),
            PYTHONUNBUFFERED="1",
        )
        self.collector_ports = {"run": self.ports["collector"]}
        self.sim: Daemon | None = None
        self.run: Daemon | None = None
        self.extra: list[Daemon] = []
        self.api = httpx.Client(base_url=f"http://127.0.0.1:{self.ports['api']}", timeout=2)
        control = f"http://127.0.0.1:{self.ports['binance']}/_sim"
        self.control = httpx.Client(base_url=control, timeout=5)
        self.http = httpx.Client(timeout=2)
        self.rdb = redis_sync.Redis(
            host="127.0.0.1", port=self.redis.port, decode_responses=True, socket_timeout=3
        )

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Redis, Postgres, the simulator, then `ratesvc run`; waits until binance serves."""
        self.redis.start()
        self.postgres.start()
        ports = ["--binance-port", str(self.ports["binance"])]
        ports += ["--coingecko-port", str(self.ports["coingecko"])]
        self.sim = Daemon.ratesvc(
            "sim", ["sim", *ports], env=self.env, workdir=self.workdir
        ).start()
        if wait_for(lambda: self.control.get("/state").status_code == 200, 30) is None:
            raise RuntimeError(f"ratesvc sim did not start:\n{self.sim.tail(2000)}")
        self.control.post("/reset", json={}).raise_for_status()
        self.control.post("/prices", json=PRICES).raise_for_status()
        args = ["run", "--port", str(self.ports["api"])]
        self.run = Daemon.ratesvc("run", args, env=self.env, workdir=self.workdir).start()
        if wait_for(self.binance_serving, START_TIMEOUT_S, 0.1) is None:
            raise RuntimeError(f"ratesvc run did not serve binance:\n{self.run.tail(2000)}")

    def stop(self) -> None:
        """Stop every process this benchmark started, then the servers."""
        for proc in [*self.extra, self.run, self.sim]:
            if proc is not None:
                proc.stop()
        self.postgres.stop()
        self.redis.stop()

    def spawn(self, name: str, args: list[str], **env: str) -> Daemon:
        """Start another `ratesvc` role beside `ratesvc run` (stopped with the stack)."""
        proc = Daemon.ratesvc(name, args, env={**self.env, **env}, workdir=self.workdir).start()
        self.extra.append(proc)
        return proc

    # ------------------------------------------------------------------ API
    def courses(self, **params: str) -> tuple[int, str, str]:
        """(status, exchanger, X-Rates-Stale) of GET /courses."""
        response = self.api.get("/courses", params=params)
        body = response.json() if response.status_code == 200 else {}
        return (
            response.status_code,
            body.get("exchanger", ""),
            response.headers.get("x-rates-stale", ""),
        )

    def value(self, exchanger: str, direction: str) -> str:
        response = self.api.get("/courses", params={"exchanger": exchanger, "direction": direction})
        return str(response.json()["courses"][0]["value"])

    def binance_serving(self) -> bool:
        return self.courses() == (200, "binance", "false")

    def ready_status(self) -> int:
        return self.api.get("/ready").status_code

    # ------------------------------------------------------------------ simulator
    def fault(self, target: str, kind: str, **params: Any) -> None:
        body = {"target": target, "kind": kind, **params}
        self.control.post("/fault", json=body).raise_for_status()

    def clear(self) -> None:
        self.control.post("/clear", json={}).raise_for_status()

    def counter(self, name: str) -> int:
        """One of the simulator's counters (binance_ws_attempts, coingecko_status_429...)."""
        return int(self.control.get("/state").json()["counters"].get(name, 0))

    def sim_calls(self, target: str) -> list[dict[str, Any]]:
        return self.control.get("/calls", params={"target": target}).json()

    def prices(self, binance: dict[str, str]) -> None:
        self.control.post("/prices", json={"binance": binance}).raise_for_status()

    # ------------------------------------------------------------------ metrics and processes
    def scrape(self, port: int) -> Metrics | None:
        """A role's /metrics, None while it does not answer."""
        try:
            response = self.http.get(f"http://127.0.0.1:{port}/metrics")
        except httpx.HTTPError:
            return None
        return parse_metrics(response.text) if response.status_code == 200 else None

    def collector(self, label: str = "run") -> Metrics | None:
        return self.scrape(self.collector_ports[label])

    def role_pid(self, role: str) -> int | None:
        """Pid of `ratesvc run`'s child running `role` (None while it is being restarted)."""
        assert self.run is not None
        for pid, cmdline in children_of(self.run.pid):
            if cmdline.split()[-1:] == [role]:
                return pid
        return None

    # ------------------------------------------------------------------ Redis and Postgres
    def backlog(self) -> int:
        """Stream entries the persister group has not acked yet: pending + never delivered."""
        pending = int(self.rdb.xpending(STREAM, GROUP)["pending"])
        groups = {g["name"]: g for g in self.rdb.xinfo_groups(STREAM)}
        last = groups[GROUP]["last-delivered-id"]
        undelivered = len(self.rdb.xrange(STREAM, min=f"({last}", max="+", count=100_000))
        return pending + undelivered

    def pending(self) -> int:
        return int(self.rdb.xpending(STREAM, GROUP)["pending"])

    def last_id(self) -> str:
        entries = self.rdb.xrevrange(STREAM, count=1)
        return str(entries[0][0]) if entries else "0-0"

    def entries(self, stream: str, after: str, upto: str) -> list[tuple[str, dict[str, str]]]:
        """Entries of `stream` with after < id <= upto, paged (bounded by the stream's length)."""
        out: list[tuple[str, dict[str, str]]] = []
        cursor = f"({after}"
        for _ in range(1_000):
            page = self.rdb.xrange(stream, min=cursor, max=upto, count=5_000)
            out.extend((str(i), dict(f)) for i, f in page)
            if len(page) < 5_000:
                break
            cursor = f"({page[-1][0]}"
        return out

    def sql(self, query: str, *args: Any) -> list[asyncpg.Record]:
        """Run one query on the benchmark's Postgres."""

        async def go() -> list[asyncpg.Record]:
            conn = await asyncpg.connect(self.postgres.url, timeout=5)
            try:
                return await conn.fetch(query, *args, timeout=30)
            finally:
                await conn.close()

        return asyncio.run(go())
