"""Scenario 12 of bench/faults.py: one API worker crashes behind HAProxy.

Two `ratesvc api` workers (127.0.0.2 and 127.0.0.3, one port) on the benchmark's Redis and
Postgres, found by HAProxy through a name like Docker's DNS (tests/deploy/native.py StaticDns),
haproxy/haproxy.cfg as it is (its default health-check interval). A client thread sends GET /courses
through HAProxy while one worker is SIGKILLed and later started again.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time

import httpx
from faults_common import ROOT, Ctx, Row
from faults_stack import secs, until, wait_for

from testkit.net import lb_maxconn
from testkit.procs import Daemon

HOSTS = ("127.0.0.2", "127.0.0.3")
MAX_REQUESTS = 50_000


class Load:
    """GET /courses in a loop through the balancer, outcomes recorded (bounded)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.outcomes: list[int | str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lb-load", daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=5) as http:
            while not self._stop.is_set() and len(self.outcomes) < MAX_REQUESTS:
                try:
                    self.outcomes.append(http.get("/courses").status_code)
                except httpx.HTTPError as err:
                    self.outcomes.append(type(err).__name__)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class Balancer:
    """Two API workers behind haproxy/haproxy.cfg, with the readings the scenario needs."""

    def __init__(self, ctx: Ctx) -> None:
        # pylint: disable=import-outside-toplevel  # tests/ is needed by this scenario only
        from testkit.net import free_tcp_port

        self.stack = ctx.stack
        self.port = free_tcp_port(*HOSTS)
        self.lb_port, self.stats_port = free_tcp_port("127.0.0.1"), free_tcp_port("127.0.0.1")
        self.stats = httpx.Client(base_url=f"http://127.0.0.1:{self.stats_port}", timeout=2)
        self.workers = {host: self.start_worker(host) for host in HOSTS}
        self.lb: subprocess.Popen | None = None

    def start_worker(self, host: str, suffix: str = "") -> Daemon:
        args = ["api", "--host", host, "--port", str(self.port)]
        worker = self.stack.spawn(f"api-{host}{suffix}", args)
        ready = f"http://{host}:{self.port}/ready"
        if wait_for(lambda: httpx.get(ready).status_code == 200, 60) is None:
            raise RuntimeError(f"api worker {host} not ready:\n{worker.tail(2000)}")
        return worker

    def start_haproxy(self, dns_address: str) -> None:
        env = {
            **self.stack.env,
            "LB_BIND": f"127.0.0.1:{self.lb_port}",
            "LB_STATS_BIND": f"127.0.0.1:{self.stats_port}",
            "LB_API_ADDR": f"api:{self.port}",
            "LB_DNS": dns_address,
            "LB_RATE_LIMIT": "0",
            "LB_MAXCONN": str(lb_maxconn()),  # within this machine's open-file limit
        }
        with (self.stack.workdir / "haproxy.log").open("ab") as log:
            self.lb = subprocess.Popen(  # pylint: disable=consider-using-with  # stop() ends it
                [str(shutil.which("haproxy")), "-db", "-f", str(ROOT / "haproxy" / "haproxy.cfg")],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if wait_for(lambda: self.active() == 2, 60, 0.2) is None:
            raise RuntimeError("HAProxy did not see both workers UP")

    def _metrics(self) -> dict:
        # pylint: disable=import-outside-toplevel
        from testkit.net import parse_metrics

        return parse_metrics(self.stats.get("/metrics").text)

    def active(self) -> float:
        """API servers HAProxy considers UP."""
        samples = self._metrics()["haproxy_backend_active_servers"]
        return sum(v for labels, v in samples if labels["proxy"] == "api")

    def retries(self) -> float:
        """Requests HAProxy retried or redispatched to another server."""
        samples = self._metrics()
        names = (
            "haproxy_backend_retry_warnings_total",
            "haproxy_backend_redispatch_warnings_total",
        )
        return sum(v for n in names for labels, v in samples.get(n, []) if labels["proxy"] == "api")

    def stop(self) -> None:
        if self.lb is not None and self.lb.poll() is None:
            self.lb.terminate()
            self.lb.wait(timeout=10)
        for worker in self.workers.values():
            worker.stop()


def s12_api_worker(ctx: Ctx, row: Row) -> None:
    """SIGKILL one of two API workers behind HAProxy: no failed request; DOWN, then back UP."""
    # pylint: disable=import-outside-toplevel  # tests/ is needed by this scenario only
    from testkit.net import StaticDns

    balancer = Balancer(ctx)
    try:
        with StaticDns({"api": list(HOSTS)}) as dns:
            balancer.start_haproxy(dns.address)
            before = balancer.retries()
            with Load(f"http://127.0.0.1:{balancer.lb_port}") as load:
                time.sleep(1.0)
                t0 = time.monotonic()
                balancer.workers[HOSTS[-1]].kill(group=False)
                at_kill = len(load.outcomes)
                down = until(lambda: balancer.active() == 1, t0, 30, 0.05)
                time.sleep(1.0)
                t1 = time.monotonic()
                balancer.workers[HOSTS[-1]] = balancer.start_worker(HOSTS[-1], "-restarted")
                up = until(lambda: balancer.active() == 2, t1, 60, 0.05)
                time.sleep(1.0)
            absorbed = balancer.retries() - before
    finally:
        balancer.stop()
    failed = [o for o in load.outcomes if o not in (200, 304)]
    row.detect = f"HAProxy marked the killed worker DOWN after {secs(down, 30)}"
    row.recover = f"restarted worker back in rotation {secs(up, 60)} after its start"
    row.notes.append(
        f"{len(load.outcomes)} requests through HAProxy ({at_kill} before the kill), "
        f"{len(failed)} failed {failed[:3]}; retried/redispatched by HAProxy: {absorbed:g}; "
        "health checks at the haproxy.cfg default LB_CHECK_INTER=2s, fall 2, rise 2"
    )
    row.ok = not failed and down is not None and up is not None
