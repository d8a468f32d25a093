"""The compose test's rig: the running stack with its clients (the API through HAProxy, the
simulator's control API, HAProxy's metrics), bounded waits, and the helpers that turn what the
request loop recorded into assertions and report lines."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from testkit.compose import ComposeStack
from testkit.poller import Answer, Poller, summary
from tests.compose.report import REPORT
from tests.deploy.native import parse_metrics

ROOT = Path(__file__).resolve().parents[2]
SERVED_TIMEOUT_S = 120.0  # a bound for every wait on the stack; never a measured figure
HEAL_TIMEOUT_S = 180.0
REDIS_OUTAGE_S = 15.0  # the fault's duration
LEASE_KEY = "ratesvc:collector:lease"
STREAM_KEY = "ratesvc:ticks"
PERSISTER_GROUP = "persister"
# Run inside an API container: its own answer for Binance BTC-USD, "<value> <stale header>".
REPLICA_PROBE = (
    "import json, urllib.request as u; r = u.urlopen('http://127.0.0.1:8000/v1/courses"
    "?exchanger=binance&direction=BTC-USD', timeout=3); "
    "print(json.load(r)['courses'][0]['value'], r.headers['X-Rates-Stale'])"
)


def wait_until(predicate: Callable[[], Any], *, timeout_s: float, what: str) -> Any:
    """Poll `predicate` (errors count as not yet) until truthy; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except (httpx.HTTPError, RuntimeError, KeyError, ValueError, IndexError) as err:
            last = err
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what} (last: {last!r})")


