"""Throughput of GET /courses behind HAProxy with 2 API workers, side by side with its ceiling.

Usage: python bench/throughput.py [--seconds 20] [--connections 64] [--rounds 2] [--changes 50]
                                  [--soak-seconds 0] [--out docs/performance.md]

Starts on loopback: embedded Redis and Postgres, `ratesvc sim`, migrate, collector, persister,
two `ratesvc api` workers (127.0.0.2 and 127.0.0.3, one port, found by HAProxy through a DNS name
as in Docker), two `bench/bare_app.py` workers the same way, and two HAProxy instances running
haproxy/haproxy.cfg unchanged (addresses and ports through its LB_* variables; the per-client
rate limit off). Then, `--rounds` times, wrk at `--connections` for `--seconds` on:
(a) the bare endpoint (the ceiling), (b) /courses, (c) /courses revalidated with If-None-Match
(304), (d) /courses?exchanger=binance&direction=BTC-USD,ETH-RUB. Next, while wrk loads /courses,
the simulator moves BTCUSDT `--changes` times and both workers are polled until they serve the
new value (freshness). `--soak-seconds` N adds an N-second run sampling each worker's RSS.
Prints the table and rewrites the results block of `--out` (text outside it is kept).
Every loop is bounded in count and time; only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import httpx
import orjson
import uvicorn

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

# pylint: disable=wrong-import-position
from ratesvc.embedded import EmbeddedPostgres, EmbeddedRedis  # noqa: E402
from tests.deploy.native import (  # noqa: E402
    HAPROXY_CFG,
    Daemon,
    StaticDns,
    free_tcp_port,
    parse_metrics,
)
from tests.e2e.harness import PRICES  # noqa: E402

WORKER_HOSTS = ("127.0.0.2", "127.0.0.3")
FILTER = "?exchanger=binance&direction=BTC-USD,ETH-RUB"
LUA_IF_NONE_MATCH = ROOT / "bench" / "if_none_match.lua"
START_TIMEOUT_S = 90.0
BEGIN, END = "<!-- throughput:begin -->", "<!-- throughput:end -->"
Samples = list[tuple[float, list[float]]]  # (seconds since start, RSS MiB per API worker)


@dataclass(frozen=True)
class Scenario:
    """One wrk target: which balancer, which path, optional Lua script, the expected status."""

    key: str
    title: str
    backend: str  # "bare" or "api"
    path: str
    expect: int
    script: Path | None = None


SCENARIOS = (
    Scenario("ceiling", "(a) bare FastAPI, fixed 600 bytes", "bare", "/courses", 200),
    Scenario("courses", "(b) ratesvc `/courses` (8 directions)", "api", "/courses", 200),
    Scenario(
        "revalidate", "(c) (b) + If-None-Match: 304", "api", "/courses", 304, LUA_IF_NONE_MATCH
    ),
    Scenario("filtered", f"(d) ratesvc `/courses{FILTER}`", "api", "/courses" + FILTER, 200),
)


@dataclass
class Run:
    """One wrk run: its figures, where the CPU went, and the statuses the workers counted."""

    scenario: Scenario
    round_no: int
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx_3xx: int
    socket_errors: int
    cpu_s: dict[str, float] = field(default_factory=dict)
    statuses: dict[str, float] = field(default_factory=dict)
    load1: float = 0.0
    raw: str = ""

    @property
    def errors(self) -> int:
        """Non-2xx/3xx answers plus socket errors (connect, read, write, timeout)."""
        return self.non_2xx_3xx + self.socket_errors


# ------------------------------------------------------------------------------------- wrk
def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def parse_wrk(text: str, scenario: Scenario, round_no: int = 0) -> Run:
    """wrk --latency output -> Run."""
    percentiles = dict(re.findall(r"^\s+(\d+)%\s+([\d.]+\w+)$", text, re.M))
    socket = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return Run(
        scenario=scenario,
        round_no=round_no,
        rps=float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),
        p50_ms=_ms(percentiles["50"]),
        p99_ms=_ms(percentiles["99"]),
        requests=int(re.search(r"(\d+) requests in", text).group(1)),
        non_2xx_3xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in socket.groups()) if socket else 0,
        raw=text,
    )


def wrk_command(url: str, args: argparse.Namespace, seconds: float, script: Path | None) -> list:
    """The wrk command line for `url`."""
    command = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{int(seconds)}s"]
    command += ["--latency", "--timeout", "5s"]
    return command + (["-s", str(script)] if script else []) + [url]


# ------------------------------------------------------------------------------ processes
def ratesvc(*args: str) -> list[str]:
    """`python -m ratesvc ...` with this interpreter."""
    return [sys.executable, "-m", "ratesvc", *args]


def wait_for(check, what: str, daemon: Daemon | None = None, timeout_s=START_TIMEOUT_S) -> None:
    """Poll `check` until true; fail with the daemon's log tail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (httpx.HTTPError, KeyError, OSError):
            pass
        time.sleep(0.1)
    tail = daemon.tail() if daemon is not None else ""
    raise SystemExit(f"{what} not ready within {timeout_s:.0f} s\n{tail}")


