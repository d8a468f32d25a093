"""The compose topology, natively on loopback: its building blocks, shared by the deploy tests.

sim -> collectors -> Redis <- persister -> Postgres; API workers on 127.0.0.x addresses (same port,
found by HAProxy through a DNS name like Docker's) behind haproxy/haproxy.cfg as it is; Prometheus
with monitoring/prometheus.yml (targets substituted).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from testkit.net import lb_maxconn
from tests.deploy.native import (
    ALERTS_YML,
    HAPROXY_CFG,
    PROMETHEUS_YML,
    Daemon,
    StaticDns,
    free_tcp_port,
    parse_metrics,
    render_prometheus,
    require_tool,
    run,
)
from tests.e2e.harness import PRICES, Sim, service_env, wait_until

WORKER_HOSTS = ("127.0.0.2", "127.0.0.3")
START_TIMEOUT_S = 60.0
WAIT_TIMEOUT_S = 40.0
# Test cadences: the simulator has no quota, so CoinGecko may poll every second. The workers' access
# log shows the client address and request id each answer was given.
TEST_ENV = {
    "COINGECKO_CALLS_PER_MINUTE": "600",
    "COINGECKO_CALLS_PER_MONTH": "100000000",
    "API_ACCESS_LOG": "true",
}


class Launcher:
    """Starts daemons in one work directory, waits for them, and stops them all."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.daemons: list[Daemon] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> Daemon:
        daemon = Daemon(name, args, env=env, workdir=self.workdir).start()
        self.daemons.append(daemon)
        return daemon

    def wait(self, predicate: Callable[[], Any], what: str, daemon: Daemon | None = None) -> None:
        """wait_until, failing with the logs of `daemon` and of every daemon that died."""
        try:
            wait_until(predicate, timeout_s=START_TIMEOUT_S, what=what)
        except AssertionError as err:
            logs = "\n".join(
                f"--- {d.name}\n{d.tail()}" for d in self.daemons if d is daemon or not d.alive
            )
            raise AssertionError(f"{err}\n{logs}") from None

    def stop_all(self) -> None:
        for daemon in reversed(self.daemons):
            daemon.stop(timeout_s=10)


