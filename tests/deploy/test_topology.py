"""The compose topology, run natively on loopback from the SAME haproxy and prometheus files.

sim -> 2 collectors -> Redis <- persister -> Postgres; 2 API workers (127.0.0.2 and 127.0.0.3, same
port, found by HAProxy through a DNS name like Docker's) behind HAProxy; Prometheus scraping
everything with monitoring/prometheus.yml (targets substituted, 1 s interval) and evaluating
monitoring/alerts.yml. Checks: load spreads over the workers, a killed worker costs no request,
every target is up, every alert rule evaluates, and every Grafana panel's query returns data.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis as redis_sync

from tests.deploy.native import (
    HAPROXY_CFG,
    Daemon,
    StaticDns,
    exported_metric_names,
    free_tcp_port,
    load_dashboard,
    panel_queries,
    require_tool,
    unknown_metrics,
)
from tests.deploy.topology import (
    TEST_ENV,
    WORKER_HOSTS,
    Launcher,
    Stack,
    http_ok,
    start_haproxy,
    start_prometheus,
    start_roles,
    start_sim,
)
from tests.e2e.harness import service_env, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture(name="stack", scope="module")
def stack_fixture(
    redis_url: str, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    require_tool("haproxy", "the native topology (HAProxy in front of the API)")
    require_tool("prometheus", "the native topology (Prometheus and the dashboard)")
    redis_sync.Redis.from_url(redis_url).flushdb()
    launcher = Launcher(tmp_path_factory.mktemp("topology"))
    # Docker's DNS, natively: "api" has one A record per worker.
    with StaticDns({"api": list(WORKER_HOSTS)}) as dns:
        try:
            sim = start_sim(launcher)
            env = service_env(sim, redis_url, database_url, launcher.workdir / "data", **TEST_ENV)
            stack = start_roles(launcher, sim, env)
            stats_port = start_haproxy(launcher, stack, dns)
            start_prometheus(launcher, stack, stats_port)
            yield stack
        finally:
            launcher.stop_all()


def send(stack: Stack, count: int, etag: str | None = None) -> list[int]:
    headers = {"If-None-Match": etag} if etag else {}
    return [stack.lb.get("/courses", headers=headers).status_code for _ in range(count)]


def test_requests_through_haproxy_spread_over_every_worker(stack):
    before = {address: stack.worker_requests(address) for address in stack.workers}
    first = stack.lb.get("/courses", headers={"X-Request-ID": "test-id-1"})
    assert first.status_code == 200 and first.headers["X-Request-ID"] == "test-id-1"
    generated = stack.lb.get("/courses").headers.get("X-Request-ID", "")
    assert generated, "HAProxy adds an X-Request-ID when the client sent none"
    statuses = send(stack, 98) + send(stack, 100, etag=first.headers["ETag"])
    assert set(statuses) <= {200, 304} and 304 in statuses, statuses
    served = {a: stack.worker_requests(a) - before[a] for a in stack.workers}
    print(f"\n/courses requests per worker (each worker's own counter): {served}")
    assert sum(served.values()) == 200, "every request through HAProxy reached exactly one worker"
    for address, count in served.items():
        assert count >= 200 / len(served) / 2, f"{address} got {count} of 200: not balanced"


def test_prometheus_scrapes_every_target_and_evaluates_every_rule(stack):
    def targets_up() -> list[dict[str, Any]] | None:
        active = stack.prometheus.get("/api/v1/targets").json()["data"]["activeTargets"]
        return active if active and all(t["health"] == "up" for t in active) else None

    active = stack.wait(targets_up, "every Prometheus target up")
    jobs = sorted({(t["labels"]["job"], t["scrapeUrl"]) for t in active})
    print("\nPrometheus targets up:\n" + "\n".join(f"  {job:<11} {url}" for job, url in jobs))
    assert {job for job, _url in jobs} == {"api", "collector", "persister", "haproxy", "prometheus"}
    assert len(stack.query("up == 1")) == len(active) == 7

    def rules_ok() -> list[dict[str, Any]] | None:
        groups = stack.prometheus.get("/api/v1/rules").json()["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return rules if rules and all(rule["health"] == "ok" for rule in rules) else None

    rules = stack.wait(rules_ok, "every alert rule evaluated without error")
    firing = sorted(r["name"] for r in rules if r.get("state") == "firing")
    print(f"{len(rules)} alert rules evaluated; firing now: {firing or 'none'}")


def test_every_dashboard_panel_query_returns_data(stack):
    # Events some panels show: a failover (and back) with reconnects, 200s and 304s.
    etag = stack.lb.get("/courses").headers["ETag"]
    stack.wait(
        lambda: stack.query('max(ratesvc_source_up{source="coingecko"}) == 1'),
        "coingecko up (the failover target)",
    )
    stack.sim.fault("binance_ws", "refuse")
    stack.sim.fault("binance_rest", "refuse")
    stack.sim.fault("binance_ws", "disconnect")
    stack.wait(
        lambda: stack.query("sum(ratesvc_api_failovers_total) > 0"),
        "a failover to coingecko seen by Prometheus",
    )
    stack.sim.clear()
    stack.wait(
        lambda: stack.query('sum(ratesvc_api_failovers_total{to_exchanger="binance"}) > 0'),
        "the failback to binance seen by Prometheus",
    )
    send(stack, 50)
    send(stack, 50, etag=etag)

    exported = exported_metric_names()
    queries = panel_queries(load_dashboard())
    pending = {
        (title, ref): ", ".join(sorted(missing))
        for title, ref, expr in queries
        if (missing := unknown_metrics(expr, exported))
    }
    results: dict[tuple[str, str], int] = {}

    def all_have_data() -> bool:
        results.update({(title, ref): len(stack.query(expr)) for title, ref, expr in queries})
        return all(count for key, count in results.items() if key not in pending)

    def settled() -> bool:
        """The same series counts over two scrape intervals (for the table's sake)."""
        before = dict(results)
        time.sleep(2)
        return all_have_data() and results == before

    try:
        stack.wait(all_have_data, "every panel query to return data")
        stack.wait(settled, "the panel series counts to settle")
    finally:
        width = max(len(f"{t} [{r}]") for t, r, _ in queries)
        lines = [f"{'panel [query]':<{width}} -> series", "-" * (width + 10)]
        for title, ref, _expr in queries:
            note = (
                f"  PENDING: not exported yet ({pending[(title, ref)]})"
                if (title, ref) in pending
                else ""
            )
            lines.append(f"{f'{title} [{ref}]':<{width}} -> {results.get((title, ref), 0)}{note}")
        print("\nGrafana panel queries against the native Prometheus:\n" + "\n".join(lines))


def test_killing_a_worker_loses_no_request(stack):
    outcomes: list[int | str] = []
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=str(stack.lb.base_url), timeout=5) as http:
            while not stop.is_set() and len(outcomes) < 20_000:
                try:
                    outcomes.append(http.get("/courses").status_code)
                except httpx.HTTPError as err:
                    outcomes.append(repr(err))

    def retries() -> float:
        samples = stack.haproxy_metrics()
        return sum(
            value
            for name in (
                "haproxy_backend_retry_warnings_total",
                "haproxy_backend_redispatch_warnings_total",
            )
            for labels, value in samples.get(name, [])
            if labels["proxy"] == "api"
        )

    retries_before = retries()
    thread = threading.Thread(target=client, name="load", daemon=True)
    thread.start()
    try:
        wait_until(lambda: len(outcomes) >= 200, timeout_s=30, what="traffic before the kill")
        victim_address, victim = sorted(stack.workers.items())[-1]
        victim.kill()
        at_kill = len(outcomes)
        wait_until(lambda: stack.active_servers() == 1, timeout_s=30, what="HAProxy marks it DOWN")
        at_down = len(outcomes)
        wait_until(lambda: len(outcomes) >= at_down + 200, timeout_s=30, what="traffic after DOWN")
    finally:
        stop.set()
        thread.join(timeout=10)
    failures = [o for o in outcomes if o not in (200, 304)]
    # A worker writes each answer (head and body) in one write (ratesvc.api.onewrite): the kill
    # leaves HAProxy either nothing of an answer, which it retries on the live worker, or all of
    # it. With stock uvicorn's two writes, the one answer in flight could be cut after its head.
    absorbed = retries() - retries_before
    print(
        f"\nkilled {victim_address} (SIGKILL) after {at_kill} requests; HAProxy marked it DOWN "
        f"after {at_down}; {len(outcomes)} requests in all, {len(failures)} failed; "
        f"HAProxy retries/redispatches meanwhile: {absorbed:g}"
    )
    assert not failures, failures[:10]
    assert absorbed > 0, "requests reached the dead worker and were retried on the live one"
    assert (
        not victim.alive and victim.proc is not None and victim.proc.returncode == -signal.SIGKILL
    )