def http_ok(url: str) -> bool:
    """GET `url` answers 200."""
    return httpx.get(url, timeout=2).status_code == 200


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, steal) CPU seconds of all cores since boot (/proc/stat), for the shares."""
    line = Path("/proc/stat").read_text(encoding="ascii").split("\n", 1)[0]
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, line.split()[1:9])
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick


def rss_mib(pid: int) -> float:
    """Resident set size of a process, MiB."""
    match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(encoding="utf-8"))
    return int(match.group(1)) / 1024 if match else 0.0


class Topology:
    """Everything the benchmark runs, on loopback, started and stopped together."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.daemons: list[Daemon] = []
        self.redis = EmbeddedRedis(workdir / "data")
        self.postgres = EmbeddedPostgres(workdir / "data")
        self.ports: dict[str, int] = {}  # binance, coingecko (the sim), api, bare, lb-api, lb-bare
        self.api: list[Daemon] = []
        self.bare: list[Daemon] = []
        self.lb: dict[str, Daemon] = {}
        self.env: dict[str, str] = {}
        self.control = httpx.Client(timeout=5)

    def start(self, name: str, args: list[str], env: dict[str, str]) -> Daemon:
        """Start one daemon (own session, log under workdir)."""
        daemon = Daemon(name, args, env=env, workdir=self.workdir).start()
        self.daemons.append(daemon)
        return daemon

    @property
    def sim_url(self) -> str:
        """The simulator's control API."""
        return f"http://127.0.0.1:{self.ports['binance']}/_sim"

    def sim(self, path: str, body: dict) -> None:
        """POST to the simulator's control API (one kept-alive client: no per-call setup)."""
        self.control.post(self.sim_url + path, json=body).raise_for_status()

    def start_service(self) -> None:
        """Redis, Postgres, sim, migrate, collector, persister and the two API workers."""
        self.redis.start()
        self.postgres.start()
        for name in ("binance", "coingecko"):
            self.ports[name] = free_tcp_port("127.0.0.1")
        args = ["--binance-port", str(self.ports["binance"])]
        sim = self.start(
            "sim",
            ratesvc("sim", *args, "--coingecko-port", str(self.ports["coingecko"])),
            dict(os.environ),
        )
        wait_for(lambda: http_ok(f"{self.sim_url}/state"), "sim", sim)
        self.sim("/prices", PRICES)
        self.env = self.service_env()
        migrate = subprocess.run(
            ratesvc("migrate"),
            env=self.env,
            cwd=self.workdir,
            capture_output=True,
            timeout=180,
            check=False,
            text=True,
        )
        if migrate.returncode:
            raise SystemExit(f"migrate failed:\n{migrate.stdout[-2000:]}{migrate.stderr[-2000:]}")
        for role in ("collector", "persister"):
            self.start(role, ratesvc(role), self.env)
        self.ports["api"] = free_tcp_port(*WORKER_HOSTS)
        for host in WORKER_HOSTS:
            args = ratesvc("api", "--host", host, "--port", str(self.ports["api"]))
            self.api.append(self.start(f"api-{host}", args, self.env))
        for host, daemon in zip(WORKER_HOSTS, self.api):
            url = f"http://{host}:{self.ports['api']}/courses"
            wait_for(lambda u=url: _eight(httpx.get(u, timeout=2)), daemon.name, daemon)

    def service_env(self) -> dict[str, str]:
        """The roles' environment: the simulator, the embedded servers, production cadences."""
        drop = ("LB_", "REDIS_URL", "DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR", "RATESVC_")
        env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
        env.update(
            BINANCE_WS_URL=f"ws://127.0.0.1:{self.ports['binance']}",
            BINANCE_REST_URL=f"http://127.0.0.1:{self.ports['binance']}",
            COINGECKO_API_URL=f"http://127.0.0.1:{self.ports['coingecko']}/api/v3",
            COINGECKO_POLL_INTERVAL_S="5",
            REDIS_URL=self.redis.url,
            DATABASE_URL=self.postgres.url,
            DATA_DIR=str(self.workdir / "data"),
            LOG_LEVEL="WARNING",
            COLLECTOR_METRICS_PORT="0",
            PERSISTER_METRICS_PORT="0",
        )
        return env

    def start_bare(self) -> None:
        """Two bare_app workers on the API workers' addresses, another port."""
        self.ports["bare"] = free_tcp_port(*WORKER_HOSTS)
        for host in WORKER_HOSTS:
            args = [sys.executable, str(ROOT / "bench" / "bare_app.py"), "--host", host]
            self.bare.append(
                self.start(f"bare-{host}", [*args, "--port", str(self.ports["bare"])], self.env)
            )
        for host, daemon in zip(WORKER_HOSTS, self.bare):
            url = f"http://{host}:{self.ports['bare']}/ready"
            wait_for(lambda u=url: http_ok(u), daemon.name, daemon)

    def start_balancers(self, dns: StaticDns, backends: tuple[str, ...] = ("api", "bare")) -> None:
        """haproxy/haproxy.cfg once per backend: the API workers and/or the bare ones."""
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        for backend in backends:
            port = self.ports[backend]
            lb_port, stats_port = free_tcp_port("127.0.0.1"), free_tcp_port("127.0.0.1")
            env = {k: v for k, v in os.environ.items() if not k.startswith("LB_")} | {
                "LB_BIND": f"127.0.0.1:{lb_port}",
                "LB_STATS_BIND": f"127.0.0.1:{stats_port}",
                "LB_API_ADDR": f"api:{port}",
                "LB_DNS": dns.address,
                "LB_RATE_LIMIT": "0",  # one client IP sends everything here
            }
            daemon = self.start(f"haproxy-{backend}", [haproxy, "-db", "-f", str(HAPROXY_CFG)], env)
            self.lb[backend], self.ports[f"lb-{backend}"] = daemon, lb_port
            stats = f"http://127.0.0.1:{stats_port}/metrics"
            wait_for(lambda s=stats: _active_servers(s) == len(WORKER_HOSTS), daemon.name, daemon)

    def url(self, scenario: Scenario) -> str:
        """The balancer URL of a scenario."""
        return f"http://127.0.0.1:{self.ports['lb-' + scenario.backend]}{scenario.path}"

    def workers(self, backend: str) -> list[Daemon]:
        """The worker daemons behind a balancer."""
        return self.api if backend == "api" else self.bare

    def worker_statuses(self) -> dict[str, float]:
        """ratesvc_http_requests_total of both API workers, summed per status code."""
        totals: dict[str, float] = {}
        for host in WORKER_HOSTS:
            text = httpx.get(f"http://{host}:{self.ports['api']}/metrics", timeout=5).text
            for labels, value in parse_metrics(text).get("ratesvc_http_requests_total", []):
                if labels.get("path") == "/courses":
                    code = labels["status_code"]
                    totals[code] = totals.get(code, 0.0) + value
        return totals

    def stop(self) -> None:
        """Stop every daemon, then the embedded servers."""
        self.control.close()
        for daemon in reversed(self.daemons):
            daemon.stop(timeout_s=10)
        self.postgres.stop()
        self.redis.stop()


