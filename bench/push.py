"""10,000 subscribers of GET /v2/stream behind HAProxy with 2 API workers, on this machine.

Usage: python bench/push.py [--subscribers 10000] [--processes 2] [--changes 30]
                            [--spacing-s 1.0] [--path /v2/stream] [--wrk-seconds 15]
                            [--wrk-connections 32] [--out docs/performance.md] [--no-write]

Starts the native topology of bench/topology.py (embedded Redis and Postgres, `ratesvc sim`,
collector, persister, two `ratesvc api` workers, the project's haproxy/haproxy.cfg; as many
HAProxy processes as the open-file limit needs for the subscribers, each in front of both
workers). Then:
1. wrk loads v1 `/courses` through HAProxy for `--wrk-seconds`: v1's req/s without subscribers.
2. `--subscribers` SSE connections through HAProxy (testkit.sse_load: `--processes` client
   processes on the same cores), each until it holds the first event; the workers' and
   HAProxy's RSS before and after give the memory per subscriber.
3. Fan-out alone: the simulator moves BTCUSDT `--changes` times, `--spacing-s` apart; for every
   change and every subscriber, when it first held that change (an event carrying it or a later
   one: coalescing may skip states). Two delays: end to end, from the simulator call (simulator
   -> collector -> Redis -> API, the coalescing window -> HAProxy -> client), and the fan-out,
   from the first subscriber holding the change to each one holding it.
4. Fan-out under load: the same while wrk loads v1 `/courses`: v1's req/s during the fan-out.
Prints the report and rewrites the push block of `--out`. Loopback only; every wait is bounded.
"""

from __future__ import annotations

import argparse
import math
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

# pylint: disable=wrong-import-position
from bench.throughput import SCENARIOS, parse_wrk, pct, write_report  # noqa: E402
from bench.topology import CpuMeter, Topology, machine, rss_mib, running_topology  # noqa: E402

from testkit.net import lb_maxconn  # noqa: E402
from testkit.sse_load import ClientReport, Fleet, Marker  # noqa: E402

BEGIN, END = "<!-- push:begin -->", "<!-- push:end -->"
TARGET_MS = 250.0
MARKER = Marker("BTCUSDT", 80_000)


@dataclass
class Delays:
    """The delays of one phase, ms."""

    end_to_end: list[float] = field(default_factory=list)
    fan_out: list[float] = field(default_factory=list)
    missing: int = 0
    per_change_p99: list[float] = field(default_factory=list)  # each change's own fan-out p99


