"""Throughput of GET /courses (v1 and v2) behind HAProxy with 2 API workers, beside its ceiling.

Usage: python bench/throughput.py [--seconds 20] [--connections 64] [--rounds 2] [--changes 50]
                                  [--soak-seconds 0] [--out docs/performance.md]

Starts on loopback: embedded Redis and Postgres, `ratesvc sim`, migrate, collector, persister,
two `ratesvc api` workers (127.0.0.2 and 127.0.0.3, one port, found by HAProxy through a DNS name
as in Docker), two `bench/bare_app.py` workers the same way, and two HAProxy instances running
haproxy/haproxy.cfg unchanged (addresses and ports through its LB_* variables; the per-client
rate limit off). Then, `--rounds` times, wrk at `--connections` for `--seconds` on:
(a) the bare endpoint (the ceiling), (b) /courses, (c) /courses revalidated with If-None-Match
(304), (d) /courses?exchanger=binance&direction=BTC-USD,ETH-RUB, (e) /v2/courses (the same eight
directions with provenance; DESIGN §8 wants e >= 0.9 x b in the same run). Next, while wrk loads
/courses, the simulator moves BTCUSDT `--changes` times and both workers are polled until they
serve the new value (freshness). `--soak-seconds` N adds an N-second run sampling each worker's RSS.
Prints the table and rewrites the results block of `--out` (text outside it is kept).
Every loop is bounded in count and time; only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

# pylint: disable=wrong-import-position
from bench.topology import (  # noqa: E402
    WORKER_HOSTS,
    CpuMeter,
    Topology,
    machine,
    rss_mib,
    running_topology,
)

FILTER = "?exchanger=binance&direction=BTC-USD,ETH-RUB"
LUA_IF_NONE_MATCH = ROOT / "bench" / "if_none_match.lua"
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
    Scenario("v2", "(e) ratesvc `/v2/courses` (8 directions)", "api", "/v2/courses", 200),
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
    percentiles = dict(re.findall(r"^\s+(\d+)%\s+([\d.]+\w+)\s*$", text, re.M))
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


def measure(
    topo: Topology, scenario: Scenario, args: argparse.Namespace, env: dict, round_no: int
) -> Run:
    """One wrk run of `scenario`, with CPU accounting and the workers' status counts."""
    check = httpx.get(
        topo.url(scenario.backend, scenario.path), headers=_headers(env, scenario), timeout=5
    )
    if check.status_code != scenario.expect:
        raise SystemExit(f"{scenario.key}: expected {scenario.expect}, got {check.status_code}")
    load1 = os.getloadavg()[0]
    route = scenario.path.split("?", 1)[0]
    before_status = topo.worker_statuses(route)
    meter = CpuMeter(
        {
            "haproxy": [topo.lb[scenario.backend].proc.pid],
            "workers": [d.proc.pid for d in topo.workers(scenario.backend)],
        }
    )
    out = subprocess.run(
        wrk_command(topo.url(scenario.backend, scenario.path), args, args.seconds, scenario.script),
        capture_output=True, text=True, env=env, timeout=args.seconds + 60, check=True,
    )  # fmt: skip
    run = parse_wrk(out.stdout, scenario, round_no)
    run.cpu_s = meter.stop()
    after_status = topo.worker_statuses(route)
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
    command = wrk_command(topo.url(SCENARIOS[1].backend, SCENARIOS[1].path), args, bound_s, None)
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
    command = wrk_command(
        topo.url(SCENARIOS[1].backend, SCENARIOS[1].path), args, args.soak_seconds, None
    )
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
              f"{round_ratios(runs, 'revalidate', 'courses')}.",
              "",
              f"**v2 / v1 = {best['v2'].rps / best['courses'].rps:.3f}** (e/b, medians; target "
              f">= 0.9). Per round, e/b: {round_ratios(runs, 'v2', 'courses')}.", ""]  # fmt: skip
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


def write_report(out: Path, block: str, begin: str = BEGIN, end: str = END) -> None:
    """Replace the results block between `begin` and `end` in `out` (created when missing)."""
    text = out.read_text() if out.exists() else f"# Performance\n\n{begin}\n{end}\n"
    if begin not in text:
        text += f"\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1] if end in rest else ""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"{head}{begin}\n{block.strip()}\n{end}{tail}")


# ---------------------------------------------------------------------------------- main
def parse_args() -> argparse.Namespace:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=int, default=20, help="wrk duration per run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--rounds", type=int, default=3, help="a-e repeated; median kept")
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
    etag = httpx.get(topo.url(SCENARIOS[1].backend, SCENARIOS[1].path), timeout=5).headers["etag"]
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
        "a-e, interleaved (each round starts one scenario later); the summary keeps each "
        "scenario's median run, and the per-round ratios compare runs minutes apart at most. "
        "Load generator, balancer, workers and the rest of the service share the same cores.",
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