@contextmanager
def running_topology(
    prefix: str, backends: tuple[str, ...] = ("api", "bare")
) -> Iterator[Topology]:
    """A started Topology (bare workers only for the "bare" backend), stopped and removed after.

    The work directory (data dirs, every daemon's log) is kept only when something failed.
    """
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    topo = Topology(workdir)
    try:
        with StaticDns({"api": list(WORKER_HOSTS)}) as dns:
            topo.start_service()
            if "bare" in backends:
                topo.start_bare()
            topo.start_balancers(dns, backends)
            yield topo
    except BaseException:
        print(f"logs kept in {workdir}", file=sys.stderr)
        raise
    finally:
        topo.stop()
    shutil.rmtree(workdir, ignore_errors=True)


def _eight(response: httpx.Response) -> bool:
    return response.status_code == 200 and len(response.json()["courses"]) == 8


def _active_servers(stats_url: str) -> float:
    samples = parse_metrics(httpx.get(stats_url, timeout=2).text)
    return sum(
        v for labels, v in samples["haproxy_backend_active_servers"] if labels["proxy"] == "api"
    )


# ---------------------------------------------------------------------------- measurement
class CpuMeter:
    """CPU seconds spent during a run: balancer, workers, wrk (a reaped child), the rest."""

    def __init__(self, pids: dict[str, list[int]]) -> None:
        self.pids = pids
        self.start = self._read()

    def _read(self) -> tuple[dict[str, float], float, tuple[float, float], float]:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return (
            {k: sum(cpu_seconds(p) for p in v) for k, v in self.pids.items()},
            children.ru_utime + children.ru_stime,
            machine_cpu_seconds(),
            time.monotonic(),
        )

    def stop(self) -> dict[str, float]:
        """The shares since construction: haproxy, workers, wrk, other, steal, idle."""
        (procs, wrk, (busy, steal), wall), start = self._read(), self.start
        shares = {k: v - start[0][k] for k, v in procs.items()} | {"wrk": wrk - start[1]}
        busy, steal, wall = busy - start[2][0], steal - start[2][1], wall - start[3]
        shares["other"] = max(0.0, busy - sum(shares.values()))
        shares["steal"] = steal
        shares["idle"] = max(0.0, (os.cpu_count() or 1) * wall - busy - steal)
        return shares


