"""The native benchmark topology: ratesvc behind the project's HAProxy, on loopback.

Embedded Redis and Postgres, `ratesvc sim`, migrate, collector, persister, two `ratesvc api`
workers (127.0.0.2 and 127.0.0.3, one port, found by HAProxy through a DNS name as in Docker),
optionally two `bench/bare_app.py` workers the same way, and one HAProxy per backend running
haproxy/haproxy.cfg unchanged (addresses and ports through its LB_* variables; the per-client
rate limit off). Used by bench/throughput.py (wrk) and locust/run.py (Locust), with the CPU and
memory meters both report.
"""

from __future__ import annotations

import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

# pylint: disable=wrong-import-position
from ratesvc.embedded import EmbeddedPostgres, EmbeddedRedis  # noqa: E402
from testkit.market import PRICES  # noqa: E402
from testkit.net import StaticDns, free_tcp_port, lb_maxconn, parse_metrics  # noqa: E402
from testkit.procs import Daemon  # noqa: E402

HAPROXY_CFG = ROOT / "haproxy" / "haproxy.cfg"
WORKER_HOSTS = ("127.0.0.2", "127.0.0.3")
START_TIMEOUT_S = 90.0


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
            COINGECKO_ACTIVE_POLL_INTERVAL_S="5",
            COINGECKO_CALLS_PER_MONTH="100000000",  # the simulator has no quota
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

    def start_balancers(
        self,
        dns: StaticDns,
        backends: tuple[str, ...] = ("api", "bare"),
        lb_env: dict[str, str] | None = None,
        copies: int = 1,
    ) -> None:
        """haproxy/haproxy.cfg once per backend: the API workers and/or the bare ones.

        `lb_env` overrides LB_* variables (e.g. LB_MAXCONN for many long-lived connections).
        `copies` > 1 starts that many balancers per backend, keyed "<backend>", "<backend>#2", ...
        (more connections than one process's open-file limit lets one HAProxy hold).
        """
        haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
        for backend, copy in ((b, c) for b in backends for c in range(copies)):
            key = backend if copy == 0 else f"{backend}#{copy + 1}"
            port = self.ports[backend]
            lb_port, stats_port = free_tcp_port("127.0.0.1"), free_tcp_port("127.0.0.1")
            env = (
                {k: v for k, v in os.environ.items() if not k.startswith("LB_")}
                | {
                    "LB_BIND": f"127.0.0.1:{lb_port}",
                    "LB_STATS_BIND": f"127.0.0.1:{stats_port}",
                    "LB_API_ADDR": f"api:{port}",
                    "LB_DNS": dns.address,
                    "LB_RATE_LIMIT": "0",  # one client IP sends everything here
                    "LB_MAXCONN": str(lb_maxconn()),
                }
                | (lb_env or {})
            )
            daemon = self.start(f"haproxy-{key}", [haproxy, "-db", "-f", str(HAPROXY_CFG)], env)
            self.lb[key], self.ports[f"lb-{key}"] = daemon, lb_port
            stats = f"http://127.0.0.1:{stats_port}/metrics"
            wait_for(lambda s=stats: _active_servers(s) == len(WORKER_HOSTS), daemon.name, daemon)

    def url(self, backend: str, path: str) -> str:
        """The URL of `path` through the balancer of `backend` ("api", "bare", "api#2", ...)."""
        return f"http://127.0.0.1:{self.ports['lb-' + backend]}{path}"

    def workers(self, backend: str) -> list[Daemon]:
        """The worker daemons behind a balancer."""
        return self.api if backend == "api" else self.bare

    def worker_statuses(self, path: str = "/courses") -> dict[str, float]:
        """ratesvc_http_requests_total of `path` on both API workers, summed per status code."""
        totals: dict[str, float] = {}
        for host in WORKER_HOSTS:
            text = httpx.get(f"http://{host}:{self.ports['api']}/metrics", timeout=5).text
            for labels, value in parse_metrics(text).get("ratesvc_http_requests_total", []):
                if labels.get("path") == path:
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
    prefix: str,
    backends: tuple[str, ...] = ("api", "bare"),
    lb_env: dict[str, str] | None = None,
    lb_copies: int = 1,
) -> Iterator[Topology]:
    """A started Topology (bare workers only for the "bare" backend), stopped and removed after.

    The work directory (data dirs, every daemon's log) is kept only when something failed.
    """
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    workdir.chmod(0o755)  # ours: the embedded Postgres user keeps its cluster here
    topo = Topology(workdir)
    try:
        with StaticDns({"api": list(WORKER_HOSTS)}) as dns:
            topo.start_service()
            if "bare" in backends:
                topo.start_bare()
            topo.start_balancers(dns, backends, lb_env, lb_copies)
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


# ------------------------------------------------------------------------- meters
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