def test_haproxy_rate_limit_answers_429_problem_json(tmp_path):
    haproxy = require_tool("haproxy", "the HAProxy rate limit")
    port, stats = free_tcp_port("127.0.0.1"), free_tcp_port("127.0.0.1")
    env = dict(os.environ) | {
        "LB_BIND": f"127.0.0.1:{port}",
        "LB_STATS_BIND": f"127.0.0.1:{stats}",
        "LB_DNS": "127.0.0.1:9",  # no replicas at all: HAProxy answers by itself
        "LB_RATE_LIMIT": "3",
    }
    daemon = Daemon(
        "haproxy-limit", [haproxy, "-db", "-f", str(HAPROXY_CFG)], env=env, workdir=tmp_path
    ).start()
    try:
        wait_until(
            lambda: http_ok(f"http://127.0.0.1:{stats}/healthz"), timeout_s=20, what="haproxy"
        )
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            answers = [http.get("/courses", headers={"X-Request-ID": f"r{i}"}) for i in range(5)]
    finally:
        daemon.stop(timeout_s=10)
    assert [a.status_code for a in answers] == [503, 503, 503, 429, 429]
    limited = answers[-1]
    assert limited.headers["content-type"] == "application/problem+json"
    assert limited.json()["status"] == 429 and limited.headers["Retry-After"] == "10"
    assert [a.headers["X-Request-ID"] for a in answers] == [f"r{i}" for i in range(5)]