def measure(
    topo: Topology, scenario: Scenario, args: argparse.Namespace, env: dict, round_no: int
) -> Run:
    """One wrk run of `scenario`, with CPU accounting and the workers' status counts."""
    check = httpx.get(topo.url(scenario), headers=_headers(env, scenario), timeout=5)
    if check.status_code != scenario.expect:
        raise SystemExit(f"{scenario.key}: expected {scenario.expect}, got {check.status_code}")
    load1 = os.getloadavg()[0]
    before_status = topo.worker_statuses()
    meter = CpuMeter(
        {
            "haproxy": [topo.lb[scenario.backend].proc.pid],
            "workers": [d.proc.pid for d in topo.workers(scenario.backend)],
        }
    )
    out = subprocess.run(
        wrk_command(topo.url(scenario), args, args.seconds, scenario.script),
        capture_output=True, text=True, env=env, timeout=args.seconds + 60, check=True,
    )  # fmt: skip
    run = parse_wrk(out.stdout, scenario, round_no)
    run.cpu_s = meter.stop()
    after_status = topo.worker_statuses()
    run.statuses = {
        code: n - before_status.get(code, 0.0)
        for code, n in after_status.items()
        if n - before_status.get(code, 0.0) > 0
    }
    run.load1 = load1
    return run


def _headers(env: dict[str, str], scenario: Scenario) -> dict[str, str]:
    return {"If-None-Match": env["ETAG"]} if scenario.script else {}


@contextmanager
def background_wrk(topo: Topology, args: argparse.Namespace, bound_s: float) -> Iterator[None]:
    """wrk loading /courses through HAProxy for at most `bound_s`, stopped on exit."""
    command = wrk_command(topo.url(SCENARIOS[1]), args, bound_s, None)
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(2)  # let the load build up
        yield
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def btc_usd(client: httpx.Client) -> Decimal | None:
    """Binance BTC-USD as one worker serves it now."""
    response = client.get("/courses", params={"exchanger": "binance", "direction": "BTC-USD"})
    if response.status_code != 200:
        return None
    return Decimal(str(orjson.loads(response.content)["courses"][0]["value"]))


