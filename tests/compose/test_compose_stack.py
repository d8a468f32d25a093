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

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

from testkit.poller import DIRECTIONS, summary
from testkit.sse import SseEvent, SseParser
from tests.compose.report import REPORT
from tests.compose.rig import (
    HEAL_TIMEOUT_S,
    PERSISTER_GROUP,
    REDIS_OUTAGE_S,
    SERVED_TIMEOUT_S,
    STREAM_KEY,
    describe,
    failures,
    report_errors,
    seconds,
    stuck,
    wait_until,
)

pytestmark = [pytest.mark.compose, pytest.mark.timeout(1800)]


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


BTC_BINANCE = {"exchanger": "binance", "direction": "BTC-USD"}


def btc_value(body: str) -> str:
    """Binance BTC-USD's value in a /v2/courses body (a decimal string)."""
    return json.loads(body)["courses"][0]["value"]


def sse_events(response: httpx.Response, deadline: float) -> Iterator[SseEvent]:
    """The events of an open /v2/stream response until `deadline` (monotonic)."""
    parser = SseParser()
    for line in response.iter_lines():
        if time.monotonic() > deadline:
            raise AssertionError("no matching event before the deadline")
        item = parser.feed(line)
        if isinstance(item, SseEvent):
            yield item


def test_v2_stream_and_websocket_push_a_change_through_haproxy(rig):
    rig.healthy()
    price = str(int(rig.move_btc()))
    rig.wait_served(float(price))
    courses = rig.api.get("/v2/courses", params=BTC_BINANCE)
    assert courses.status_code == 200 and courses.headers["api-version"] == "2", courses.text
    assert btc_value(courses.text) == price
    timeout = httpx.Timeout(5, read=40)  # heartbeats every 15 s keep a quiet stream readable
    with httpx.Client(base_url=rig.api.base_url, timeout=timeout) as client:
        with client.stream("GET", "/v2/stream", params=BTC_BINANCE) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            events = sse_events(stream, time.monotonic() + SERVED_TIMEOUT_S)
            first = next(events)
            assert first.event == "rates" and first.id and first.id.startswith('"')
            assert btc_value(first.data) == price
            moved = str(int(rig.move_btc()))
            began = time.monotonic()
            next(e for e in events if btc_value(e.data) == moved)
            sse_s = time.monotonic() - began
    ws_url = str(rig.api.base_url.copy_with(scheme="ws", path="/v2/ws", params=BTC_BINANCE))
    with ws_connect(ws_url, open_timeout=10) as socket:
        assert btc_value(socket.recv(timeout=10)) == moved
        again = str(int(rig.move_btc()))
        began = time.monotonic()
        deadline = began + SERVED_TIMEOUT_S
        while btc_value(socket.recv(timeout=max(0.1, deadline - time.monotonic()))) != again:
            pass
        ws_s = time.monotonic() - began
    REPORT.figure(
        "v2 push through HAProxy",
        f"a price change arrived on /v2/stream after {seconds(sse_s)}, on /v2/ws after "
        f"{seconds(ws_s)}",
    )
    status = rig.api.get("/status")
    assert status.status_code == 200 and status.headers["content-type"].startswith("text/html")
    assert "/v2/stream" in status.text


def test_v2_history_and_point_in_time_read_postgres_through_haproxy(rig):
    rig.healthy()
    began = datetime.now(UTC)
    price = str(int(rig.move_btc()))
    rig.wait_stored(float(price))
    window = {"from": (began - timedelta(minutes=5)).isoformat(timespec="milliseconds")}
    history = rig.api.get("/v2/history", params={**BTC_BINANCE, "interval": "1m", **window})
    assert history.status_code == 200, history.text
    candles = history.json()["candles"]
    assert candles and candles[-1]["close"] == price and candles[-1]["ticks"] >= 1
    at = datetime.now(UTC).isoformat(timespec="milliseconds")
    then = rig.api.get("/v2/courses", params={**BTC_BINANCE, "at": at})
    assert then.status_code == 200, then.text
    assert btc_value(then.text) == price
    moved = str(int(rig.move_btc()))
    rig.wait_stored(float(moved))
    assert btc_value(rig.api.get("/v2/courses", params={**BTC_BINANCE, "at": at}).text) == price
    assert btc_value(rig.api.get("/v2/courses", params=BTC_BINANCE).text) == moved


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