@dataclass
class Stack:
    """Everything running, with clients for HAProxy, its stats and Prometheus."""

    launcher: Launcher
    sim: Sim
    workers: dict[str, Daemon]  # "127.0.0.2:PORT" -> its `ratesvc api`
    metrics_ports: dict[str, int]  # collector, standby, persister
    env: dict[str, str]  # the roles' environment (to start one again)
    lb: httpx.Client | None = None
    lb_stats: httpx.Client | None = None
    prometheus: httpx.Client | None = None

    def wait(self, predicate: Callable[[], Any], what: str) -> Any:
        """wait_until; on time-out fails with the logs of the collectors and API workers."""
        try:
            return wait_until(predicate, timeout_s=WAIT_TIMEOUT_S, what=what)
        except AssertionError as err:
            logs = "\n".join(
                f"--- {d.name}\n{d.tail(2000)}"
                for d in self.launcher.daemons
                if d.name.startswith(("collector", "standby", "api-"))
            )
            raise AssertionError(f"{err}\n{logs}") from None

    def worker_requests(self, address: str, path: str = "/courses") -> float:
        """Requests a worker counted itself for `path` (its own /metrics)."""
        text = httpx.get(f"http://{address}/metrics", timeout=5).text
        samples = parse_metrics(text).get("ratesvc_http_requests_total", [])
        return sum(value for labels, value in samples if labels.get("path") == path)

    def haproxy_metrics(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        assert self.lb_stats is not None
        return parse_metrics(self.lb_stats.get("/metrics").text)

    def active_servers(self) -> float:
        samples = self.haproxy_metrics()["haproxy_backend_active_servers"]
        return sum(value for labels, value in samples if labels["proxy"] == "api")

    def daemon(self, name: str) -> Daemon:
        return next(d for d in self.launcher.daemons if d.name == name)

    @property
    def lb_address(self) -> tuple[str, int]:
        assert self.lb is not None
        return "127.0.0.1", int(self.lb.base_url.port or 0)

    def access_log_line(self, marker: str) -> str:
        """The line of a worker's access log holding `marker` (written as the answer starts)."""

        def find() -> str | None:
            for daemon in self.workers.values():
                lines = [line for line in daemon.output().splitlines() if marker in line]
                if lines:
                    return lines[-1]
            return None

        return self.wait(find, f"a worker's access log line with {marker}")

    def query(self, promql: str) -> list[dict[str, Any]]:
        assert self.prometheus is not None
        body = self.prometheus.get("/api/v1/query", params={"query": promql}).json()
        assert body["status"] == "success", f"{promql}: {body}"
        return body["data"]["result"]


def ratesvc(*args: str) -> list[str]:
    return [sys.executable, "-m", "ratesvc", *args]


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def start_sim(launcher: Launcher) -> Sim:
    ports = free_tcp_port("127.0.0.1"), free_tcp_port("127.0.0.1")
    args = ratesvc("sim", "--binance-port", str(ports[0]), "--coingecko-port", str(ports[1]))
    launcher.start("sim", args, dict(os.environ))
    sim = Sim(*ports)
    launcher.wait(lambda: sim.control.get("/state").status_code == 200, "sim")
    sim.post("/reset", {})
    sim.post("/prices", PRICES)
    return sim


def start_roles(launcher: Launcher, sim: Sim, env: dict[str, str]) -> Stack:
    """migrate (to completion), two collectors, the persister and the API workers."""
    migrate = run(ratesvc("migrate"), cwd=launcher.workdir, env=env, timeout=120)
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    ports = {name: free_tcp_port("127.0.0.1") for name in ("collector", "standby", "persister")}
    roles = [
        launcher.start(name, ratesvc("collector"), env | {"COLLECTOR_METRICS_PORT": str(port)})
        for name, port in ports.items()
        if name != "persister"
    ]
    roles.append(
        launcher.start(
            "persister",
            ratesvc("persister"),
            env | {"PERSISTER_METRICS_PORT": str(ports["persister"])},
        )
    )
    api_port = free_tcp_port(*WORKER_HOSTS)
    workers = {
        f"{host}:{api_port}": launcher.start(
            f"api-{host}", ratesvc("api", "--host", host, "--port", str(api_port)), env
        )
        for host in WORKER_HOSTS
    }
    for daemon, port in zip(roles, ports.values()):
        launcher.wait(lambda p=port: http_ok(f"http://127.0.0.1:{p}/metrics"), daemon.name, daemon)
    for address, daemon in workers.items():
        # ready, and serving values (the collector has published at least once)
        launcher.wait(lambda a=address: http_ok(f"http://{a}/courses"), daemon.name, daemon)
    return Stack(launcher=launcher, sim=sim, workers=workers, metrics_ports=ports, env=env)


def start_haproxy(launcher: Launcher, stack: Stack, dns: StaticDns) -> int:
    """haproxy/haproxy.cfg with loopback LB_* values; returns its stats port."""
    haproxy = require_tool("haproxy", "the native topology (HAProxy in front of the API)")
    lb_port, stats_port = free_tcp_port("127.0.0.1"), free_tcp_port("127.0.0.1")
    api_port = next(iter(stack.workers)).rsplit(":", 1)[1]
    env = dict(os.environ) | {
        "LB_BIND": f"127.0.0.1:{lb_port}",
        "LB_STATS_BIND": f"127.0.0.1:{stats_port}",
        "LB_API_ADDR": f"api:{api_port}",
        "LB_DNS": dns.address,
        "LB_CHECK_INTER": "500ms",
        "LB_RATE_LIMIT": "0",
        "LB_MAXCONN": str(lb_maxconn()),  # within this machine's open-file limit
    }
    daemon = launcher.start("haproxy", [haproxy, "-db", "-f", str(HAPROXY_CFG)], env)
    stack.lb = httpx.Client(base_url=f"http://127.0.0.1:{lb_port}", timeout=5)
    stack.lb_stats = httpx.Client(base_url=f"http://127.0.0.1:{stats_port}", timeout=5)
    launcher.wait(lambda: stack.active_servers() == len(stack.workers), "workers UP", daemon)
    return stats_port


def start_prometheus(launcher: Launcher, stack: Stack, stats_port: int) -> None:
    """monitoring/prometheus.yml with loopback targets and a 1 s interval."""
    prometheus = require_tool("prometheus", "the native topology (Prometheus and the dashboard)")
    port = free_tcp_port("127.0.0.1")
    ports = stack.metrics_ports
    config = render_prometheus(
        PROMETHEUS_YML.read_text(encoding="utf-8"),
        targets={
            "api:8000": list(stack.workers),
            "collector:9101": [f"127.0.0.1:{ports['collector']}"],
            "collector-standby:9101": [f"127.0.0.1:{ports['standby']}"],
            "persister:9102": [f"127.0.0.1:{ports['persister']}"],
            "haproxy:8404": [f"127.0.0.1:{stats_port}"],
            "localhost:9090": [f"127.0.0.1:{port}"],
        },
        rule_dir=ALERTS_YML.parent,
        interval="1s",
    )
    workdir = launcher.workdir
    (workdir / "prometheus.yml").write_text(config, encoding="utf-8")
    args = [
        prometheus,
        f"--config.file={workdir / 'prometheus.yml'}",
        f"--storage.tsdb.path={workdir / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=1h",
    ]
    daemon = launcher.start("prometheus", args, dict(os.environ))
    stack.prometheus = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5)
    launcher.wait(lambda: http_ok(f"http://127.0.0.1:{port}/-/ready"), "prometheus", daemon)


@contextmanager
def running_stack(
    workdir: Path,
    *,
    redis_url: str,
    database_url: str,
    prometheus: bool = False,
    **env: str,
) -> Iterator[Stack]:
    """The topology (simulator, two collectors, persister, two workers, HAProxy; Prometheus when
    asked) on `redis_url` and `database_url`, TEST_ENV plus `env`; everything stopped after."""
    require_tool("haproxy", "the native topology (HAProxy in front of the API)")
    launcher = Launcher(workdir)
    # Docker's DNS, natively: "api" has one A record per worker.
    with StaticDns({"api": list(WORKER_HOSTS)}) as dns:
        try:
            sim = start_sim(launcher)
            data = workdir / "data"
            roles_env = service_env(sim, redis_url, database_url, data, **TEST_ENV, **env)
            stack = start_roles(launcher, sim, roles_env)
            stats_port = start_haproxy(launcher, stack, dns)
            if prometheus:
                start_prometheus(launcher, stack, stats_port)
            yield stack
        finally:
            launcher.stop_all()