def freshness(topo: Topology, args: argparse.Namespace) -> dict[str, list[float]]:
    """ms from a simulator price change until the first / every worker serves it, under load."""
    clients = [
        httpx.Client(base_url=f"http://{h}:{topo.ports['api']}", timeout=5) for h in WORKER_HOSTS
    ]
    delays: dict[str, list[float]] = {"first": [], "every": [], "missed": []}
    bound_s = 5 + args.changes * (args.change_spacing_s + 2)
    with background_wrk(topo, args, bound_s):
        for i in range(args.changes):
            price = Decimal(f"{71000 + i}.25")
            sent = time.monotonic()
            topo.sim("/prices", {"binance": {"BTCUSDT": str(price)}})
            seen: dict[int, float] = {}
            while len(seen) < len(clients) and time.monotonic() - sent < 2:
                for n, client in enumerate(clients):
                    if n not in seen and btc_usd(client) == price:
                        seen[n] = (time.monotonic() - sent) * 1000
            if len(seen) < len(clients):
                delays["missed"].append(float(i))
            else:
                delays["first"].append(min(seen.values()))
                delays["every"].append(max(seen.values()))
            time.sleep(args.change_spacing_s)
    for client in clients:
        client.close()
    return delays


def soak(topo: Topology, args: argparse.Namespace) -> tuple[Samples, Run]:
    """RSS of each API worker every `--rss-every-s` while wrk loads /courses for --soak-seconds."""
    samples = [(0.0, [rss_mib(d.proc.pid) for d in topo.api])]
    command = wrk_command(topo.url(SCENARIOS[1]), args, args.soak_seconds, None)
    started = time.monotonic()
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as proc:
        while proc.poll() is None and time.monotonic() - started < args.soak_seconds + 60:
            time.sleep(args.rss_every_s)
            samples.append((time.monotonic() - started, [rss_mib(d.proc.pid) for d in topo.api]))
        out, _ = proc.communicate(timeout=60)
    samples.append((time.monotonic() - started, [rss_mib(d.proc.pid) for d in topo.api]))
    return samples, parse_wrk(out, SCENARIOS[1])