@dataclass
class Rig:
    """The running stack with its clients: the API through HAProxy, the simulator, the poller."""

    stack: ComposeStack
    poller: Poller
    api: httpx.Client
    sim: httpx.Client
    stats: httpx.Client
    prices: Iterator[int]

    # ------------------------------------------------------------------------- market
    def move_btc(self) -> float:
        """A new BTCUSDT price on the simulated Binance (one never used before); returns it."""
        price = next(self.prices)
        self.sim.post("/prices", json={"binance": {"BTCUSDT": str(price)}}).raise_for_status()
        return float(price)

    def binance_btc_fresh(self, price: float) -> bool:
        """HAProxy serves Binance's BTC-USD at `price`, not marked stale."""
        response = self.api.get(
            "/v1/courses", params={"exchanger": "binance", "direction": "BTC-USD"}
        )
        if response.status_code != 200 or response.headers.get("x-rates-stale") != "false":
            return False
        return response.json()["courses"][0]["value"] == price

    def wait_served(self, price: float, *, timeout_s: float = SERVED_TIMEOUT_S) -> float:
        """Seconds until `price` is served fresh through HAProxy."""
        began = time.monotonic()
        wait_until(
            lambda: self.binance_btc_fresh(price),
            timeout_s=timeout_s,
            what=f"BTC-USD {price} served fresh through HAProxy",
        )
        return time.monotonic() - began

    # ------------------------------------------------------------------------- stores
    def rows(self) -> int:
        """Rows in Postgres's rate table."""
        return int(self.stack.sql("SELECT count(*) FROM rate_tick"))

    def rows_at(self, price: float) -> int:
        """Rows of Binance BTC-USD at `price`."""
        return int(
            self.stack.sql(
                "SELECT count(*) FROM rate_tick WHERE exchanger = 'binance' "
                f"AND direction = 'BTC-USD' AND value = {price}"
            )
        )

    def wait_stored(self, price: float, *, timeout_s: float = SERVED_TIMEOUT_S) -> float:
        """Seconds until a row of `price` is in Postgres."""
        began = time.monotonic()
        wait_until(lambda: self.rows_at(price) > 0, timeout_s=timeout_s, what=f"a row at {price}")
        return time.monotonic() - began

    def lease(self) -> tuple[str, int] | None:
        """(holder, term) of the collector lease, None when nobody holds it."""
        value = self.stack.redis("GET", LEASE_KEY)
        if not value:
            return None
        holder, term = value.rsplit(":", 1)
        return holder, int(term)

    def replica_values(self) -> list[tuple[float, str]]:
        """(Binance BTC-USD, X-Rates-Stale) as each API replica itself answers (asked inside)."""
        answers = []
        for index in range(1, len(self.stack.containers("api")) + 1):
            out = self.stack.run(
                "exec", "-T", "--index", str(index), "api", "python", "-c", REPLICA_PROBE
            )
            value, stale = out.split()
            answers.append((float(value), stale))
        return answers

    def wait_every_replica(self, price: float, *, timeout_s: float = SERVED_TIMEOUT_S) -> float:
        """Seconds until every API replica serves `price` fresh (each one asked directly)."""
        began = time.monotonic()
        wait_until(
            lambda: all(v == (price, "false") for v in self.replica_values()),
            timeout_s=timeout_s,
            what=f"every replica serving {price} fresh",
        )
        return time.monotonic() - began

    # ------------------------------------------------------------------------ balancer
    def servers_up(self) -> int:
        """API servers HAProxy has in rotation."""
        samples = parse_metrics(self.stats.get("/metrics").text)["haproxy_backend_active_servers"]
        return int(sum(value for labels, value in samples if labels["proxy"] == "api"))

    def responses_by_server(self) -> dict[str, float]:
        """2xx + 3xx answers HAProxy got from each API server so far."""
        samples = parse_metrics(self.stats.get("/metrics").text)
        counts: dict[str, float] = {}
        for labels, value in samples.get("haproxy_server_http_responses_total", []):
            if labels["proxy"] == "api" and labels["code"] in ("2xx", "3xx"):
                counts[labels["server"]] = counts.get(labels["server"], 0) + value
        return counts

    # ------------------------------------------------------------------------- health
    def healthy(self) -> None:
        """Every planned service up (healthy where it has a check), two replicas in rotation,
        Binance fresh: the state each test starts from."""
        began = time.monotonic()
        running = {c["Service"] for c in self.stack.containers() if c["State"] == "running"} | {
            "migrate"
        }
        if not set(self.stack.services) <= running:
            self.stack.up()
        wait_until(
            lambda: self.servers_up() == 2, timeout_s=SERVED_TIMEOUT_S, what="2 API in rotation"
        )
        self.wait_served(self.move_btc())
        REPORT.log(f"  (stack healthy again after {time.monotonic() - began:.1f} s)")

    def error_lines(self) -> dict[str, int]:
        """Distinct ERROR / CRITICAL log lines of the running containers -> how often."""
        found: dict[str, int] = {}
        for line in self.stack.logs(tail=100_000).splitlines():
            service, _, message = line.partition("|")
            if " ERROR " in message or " CRITICAL " in message:
                key = f"{service.strip()}: {message.split(maxsplit=3)[-1][:160]}"
                found[key] = found.get(key, 0) + 1
        return found

    def failure_context(self) -> str:
        """Service states and recent logs, for an assertion message."""
        states = ", ".join(
            f"{c['Name']}={c['State']}/{c.get('Health') or '-'}" for c in self.stack.containers()
        )
        return f"\nservices: {states}\n{self.stack.logs(tail=30)[-6000:]}"


def report_errors(rig: Rig, since: str) -> None:
    """Report the ERROR lines the containers logged (product issues seen under compose)."""
    errors = rig.error_lines()
    lines = "; ".join(f"{n} x {line}" for line, n in sorted(errors.items())) or "none"
    REPORT.figure(f"ERROR log lines since {since}", lines)


def failures(answers: list[Answer]) -> list[Answer]:
    return [answer for answer in answers if answer.failed]


def describe(answers: list[Answer]) -> str:
    failed = failures(answers)
    first = "; ".join(f"{a.status}: {a.problem[:120]}" for a in failed[:3])
    return summary(answers) + (f"; first failures: {first}" if failed else "")


def seconds(value: float) -> str:
    return f"{value:.2f} s"


def stuck(rig: Rig) -> str:
    """What each part of the pipeline shows, to say where a stack that did not heal is stuck."""
    parts = []
    for label, command in (
        ("lease", ("GET", LEASE_KEY)),
        ("stream length", ("XLEN", STREAM_KEY)),
        ("groups", ("XINFO", "GROUPS", STREAM_KEY)),
    ):
        try:
            parts.append(f"{label}: {rig.stack.redis(*command)!r}")
        except RuntimeError as err:
            parts.append(f"{label}: {err}")
    return "; ".join(parts) + rig.failure_context()