def parse_args() -> argparse.Namespace:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--processes", type=int, default=2, help="client processes")
    parser.add_argument("--changes", type=int, default=30, help="price changes per phase")
    parser.add_argument("--spacing-s", type=float, default=1.0, help="between two changes")
    parser.add_argument("--path", default="/v2/stream", help="what the subscribers open")
    parser.add_argument("--wrk-seconds", type=int, default=15)
    parser.add_argument("--wrk-connections", type=int, default=32)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "performance.md")
    parser.add_argument("--no-write", action="store_true", help="print only")
    return parser.parse_args()


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this run."""
    return (
        f"python bench/push.py --subscribers {args.subscribers} --processes {args.processes} "
        f"--changes {args.changes} --spacing-s {args.spacing_s} --path {args.path} "
        f"--wrk-seconds {args.wrk_seconds} --wrk-connections {args.wrk_connections}"
    )


def haproxy_pids(topo: Topology) -> list[int]:
    """Every balancer of the API workers (one per LB_MAXCONN's worth of subscribers)."""
    return [d.proc.pid for k, d in topo.lb.items() if k.split("#")[0] == "api"]


def wrk(topo: Topology, args: argparse.Namespace, seconds: int) -> subprocess.Popen:
    """wrk on v1 /courses through HAProxy, started (read its stdout when it ends)."""
    command = ["wrk", "-t1", f"-c{args.wrk_connections}", f"-d{seconds}s", "--latency"]
    command += ["--timeout", "5s", topo.url("api", "/courses")]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


def v1_rps(proc: subprocess.Popen, bound_s: float) -> tuple[float, float, int]:
    """(req/s, p99 ms, errors) of a finished wrk run."""
    out, _ = proc.communicate(timeout=bound_s)
    try:
        run = parse_wrk(out, SCENARIOS[1])
    except (KeyError, AttributeError, ValueError):
        print(f"wrk gave no figures:\n{out}", flush=True)
        return 0.0, float("nan"), -1
    return run.rps, run.p99_ms, run.errors


def changes(topo: Topology, first: int, count: int, spacing_s: float) -> dict[int, float]:
    """Move the marker market `count` times from change `first`; change -> monotonic time."""
    sent = {}
    for k in range(first, first + count):
        sent[k] = time.monotonic()
        topo.sim("/prices", {"binance": {MARKER.symbol: MARKER.price(k)}})
        time.sleep(spacing_s)  # pacing of the load, not a synchronisation
    return sent


def delays(report: ClientReport, sent: dict[int, float], subscribers: int) -> Delays:
    """Per (change, subscriber), ms to holding the change: from the simulator call (end to end)
    and from the first subscriber holding it (the fan-out: the change leaving the workers); and
    how many (change, subscriber) pairs never held it."""
    result = Delays()
    for k, at in sent.items():
        held = report.held.get(k, [])
        if held:
            first = min(held)
            fan_out = [(t - first) * 1000 for t in held]
            result.end_to_end.extend((t - at) * 1000 for t in held)
            result.fan_out.extend(fan_out)
            result.per_change_p99.append(pct(fan_out, 0.99))
        result.missing += subscribers - len(held)
    return result


@dataclass
class Phase:
    """One phase's delays, CPU seconds per process group (CpuMeter) and events received."""

    delays: Delays
    cpu: dict[str, float]
    events: int


def phase(
    topo: Topology, fleet: Fleet, connected: int, first: int, args: argparse.Namespace
) -> Phase:
    """One phase of changes; waits (bounded) until every subscriber holds the last one."""
    pids = {"haproxy": haproxy_pids(topo), "workers": [d.proc.pid for d in topo.api]}
    events_before = fleet.progress().events
    meter = CpuMeter(pids | {"load generator": fleet.pids})
    sent = changes(topo, first, args.changes, args.spacing_s)
    last = first + args.changes - 1
    report = fleet.wait_until(lambda p: p.held.get(last, 0) >= connected, timeout_s=15)
    cpu = meter.stop()
    return Phase(delays(report, sent, connected), cpu, report.events - events_before)


def quantiles(values: list[float]) -> str:
    """p50 / p99 / max as table cells."""
    if not values:
        return "none | | "
    return f"{pct(values, 0.5):.0f} ms | {pct(values, 0.99):.0f} ms | {max(values):.0f} ms"


def summarize(found: Delays) -> str:
    """One table row's cells: end to end, fan-out, share of fan-outs within the target."""
    total = len(found.fan_out) + found.missing
    within = sum(v <= TARGET_MS for v in found.fan_out) / total if total else 0.0
    return (
        f"{quantiles(found.end_to_end)} | {quantiles(found.fan_out)} | {within:.2%} | "
        f"{found.missing:,}"
    )


def spread(found: Delays) -> str:
    """How the changes of a phase differ: the median and range of their own fan-out p99s."""
    if not found.per_change_p99:
        return "none"
    values = found.per_change_p99
    return f"median {pct(values, 0.5):.0f} ms, {min(values):.0f}-{max(values):.0f} ms"


def cpu_text(found: Phase, seconds: float) -> str:
    """CPU shares in cores over the phase, and per event pushed for the processes on its path."""
    cpu = found.cpu
    cores = ", ".join(f"{k} {v / seconds:.2f}" for k, v in cpu.items() if k != "steal")
    path = ("haproxy", "workers", "load generator")
    events = max(found.events, 1)
    per_event = ", ".join(f"{k} {cpu[k] / events * 1e6:.1f}" for k in path)
    return f"{cores} (µs per event: {per_event}; {found.events:,} events)"


def benchmark(topo: Topology, args: argparse.Namespace) -> str:  # pylint: disable=too-many-locals
    """Every measurement on a running topology; returns the markdown block."""
    baseline = v1_rps(wrk(topo, args, args.wrk_seconds), args.wrk_seconds + 60)
    print(f"v1 alone: {baseline[0]:,.0f} req/s", flush=True)
    balancers = [k for k in topo.lb if k.split("#")[0] == "api"]
    pids = {"workers": [d.proc.pid for d in topo.api], "haproxy": haproxy_pids(topo)}
    rss_before = {k: sum(rss_mib(p) for p in v) for k, v in pids.items()}
    urls = [httpx.URL(topo.url(key, args.path)) for key in balancers]
    fleet = Fleet(
        [(u.host, u.port) for u in urls], args.path, args.subscribers, MARKER, args.processes
    )
    started = time.monotonic()
    connected, failed = fleet.start()
    report = fleet.wait_until(lambda p: p.first_event >= connected, timeout_s=120)
    connect_s = time.monotonic() - started
    print(f"{connected:,} connected ({failed} failed), {report.first_event:,} hold the first "
          f"event after {connect_s:.1f} s", flush=True)  # fmt: skip
    rss_after = {k: sum(rss_mib(p) for p in v) for k, v in pids.items()}
    alone = phase(topo, fleet, connected, 1, args)
    print(
        f"fan-out alone: {summarize(alone.delays)}; per change p99 {spread(alone.delays)}",
        flush=True,
    )
    load = wrk(topo, args, int(args.changes * args.spacing_s) + 3)
    loaded = phase(topo, fleet, connected, 1 + args.changes, args)
    during = v1_rps(load, args.changes * args.spacing_s + 90)
    print(f"fan-out + wrk: {summarize(loaded.delays)}; v1 {during[0]:,.0f} req/s", flush=True)
    final = fleet.stop()
    seconds = args.changes * args.spacing_s
    per_sub = {k: (rss_after[k] - rss_before[k]) * 1024 / max(connected, 1) for k in rss_before}
    return "\n".join(
        [
            f"Command: `{command_line(args)}`  ",
            f"Machine: {machine()}  ",
            f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Subscribers: "
            f"{connected:,} connected ({failed} failed) to `{args.path}` through the project's "
            f"HAProxy config ({len(balancers)} HAProxy process(es): this machine's hard "
            f"open-file limit of {resource.getrlimit(resource.RLIMIT_NOFILE)[1]:,} holds "
            f"{lb_maxconn():,} proxied connections per process) in front of 2 API workers, "
            f"{len(fleet.shares)} client processes on the same 2 cores; "
            f"all held their first event {connect_s:.1f} s after the first connect. Changes: "
            f"BTCUSDT moved in the simulator {args.changes} times per phase, {args.spacing_s} s "
            "apart. A subscriber holds a change from the first event carrying it (or a later "
            "one). *End to end* runs from the simulator call: it includes the collector, Redis, "
            "the workers' mirror and the coalescing window (one event per subscriber per "
            "STREAM_MIN_INTERVAL_MS, 250 ms: the v2 body changes with every leg refresh, so a "
            "price change often waits for the window). *Fan-out* runs from the first of all "
            "subscribers holding the change (the change leaving the workers) to each "
            f"subscriber holding it; the target (every subscriber within {TARGET_MS:.0f} ms, "
            "p99) is judged on it.",
            "",
            "| phase | end to end p50 | p99 | max | fan-out p50 | p99 | max "
            f"| fan-outs within {TARGET_MS:.0f} ms | never held |",
            "|---|---|---|---|---|---|---|---|---|",
            f"| fan-out alone | {summarize(alone.delays)} |",
            f"| fan-out + wrk on v1 `/courses` | {summarize(loaded.delays)} |",
            "",
            f"- v1 `/courses` through the same HAProxy, wrk -c{args.wrk_connections}: "
            f"{baseline[0]:,.0f} req/s without subscribers (p99 {baseline[1]:.1f} ms, "
            f"{baseline[2]} errors); {during[0]:,.0f} req/s during the fan-out "
            f"(p99 {during[1]:.1f} ms, {during[2]} errors).",
            f"- Memory per subscriber: {per_sub['workers']:.1f} KiB in the API workers "
            f"(RSS {rss_before['workers']:.0f} -> {rss_after['workers']:.0f} MiB for both), "
            f"{per_sub['haproxy']:.1f} KiB in HAProxy "
            f"({rss_before['haproxy']:.0f} -> {rss_after['haproxy']:.0f} MiB).",
            f"- Each change's own fan-out p99: alone {spread(alone.delays)}; with wrk "
            f"{spread(loaded.delays)}.",
            f"- CPU (cores busy) during the fan-out alone: {cpu_text(alone, seconds)}; "
            f"with wrk: {cpu_text(loaded, seconds)}.",
            f"- Events received {final.events:,} ({final.bytes / 2**20:,.0f} MiB), heartbeats "
            f"{final.heartbeats:,}, connections lost before the end {final.failed:,}.",
        ]
    )


def main() -> None:
    """Start the topology, measure, report, stop everything."""
    args = parse_args()
    for tool in ("wrk", "haproxy"):
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists():
            raise SystemExit(f"{tool} is not installed (apt-get install {tool})")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the workers inherit it
    # One HAProxy holds two descriptors per subscriber: where the hard open-file limit cannot
    # fit them all (here 20,000, not raisable without CAP_SYS_RESOURCE), the subscribers are
    # spread over several balancers running the same haproxy.cfg in front of the same workers.
    per_balancer = lb_maxconn() - 1_000  # room for wrk and the health checks
    copies = max(1, math.ceil(args.subscribers / per_balancer))
    with running_topology("ratesvc-push-", backends=("api",), lb_copies=copies) as topo:
        block = benchmark(topo, args)
    print(block)
    if not args.no_write:
        write_report(args.out, block, BEGIN, END)
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
