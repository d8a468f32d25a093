"""Headless Locust run of locust/locustfile.py, reported under docs/loadtest/ (CSV, HTML, PNG).

Usage: python locust/run.py [--host URL] [--users 2000] [--spawn-rate 200] [--run-time 90]
                            [--processes 2] [--out docs/loadtest] [--classes NAME ...]

--classes picks the locustfile's user classes (default: the v1 mix, RevalidatingPoller,
FilteringClient and SloppyClient; add V2Poller and StreamSubscriber for API v2 and the push).

Without --host it starts the native topology of bench/topology.py (embedded Redis and Postgres,
`ratesvc sim`, collector, persister, two API workers behind haproxy/haproxy.cfg) and targets its
HAProxy and measures where the CPU went (Locust, HAProxy, the workers, the rest, idle); with --host
it targets that (loopback addresses only). Locust runs for --run-time seconds (bounded by a hard
timeout), then headless Chromium renders the HTML report to report.png and README.md gets the
summary table. Needs the `load` extra (`pip install -e '.[load]'`) and
Debian's `chromium` for the PNG (skipped with a note when absent).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

# pylint: disable=wrong-import-position
from bench.topology import CpuMeter, machine, running_topology  # noqa: E402

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
V1_CLASSES = ("RevalidatingPoller", "FilteringClient", "SloppyClient")
PREFIX = "ratesvc"  # CSV file prefix: ratesvc_stats.csv, ratesvc_failures.csv, ...
LOOPBACK = ("127.", "localhost", "::1")
TOPOLOGY = (
    "the native topology: haproxy/haproxy.cfg (loopback LB_* values, rate limit off) in front of "
    "2 API workers (one uvicorn process each), with sim, collector, persister, Redis and Postgres"
)


def parse_args() -> argparse.Namespace:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", help="target base URL (default: start the native topology)")
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--spawn-rate", type=float, default=200)
    parser.add_argument("--run-time", type=int, default=90, help="seconds")
    parser.add_argument(
        "--processes", type=int, default=2, help="Locust worker processes (one per core here)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "loadtest")
    parser.add_argument(
        "--classes",
        nargs="+",
        default=list(V1_CLASSES),
        help="user classes of locust/locustfile.py (default: the v1 mix)",
    )
    args = parser.parse_args()
    if args.host and not (urlsplit(args.host).hostname or "").startswith(LOOPBACK):
        parser.error("--host must be a loopback address")
    return args


def run_locust(host: str, args: argparse.Namespace) -> int:
    """Locust headless against `host`; returns its exit code (1 when any request failed)."""
    command = [
        *(sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless"),
        *("--host", host, "-u", str(args.users), "-r", str(args.spawn_rate)),
        *("-t", f"{args.run_time}s", "--stop-timeout", "5", "--only-summary"),
        *(("--processes", str(args.processes)) if args.processes > 1 else ()),
        *("--csv", str(args.out / PREFIX), "--csv-full-history"),
        *("--html", str(args.out / "report.html"), "--loglevel", "WARNING"),
        *args.classes,
    ]
    done = subprocess.run(command, cwd=ROOT, timeout=args.run_time + 120, check=False)
    return done.returncode


def screenshot(html: Path, png: Path) -> str:
    """Render the HTML report with headless Chromium; returns a note for the README."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        return "No PNG: Chromium is not installed (`apt-get install chromium`)."
    with tempfile.TemporaryDirectory(prefix="locust-chromium-") as profile:
        command = [
            chromium,
            *("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"),
            *("--disable-background-networking", "--disable-component-update"),
            *("--disable-sync", "--no-first-run", f"--user-data-dir={profile}"),
            *(f"--screenshot={png}", "--window-size=1400,3000", "--virtual-time-budget=10000"),
            html.resolve().as_uri(),
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode or not png.exists():
        return f"No PNG: Chromium failed ({done.stderr.strip()[-300:]})."
    return f"![Locust report]({png.name})"


def stats_rows(path: Path) -> list[dict[str, str]]:
    """The rows of Locust's *_stats.csv."""
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def summary_table(rows: list[dict[str, str]]) -> str:
    """Markdown table: one line per request name, then the aggregate."""
    lines = [
        "| request | count | failures | req/s | p50 ms | p95 ms | p99 ms | max ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        name = row["Name"] if row["Type"] else "**all**"
        lines.append(
            f"| {name} | {int(row['Request Count']):,} | {int(row['Failure Count']):,} "
            f"| {float(row['Requests/s']):,.1f} | {row['50%']} | {row['95%']} | {row['99%']} "
            f"| {float(row['Max Response Time']):,.0f} |"
        )
    return "\n".join(lines)


def steady_text(path: Path, users: int) -> str:
    """Throughput once every user has spawned, from the per-second history (*_stats_history.csv)."""
    rows = [
        r for r in stats_rows(path) if r["Name"] == "Aggregated" and int(r["User Count"]) == users
    ]
    if len(rows) < 2:
        return "Steady state: the run ended before every user had spawned."
    first, last = rows[0], rows[-1]
    seconds = int(last["Timestamp"]) - int(first["Timestamp"])
    done = int(last["Total Request Count"]) - int(first["Total Request Count"])
    failed = int(last["Total Failure Count"]) - int(first["Total Failure Count"])
    windows = {
        k: statistics.median(float(r[k]) for r in rows if r[k] != "N/A")
        for k in ("50%", "95%", "99%")
    }
    return (
        f"Steady state, once all {users} users had spawned ({seconds} s): "
        f"**{done / seconds:,.0f} req/s**, {failed} failures; p50 {windows['50%']:g} ms, "
        f"p95 {windows['95%']:g} ms, p99 {windows['99%']:g} ms (medians of Locust's rolling "
        "10-second percentiles)."
    )


def failures_text(path: Path) -> str:
    """The failures Locust recorded, or a line saying there were none."""
    if not path.exists():
        return "No failures file."
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        return "No failures: every answer had the expected status, headers and body."
    return "\n".join(f"- {r['Name']}: {r['Error']} ({r['Occurrences']}x)" for r in rows)


def write_readme(args: argparse.Namespace, target: str, image: str, code: int, cpu: str) -> None:
    """docs/loadtest/README.md: command, machine, date, table, failures, the PNG."""
    rows = stats_rows(args.out / f"{PREFIX}_stats.csv")
    command = (
        f"python locust/run.py --users {args.users} --spawn-rate {args.spawn_rate:g} "
        f"--run-time {args.run_time} --processes {args.processes}"
        + (f" --host {args.host}" if args.host else "")
        + (f" --classes {' '.join(args.classes)}" if tuple(args.classes) != V1_CLASSES else "")
    )
    text = f"""# Load test (Locust)

Command: `{command}` (Locust exit code {code}).
Machine: {machine()}.
Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.
Target: {target}. Locust, the balancer, the workers and the rest of the service share the same
cores.

Users (`locust/locustfile.py`, classes {', '.join(args.classes)}); the v1 mix: 8 in 12 are revalidating pollers (a watchlist
every 0.5-1.5 s with If-None-Match: 200 or 304), 3 in 12 filtering clients (random `exchanger`
and `direction` filters, repeated or comma-separated, any case; version by path or by
`Accept-Version`), 1 in 12 sloppy clients (bad requests whose expected 4xx problem+json counts as
a success). Every answer is checked (status, content type, headers, directions in order).
{args.users} users spawned at {args.spawn_rate:g}/s for {args.run_time} s ({args.processes} Locust
processes); the table covers the whole run, ramp-up included (see the charts).

{summary_table(rows)}

{steady_text(args.out / f"{PREFIX}_stats_history.csv", args.users)}

Failures: {failures_text(args.out / f"{PREFIX}_failures.csv")}

{cpu}
Locust needs more CPU per request than the service does, and it shares the machine's cores with
it, so the figures above measure this machine's capacity to generate realistic, checked load,
not the service's ceiling. The ceiling is measured with wrk: see
[../performance.md](../performance.md).

Files: `report.html` (Locust's report), `{PREFIX}_stats.csv`, `{PREFIX}_stats_history.csv`,
`{PREFIX}_failures.csv`, `{PREFIX}_exceptions.csv`, `report.png` (the HTML rendered by headless
Chromium).

{image}
"""
    (args.out / "README.md").write_text(text, encoding="utf-8")


def run_on_topology(args: argparse.Namespace) -> tuple[int, dict[str, float]]:
    """Start the native topology, run Locust against its HAProxy, stop everything.

    Returns Locust's exit code and the CPU seconds spent during the run by Locust (every one of
    its processes), HAProxy, the API workers, the rest of the machine, and left idle.
    """
    with running_topology("ratesvc-locust-", ("api",)) as topo:
        meter = CpuMeter(
            {
                "haproxy": [topo.lb["api"].proc.pid],
                "workers": [d.proc.pid for d in topo.workers("api")],
            }
        )
        code = run_locust(f"http://127.0.0.1:{topo.ports['lb-api']}", args)
        return code, meter.stop()


def cpu_text(cpu: dict[str, float]) -> str:
    """Where the CPU went, in cores on average over the run (reaped children count as Locust)."""
    if not cpu:
        return "CPU split not measured (external --host)."
    wall = sum(cpu.values()) / (os.cpu_count() or 1)  # busy + steal + idle = cores x wall time
    cores = {k: v / wall for k, v in cpu.items()}
    return (
        f"CPU during the run, in cores on average (of {os.cpu_count()}): Locust "
        f"{cores['wrk']:.2f}, HAProxy {cores['haproxy']:.2f}, the two API workers "
        f"{cores['workers']:.2f}, everything else (sim, collector, persister, Redis, Postgres, "
        f"kernel) {cores['other']:.2f}, idle {cores['idle']:.2f}."
    )


def main() -> None:
    """Run Locust (on the native topology unless --host is given), then write the reports."""
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.host:
        code, target, cpu = run_locust(args.host, args), f"`{args.host}`", {}
    else:
        (code, cpu), target = run_on_topology(args), TOPOLOGY
    image = screenshot(args.out / "report.html", args.out / "report.png")
    write_readme(args, target, image, code, cpu_text(cpu))
    print((args.out / "README.md").read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