# -------------------------------------------------------------------------------- report
def pct(values: list[float], q: float) -> float:
    """Nearest-rank q-quantile (0..1)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def summary(runs: list[Run]) -> dict[str, Run]:
    """Per scenario, the run with the median req/s (the lower middle one for an even count)."""
    chosen = {}
    for scenario in SCENARIOS:
        mine = sorted((r for r in runs if r.scenario is scenario), key=lambda r: r.rps)
        chosen[scenario.key] = mine[(len(mine) - 1) // 2]
    return chosen


def round_ratios(runs: list[Run], top: str, bottom: str) -> str:
    """`top` req/s over `bottom` req/s in each round, as text."""
    rps = {(r.round_no, r.scenario.key): r.rps for r in runs}
    rounds = sorted({r.round_no for r in runs})
    return ", ".join(f"{rps[(n, top)] / rps[(n, bottom)]:.2f}" for n in rounds)


def results_table(runs: list[Run]) -> str:
    """Markdown: the summary table with the ratio, then every run with its CPU split."""
    best = summary(runs)
    ceiling = best["ceiling"].rps
    lines = [
        "| scenario | req/s | vs ceiling | p50 ms | p99 ms | errors "
        "| statuses counted by the workers |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for scenario in SCENARIOS:
        run = best[scenario.key]
        counted = ", ".join(f"{c}: {int(n)}" for c, n in sorted(run.statuses.items())) or "n/a"
        lines.append(
            f"| {scenario.title} | {run.rps:,.0f} | {run.rps / ceiling:.2f} | {run.p50_ms:.2f} "
            f"| {run.p99_ms:.2f} | {run.errors} | {counted} |"
        )
    lines += ["", f"**Ratio b/a = {best['courses'].rps / ceiling:.3f}** (medians), 304 path / "
              f"ceiling = {best['revalidate'].rps / ceiling:.3f}, 304 / 200 = "
              f"{best['revalidate'].rps / best['courses'].rps:.3f}. Per round, b/a: "
              f"{round_ratios(runs, 'courses', 'ceiling')}; c/b: "
              f"{round_ratios(runs, 'revalidate', 'courses')}.", ""]  # fmt: skip
    lines += [
        "Every run (CPU seconds over the run; 2 cores give 2 s per second of wall time; "
        "`other` is every other process on the machine: sim, collector, persister, Redis, "
        "Postgres, the idle balancer and workers, and anything else running; `steal` is time "
        "the hypervisor gave to other guests):",
        "",
        "| round | scenario | req/s | p50 ms | p99 ms | errors | load1 before | wrk | haproxy "
        "| workers | other | steal | idle |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        cpu = run.cpu_s
        lines.append(
            f"| {run.round_no} | {run.scenario.key} | {run.rps:,.0f} | {run.p50_ms:.2f} "
            f"| {run.p99_ms:.2f} | {run.errors} | {run.load1:.2f} | {cpu['wrk']:.1f} "
            f"| {cpu['haproxy']:.1f} | {cpu['workers']:.1f} | {cpu['other']:.1f} "
            f"| {cpu['steal']:.1f} | {cpu['idle']:.1f} |"
        )
    return "\n".join(lines)


def freshness_text(delays: dict[str, list[float]], args: argparse.Namespace) -> str:
    """Markdown lines for the freshness figures."""
    if not delays["every"]:
        return "No change became visible (see the logs)."
    rows = ["| measured over | changes | p50 ms | p99 ms | max ms |", "|---|---:|---:|---:|---:|"]
    for key, label in (("first", "first worker serving it"), ("every", "both workers serving it")):
        values = delays[key]
        rows.append(
            f"| {label} | {len(values)} | {statistics.median(values):.1f} "
            f"| {pct(values, 0.99):.1f} | {max(values):.1f} |"
        )
    missed = (
        f" {len(delays['missed'])} changes were not visible within 2 s." if delays["missed"] else ""
    )
    return (
        f"While wrk loads `GET /courses` through HAProxy ({args.connections} connections), the "
        f"simulator's BTCUSDT moves {args.changes} times, {args.change_spacing_s} s apart (`POST "
        "/_sim/prices`); both workers are then polled directly (`?exchanger=binance&direction="
        "BTC-USD`) until they serve the new value. Clock starts before the POST."
        f"{missed}\n\n" + "\n".join(rows)
    )


def soak_text(first: list[float], samples: Samples, run: Run | None) -> str:
    """Markdown for the RSS figures: before any load, then the soak samples (or the end)."""
    before = ", ".join(f"{v:.1f}" for v in first)
    rows = ["| t (s) | " + " | ".join(f"worker {h}, MiB" for h in WORKER_HOSTS) + " |"]
    rows.append("|---:|" + "---:|" * len(WORKER_HOSTS))
    step = max(1, (len(samples) - 1) // 10)
    shown = samples[::step] if (len(samples) - 1) % step == 0 else [*samples[::step], samples[-1]]
    rows += [f"| {t:.0f} | " + " | ".join(f"{v:.1f}" for v in values) + " |" for t, values in shown]
    growth = ", ".join(f"{end - start:+.1f}" for start, end in zip(samples[0][1], samples[-1][1]))
    if run is None:
        head = f"No soak run (`--soak-seconds 0`); after every run above: {growth} MiB."
    else:
        head = (
            f"Soak: wrk on `GET /courses` through HAProxy for {samples[-1][0]:.0f} s "
            f"({run.requests:,} requests, {run.rps:,.0f} req/s, {run.errors} errors); RSS sampled "
            f"every {samples[1][0]:.0f} s. Growth over the soak: {growth} MiB per worker."
        )
    return f"RSS before any load: {before} MiB. {head}\n\n" + "\n".join(rows)


def machine() -> str:
    """One line describing the machine and tool versions."""
    model = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text(encoding="utf-8"))
    haproxy = subprocess.run(["haproxy", "-v"], capture_output=True, text=True, check=False)
    wrk_v = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    return (
        f"{os.cpu_count()} cores ({model.group(1) if model else 'unknown CPU'}), "
        f"{platform.platform()}, Python {platform.python_version()}, "
        f"uvicorn {uvicorn.__version__}, "
        f"{haproxy.stdout.splitlines()[0] if haproxy.stdout else 'haproxy ?'}, "
        f"{(wrk_v.stdout or wrk_v.stderr).split(' [')[0].strip()}"
    )


def write_report(out: Path, block: str) -> None:
    """Replace the results block of `out` (or create the file with just the block)."""
    text = out.read_text() if out.exists() else f"# Performance\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text:
        text += f"\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1] if END in rest else ""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"{head}{BEGIN}\n{block.strip()}\n{END}{tail}")


# ---------------------------------------------------------------------------------- main
def parse_args() -> argparse.Namespace:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=int, default=20, help="wrk duration per run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--rounds", type=int, default=3, help="a-d repeated; median kept")
    parser.add_argument("--changes", type=int, default=50, help="price changes (0: skip)")
    parser.add_argument("--change-spacing-s", type=float, default=0.5)
    parser.add_argument("--soak-seconds", type=int, default=0, help="RSS soak run (0: skip)")
    parser.add_argument("--rss-every-s", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "performance.md")
    parser.add_argument("--no-write", action="store_true", help="print only")
    return parser.parse_args()


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this run."""
    parts = ["python bench/throughput.py", f"--seconds {args.seconds}"]
    parts += [f"--connections {args.connections}", f"--rounds {args.rounds}"]
    parts += [f"--changes {args.changes}", f"--soak-seconds {args.soak_seconds}"]
    return " ".join(parts)


