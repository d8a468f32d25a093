"""The compose stack, started for real: `docker compose -f docker-compose.yml -f
docker-compose.sim.yml up --build` on a container engine, driven through HAProxy's published port.

Two collectors, the persister, two API replicas behind HAProxy, Redis, Postgres, Prometheus and the
market simulator, built from the repository's Dockerfile and compose files as they are (testkit/
compose.py). A steady request loop (testkit/poller.py) records every answer while faults are
injected: an API replica killed, Redis stopped for 15 s, Redis back empty, the active collector
killed, the whole stack taken down and up. Each step is timed; the figures are printed at the end
of the run (tests/compose/report.py), never asserted as wall-clock limits.

Where no registry is reachable the base images are stand-ins built from Debian packages
(testkit/standins/README.md) and Grafana is not started: both are said loudly in the output. The
module is skipped ("NOT RUN") only where no engine runs and none can be started.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from testkit.compose import ComposeStack, open_stack
from testkit.engine import EngineUnavailable
from testkit.poller import DIRECTIONS, Answer, Poller, summary
from testkit.standins import STANDINS
from tests.compose.report import REPORT
from tests.deploy.native import parse_metrics

pytestmark = [pytest.mark.compose, pytest.mark.timeout(1800)]

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


# ------------------------------------------------------------------------------- fixtures
@pytest.fixture(name="stack", scope="module")
def stack_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeStack]:
    """The whole stack, up and healthy; `down -v` (and the engine stopped if ours) afterwards."""
    began = time.monotonic()
    try:
        with open_stack(ROOT, tmp_path_factory.mktemp("compose"), log=REPORT.log) as stack:
            report_start(stack, time.monotonic() - began)
            yield stack
            teardown_began = time.monotonic()
    except EngineUnavailable as err:
        REPORT.loud(f"NOT RUN: the compose stack (tests/compose): {err}")
        pytest.skip(f"!!! NOT RUN: the compose stack: {err} !!!")
    REPORT.figure("teardown (down -v, engine stop)", seconds(time.monotonic() - teardown_began))


def report_start(stack: ComposeStack, cycle_s: float) -> None:
    timings = stack.timings
    REPORT.figure("engine", stack.engine.describe())
    if stack.standins:
        built = sorted(i for i, how in stack.standins.items() if how == "built")
        REPORT.loud(
            "STAND-IN BASE IMAGES (no registry reachable): "
            + "; ".join(f"{image} = {STANDINS[image]}" for image in sorted(stack.standins))
            + " (testkit/standins/README.md)"
        )
        REPORT.figure("stand-ins", f"built {built or 'none'}, the rest reused")
    for service, why in stack.not_started.items():
        REPORT.loud(f"NOT STARTED: {service}: {why}")
    REPORT.figure(
        "start",
        f"lock wait {seconds(timings['lock_wait_s'])}, engine start "
        f"{seconds(timings['engine_start_s'])}, images {seconds(timings['images_s'])}, "
        f"compose build {seconds(timings['build_s'])}, up --wait {seconds(timings['up_s'])}; "
        f"whole cycle to healthy {seconds(cycle_s)}",
    )


@pytest.fixture(name="rig", scope="module")
def rig_fixture(stack: ComposeStack) -> Iterator[Rig]:
    api_url = stack.url("API_PUBLIC_PORT")
    poller = Poller(f"{api_url}/v1/courses").start()
    began = time.monotonic()
    rig = Rig(
        stack,
        poller,
        httpx.Client(base_url=api_url, timeout=5),
        httpx.Client(base_url=f"{stack.url('SIM_PORT')}/_sim", timeout=5),
        httpx.Client(base_url=stack.url("HAPROXY_STATS_PORT"), timeout=5),
        itertools.count(71_000, 7),
    )
    try:
        first = poller.wait_for(
            lambda a: a.fresh, after=0, timeout_s=SERVED_TIMEOUT_S, what="all eight served fresh"
        )
        REPORT.figure(
            "first fresh answer through HAProxy",
            f"{seconds(max(0.0, first.at - began))} after up --wait",
        )
        yield rig
        report_errors(rig, "the down/up")
    finally:
        poller.stop()
        REPORT.figure(
            "request loop, whole run (the deliberate down/up outage included)",
            summary(poller.answers),
        )
        for client in (rig.api, rig.sim, rig.stats):
            client.close()


# ---------------------------------------------------------------------------------- tests
def test_all_eight_directions_are_served_through_haproxy_with_etag_and_304(rig):
    response = rig.api.get("/v1/courses")
    assert response.status_code == 200, response.text
    body = response.json()
    assert [c["direction"] for c in body["courses"]] == list(DIRECTIONS)
    assert body["exchanger"] == "binance" and response.headers["x-rates-stale"] == "false"
    for exchanger in ("binance", "coingecko"):
        other = rig.api.get("/v1/courses", params={"exchanger": exchanger}).json()
        assert [c["direction"] for c in other["courses"]] == list(DIRECTIONS), exchanger
    etag = response.headers["etag"]
    revalidated = rig.api.get("/v1/courses", headers={"If-None-Match": etag})
    assert revalidated.status_code == 304 and not revalidated.content
    assert revalidated.headers["etag"] == etag
    # both replicas answer, and the loop has seen nothing but good answers so far
    before = rig.responses_by_server()
    for _ in range(20):
        assert rig.api.get("/v1/courses", headers={"If-None-Match": etag}).status_code in (200, 304)
    after = rig.responses_by_server()
    served = {s for s in after if after[s] > before.get(s, 0)}
    assert len(served) == 2, f"HAProxy spread 20 requests over {served}"
    assert not failures(rig.poller.answers), describe(rig.poller.answers)


def test_ticks_land_in_postgres_and_prometheus_scrapes_every_role(rig):
    price = rig.move_btc()
    served_s = rig.wait_served(price)
    stored_s = rig.wait_stored(price)
    REPORT.figure(
        "price change",
        f"served through HAProxy after {seconds(served_s)}, in Postgres "
        f"after {seconds(served_s + stored_s)}",
    )
    prometheus = httpx.Client(base_url=rig.stack.url("PROMETHEUS_PORT"), timeout=5)

    def targets_up() -> dict[str, int]:
        result = prometheus.get("/api/v1/query", params={"query": "up == 1"}).json()
        jobs: dict[str, int] = {}
        for sample in result["data"]["result"]:
            jobs[sample["metric"]["job"]] = jobs.get(sample["metric"]["job"], 0) + 1
        return jobs

    want = {"api": 2, "collector": 2, "persister": 1, "haproxy": 1, "prometheus": 1}
    with prometheus:
        wait_until(
            lambda: targets_up() == want,
            timeout_s=SERVED_TIMEOUT_S,
            what=f"Prometheus scraping {want}",
        )


def test_a_killed_api_replica_costs_no_request(rig):
    rig.healthy()
    victim = next(c for c in rig.stack.containers("api") if c["State"] == "running")
    mark = rig.poller.mark()
    began = time.monotonic()
    rig.stack.engine.run("kill", victim["Name"])
    wait_until(lambda: rig.servers_up() == 1, timeout_s=SERVED_TIMEOUT_S, what="HAProxy to drop it")
    detected_s = time.monotonic() - began
    # `docker kill` is a manual stop: the restart policy leaves it down; bring it back as an
    # operator would, and wait until HAProxy has it in rotation again.
    restarted = time.monotonic()
    rig.stack.up("api")
    wait_until(
        lambda: rig.servers_up() == 2, timeout_s=SERVED_TIMEOUT_S, what="replica back in rotation"
    )
    back_s = time.monotonic() - restarted
    window = rig.poller.since(mark)
    REPORT.figure(
        "API replica killed (docker kill)",
        f"{describe(window)}; HAProxy took it out after {seconds(detected_s)}; "
        f"`compose up api` to back in rotation {seconds(back_s)}",
    )
    assert not failures(window), describe(window) + rig.failure_context()


def test_redis_stopped_for_15_s_costs_no_request_and_values_flow_again(rig):
    rig.healthy()
    mark = rig.poller.mark()
    began = time.monotonic()
    rig.stack.run("stop", "redis")
    stopped_s = time.monotonic() - began
    moved = rig.move_btc()  # changes while Redis is down reach the API once it is back
    outage_until = time.monotonic() + REDIS_OUTAGE_S
    while time.monotonic() < outage_until:  # the fault's duration, not a synchronisation
        time.sleep(outage_until - time.monotonic())
    during = rig.poller.since(mark)
    started = time.monotonic()
    rig.stack.run("start", "redis")
    start_s = time.monotonic() - started
    visible_s = rig.wait_served(moved)
    stored_s = rig.wait_stored(moved)
    window = rig.poller.since(mark)
    REPORT.figure(
        f"Redis stopped for {REDIS_OUTAGE_S:.0f} s",
        f"during the outage {describe(during)}; after `compose start redis` "
        f"(stop took {seconds(stopped_s)}, start {seconds(start_s)}) the change made during "
        f"the outage served after {seconds(start_s + visible_s)}, in Postgres after "
        f"{seconds(start_s + visible_s + stored_s)}; whole window: {describe(window)}",
    )
    assert not failures(window), describe(window) + rig.failure_context()


def test_redis_back_empty_heals_by_itself(rig):
    rig.healthy()
    rows_before = rig.rows()
    old_lease = rig.lease()
    mark = rig.poller.mark()
    rig.stack.run("stop", "redis")
    rig.stack.run("rm", "--force", "redis")
    rig.stack.engine.run("volume", "rm", rig.stack.volume("redis-data"))
    moved = rig.move_btc()  # changed while Redis is gone: must reach every replica after
    began = time.monotonic()
    rig.stack.run("up", "--detach", "--no-deps", "redis")  # a new, empty volume
    try:
        lease = wait_until(
            rig.lease, timeout_s=HEAL_TIMEOUT_S, what="a collector holding the lease"
        )
        lease_s = time.monotonic() - began
        served_s = rig.wait_served(moved, timeout_s=HEAL_TIMEOUT_S) + lease_s
        replicas_s = rig.wait_every_replica(moved, timeout_s=HEAL_TIMEOUT_S) + served_s
        stored_s = rig.wait_stored(moved, timeout_s=HEAL_TIMEOUT_S) + replicas_s
    except AssertionError as err:
        raise AssertionError(f"{err}: the stack did not heal; {stuck(rig)}") from None
    groups = rig.stack.redis("XINFO", "GROUPS", STREAM_KEY)
    rows_after = rig.rows()
    window = rig.poller.since(mark)
    REPORT.figure(
        "Redis back empty (container and volume removed)",
        f"after `compose up -d redis`: lease held again after {seconds(lease_s)} ({lease[0]}, "
        f"term {lease[1]}; was {old_lease}); the change made while Redis was gone served "
        f"through HAProxy after {seconds(served_s)}, by every replica after "
        f"{seconds(replicas_s)}, in Postgres after {seconds(stored_s)}; rows {rows_before} -> "
        f"{rows_after}; {describe(window)}",
    )
    assert PERSISTER_GROUP in groups.split(), f"consumer group not recreated: {groups!r}"
    assert rows_after > rows_before
    assert not failures(window), describe(window) + rig.failure_context()


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


def test_the_standby_collector_takes_over_when_the_active_one_is_killed(rig):
    rig.healthy()
    holder, term = rig.lease()
    hostname = holder.rsplit("-", 1)[0]  # <hostname>-<pid>; a container's hostname is its id
    collectors = rig.stack.containers("collector") + rig.stack.containers("collector-standby")
    active = next(c for c in collectors if c["ID"].startswith(hostname))
    mark = rig.poller.mark()
    began = time.monotonic()
    rig.stack.engine.run("kill", active["Name"])
    new_holder, new_term = wait_until(
        lambda: (lease := rig.lease()) and lease[0] != holder and lease,
        timeout_s=SERVED_TIMEOUT_S,
        what="the standby to take the lease",
    )
    takeover_s = time.monotonic() - began
    moved = rig.move_btc()
    visible_s = rig.wait_served(moved)
    window = rig.poller.since(mark)
    REPORT.figure(
        "active collector killed (docker kill)",
        f"{active['Service']} ({holder}, term {term}) killed; {new_holder} took the lease "
        f"(term {new_term}) after {seconds(takeover_s)}; a price moved then served after "
        f"{seconds(visible_s)}; {describe(window)}",
    )
    assert new_term > term
    assert not failures(window), describe(window) + rig.failure_context()


def test_down_and_up_keep_the_history(rig):
    rig.healthy()
    report_errors(rig, "start")
    rows_before = rig.rows()
    mark = rig.poller.mark()
    began = time.monotonic()
    rig.stack.down(volumes=False)
    down_s = time.monotonic() - began
    began = time.monotonic()
    rig.stack.up()
    up_s = time.monotonic() - began
    up_mark = rig.poller.mark()
    first = rig.poller.wait_for(
        lambda a: a.fresh, after=up_mark, timeout_s=SERVED_TIMEOUT_S, what="eight fresh after up"
    )
    outage = rig.poller.since(mark, up_mark)
    rows_after_up = rig.rows()
    assert rows_after_up >= rows_before, f"history lost: {rows_before} -> {rows_after_up}"
    price = rig.move_btc()
    rig.wait_served(price)
    rig.wait_stored(price)
    REPORT.figure(
        "compose down + up (volumes kept)",
        f"down {seconds(down_s)}, up --wait {seconds(up_s)}, first fresh answer "
        f"{seconds(max(0.0, first.at - began - up_s))} after; rows {rows_before} -> "
        f"{rows_after_up} after up -> {rig.rows()} after a price change; the request loop "
        f"meanwhile (a deliberate outage): {summary(outage)}",
    )
    assert rig.rows() > rows_after_up


def test_grafana_serves_the_provisioned_dashboard(rig):
    if "grafana" in rig.stack.not_started:
        why = rig.stack.not_started["grafana"]
        pytest.skip(f"!!! NOT RUN: Grafana: {why} !!!")
    with httpx.Client(base_url=rig.stack.url("GRAFANA_PORT"), timeout=5) as grafana:
        health = wait_until(
            lambda: (r := grafana.get("/api/health")).status_code == 200 and r.json(),
            timeout_s=SERVED_TIMEOUT_S,
            what="Grafana /api/health",
        )
        assert health["database"] == "ok"
        found = wait_until(
            lambda: grafana.get("/api/search", params={"query": "ratesvc"}).json(),
            timeout_s=SERVED_TIMEOUT_S,
            what="the provisioned ratesvc dashboard",
        )
        assert any(d["type"] == "dash-db" for d in found), found
