"""Core figures against `ratesvc sim`: start-up time, price-change latency, first throughput.

Usage: python bench/core.py [--changes 50] [--wrk-seconds 10] [--out docs/core-benchmarks.md]

1. `ratesvc run` with an empty DATA_DIR (embedded Redis + Postgres initialised from scratch) and
   again with the same DATA_DIR (warm): seconds from spawn until GET /courses serves all eight.
2. Price-change latency: the simulator moves BTCUSDT N times; each time we poll GET /courses until
   the new value is served and record the delay (p50 / p99 / max).
3. wrk for --wrk-seconds at 64 connections on GET /courses (all eight directions) against the
   single API worker `ratesvc run` starts; needs Debian's `wrk` on PATH.
Only loopback addresses are used; every loop is bounded.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

# pylint: disable=wrong-import-position
from ratesvc.embedded import free_port  # noqa: E402
from testkit.procs import Daemon  # noqa: E402


def time_to_eight(env: dict[str, str], port: int, workdir: Path) -> tuple[float, Daemon]:
    """Seconds from spawning `ratesvc run` until all eight directions are served."""
    started = time.monotonic()
    proc = Daemon.ratesvc("run", ["run", "--port", str(port)], env=env, workdir=workdir).start()
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=2)
    while time.monotonic() - started < 120:
        try:
            response = client.get("/courses")
            if response.status_code == 200 and len(response.json()["courses"]) == 8:
                return time.monotonic() - started, proc
        except httpx.HTTPError:
            pass
        time.sleep(0.01)
    proc.stop()
    raise SystemExit("ratesvc run did not serve eight directions within 120 s")


def change_latencies(control: httpx.Client, api: httpx.Client, changes: int) -> list[float]:
    """Move BTCUSDT `changes` times; milliseconds until each new value is served."""
    delays = []
    for i in range(changes):
        # let the collector's throttle window (PUBLISH_MIN_INTERVAL_MS, 250 ms) pass since the
        # last change, the start-up publication included: measure each change alone
        time.sleep(0.3)
        price = f"{70000 + i}.25"
        control.post("/prices", json={"binance": {"BTCUSDT": price}}).raise_for_status()
        sent = time.monotonic()
        while time.monotonic() - sent < 10:
            body = api.get(
                "/courses", params={"exchanger": "binance", "direction": "BTC-USD"}
            ).json()
            if str(body["courses"][0]["value"]) == price:
                delays.append((time.monotonic() - sent) * 1000)
                break
        else:
            raise SystemExit(f"change {i} not visible within 10 s")
    return delays


def run_wrk(port: int, seconds: int) -> str:
    """wrk's summary for GET /courses, or a note that wrk is missing."""
    if not shutil.which("wrk"):
        return "wrk not installed (apt-get install wrk)"
    out = subprocess.run(
        ["wrk", "-t2", "-c64", f"-d{seconds}s", "--latency", f"http://127.0.0.1:{port}/courses"],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
    return out


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    """Run every measurement and write the markdown report."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--wrk-seconds", type=int, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "core-benchmarks.md")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="ratesvc-bench-"))
    workdir.chmod(0o755)  # ours: the embedded Postgres user keeps its cluster here
    b_port, c_port, api_port = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    sim_args = ["sim", "--binance-port", str(b_port), "--coingecko-port", str(c_port)]
    sim = Daemon.ratesvc("sim", sim_args, env=env, workdir=workdir).start()
    env.update(
        BINANCE_WS_URL=f"ws://127.0.0.1:{b_port}",
        BINANCE_REST_URL=f"http://127.0.0.1:{b_port}",
        COINGECKO_API_URL=f"http://127.0.0.1:{c_port}/api/v3",
        COINGECKO_POLL_INTERVAL_S="5",
        COINGECKO_ACTIVE_POLL_INTERVAL_S="5",
        COINGECKO_CALLS_PER_MONTH="100000000",  # the simulator has no quota
        DATA_DIR=str(workdir / "data"),
        COLLECTOR_METRICS_PORT="0",
        PERSISTER_METRICS_PORT="0",
        LOG_LEVEL="WARNING",
    )
    try:
        time.sleep(1.5)
        cold, proc = time_to_eight(env, api_port, workdir)
        proc.stop()
        warm, proc = time_to_eight(env, api_port, workdir)
        control = httpx.Client(base_url=f"http://127.0.0.1:{b_port}/_sim", timeout=5)
        api = httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=5)
        delays = change_latencies(control, api, args.changes)
        wrk = run_wrk(api_port, args.wrk_seconds)
        proc.stop()
    finally:
        sim.stop()
    rps = re.search(r"Requests/sec:\s+([\d.]+)", wrk)
    report = f"""# Core benchmarks

Command: `python bench/core.py --changes {args.changes} --wrk-seconds {args.wrk_seconds}`
Machine: {os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()};
date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Exchanges: `ratesvc sim` on loopback.

| figure | value |
|---|---|
| `ratesvc run` to eight directions served, empty DATA_DIR (initdb included) | {cold:.2f} s |
| `ratesvc run` to eight directions served, warm DATA_DIR | {warm:.2f} s |
| simulator price change to API, p50 over {len(delays)} changes | {statistics.median(delays):.1f} ms |
| simulator price change to API, p99 / max | {pct(delays, 0.99):.1f} / {max(delays):.1f} ms |
| `GET /courses` (8 directions), 1 API worker, wrk 64 connections | {rps.group(1) if rps else 'n/a'} req/s |

The latency is measured by polling the API over one keep-alive connection, so it includes one
HTTP round trip. wrk runs on the same 2-core machine as every role of the service.

<details><summary>wrk output</summary>

```
{wrk.strip()}
```
</details>
"""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