def benchmark(topo: Topology, args: argparse.Namespace) -> str:
    """Every measurement on a running topology; returns the markdown block."""
    rss_first = [rss_mib(d.proc.pid) for d in topo.api]
    started = time.monotonic()
    etag = httpx.get(topo.url(SCENARIOS[1]), timeout=5).headers["etag"]
    env = dict(os.environ) | {"ETAG": etag}
    runs = []
    for round_no in range(1, args.rounds + 1):
        # Each round starts one scenario later: no scenario always runs right after another.
        shift = (round_no - 1) % len(SCENARIOS)
        for scenario in SCENARIOS[shift:] + SCENARIOS[:shift]:
            run = measure(topo, scenario, args, env, round_no)
            print(f"round {round_no} {scenario.key}: {run.rps:,.0f} req/s "
                  f"p50 {run.p50_ms:.2f} ms p99 {run.p99_ms:.2f} ms errors {run.errors}",
                  flush=True)  # fmt: skip
            runs.append(run)
    delays = freshness(topo, args) if args.changes else None
    if args.soak_seconds:
        soak_samples, soak_run = soak(topo, args)
    else:
        now = [rss_mib(d.proc.pid) for d in topo.api]
        soak_samples, soak_run = [(0.0, rss_first), (time.monotonic() - started, now)], None
    parts = [
        f"Command: `{command_line(args)}`  ",
        f"Machine: {machine()}  ",
        f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Balancer: the project's "
        "`haproxy/haproxy.cfg` (LB_* set to loopback values, `LB_RATE_LIMIT=0`), one instance "
        "per target, 2 workers each (127.0.0.2 and 127.0.0.3, one uvicorn process each, found "
        "through a DNS name as in Docker). wrk "
        f"`-t{args.threads} -c{args.connections} -d{args.seconds}s`, {args.rounds} round(s) of "
        "a-b-c-d; the summary keeps each scenario's median run. Load generator, balancer, "
        "workers and the rest of the service share the same cores.",
        "",
        "### Throughput",
        "",
        results_table(runs),
        "",
        "### Freshness under load",
        "",
        freshness_text(delays, args) if delays else "Skipped (`--changes 0`).",
        "",
        "### Memory (RSS per API worker)",
        "",
        soak_text(rss_first, soak_samples, soak_run),
    ]
    return "\n".join(parts)


def main() -> None:
    """Start the topology, measure, report, stop everything."""
    args = parse_args()
    for tool in ("wrk", "haproxy"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            raise SystemExit(f"{tool} is not installed (apt-get install {tool})")
    with running_topology("ratesvc-throughput-") as topo:
        block = benchmark(topo, args)
    print(block)
    if not args.no_write:
        write_report(args.out, block)
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
