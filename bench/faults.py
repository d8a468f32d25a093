"""Fault-tolerance figures: every fault of DESIGN.md §6 against `ratesvc run` + `ratesvc sim`.

Usage: python bench/faults.py [--only 1,5,8] [--quick] [--out docs/fault-tolerance.md]

Starts its own EmbeddedRedis and EmbeddedPostgres (fixed free ports, a fresh data directory, so it
can stop and start them), `ratesvc sim` and `ratesvc run` (pointed at those servers, collector and
persister metrics on fixed free ports), polls GET /courses every 20 ms, then runs each scenario:
inject the fault, time detection and recovery, and account for every tick published meanwhile
(bench/faults_ledger.py). The table is printed as it goes; the report is written at the end, also
when a scenario fails (its row records the error). Scenarios whose feature is not built yet are
reported as "not measured". Only loopback addresses are used; every wait is bounded.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "bench"), str(ROOT)]

# pylint: disable=wrong-import-position
from faults_common import (  # noqa: E402
    Ctx,
    Row,
    missing_budget,
    missing_haproxy,
    missing_lease,
    missing_rest_fallback,
)
from faults_haproxy import s12_api_worker  # noqa: E402
from faults_infra import s8_redis, s9_postgres, s10_persister_kill, s11_standby  # noqa: E402
from faults_ledger import ZERO, Account, Ledger  # noqa: E402
from faults_report import write_report  # noqa: E402
from faults_sources import (  # noqa: E402
    s1_disconnect,
    s2_stall,
    s3_garbage,
    s4_accept_and_drop,
    s5_shutdown,
    s6_rest_fallback,
    s7_coingecko_429,
)
from faults_stack import Stack, metric, wait_for  # noqa: E402
from faults_watch import Watcher  # noqa: E402

HEALTHY_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class Scenario:
    """A numbered fault, its target, the code that runs it and the feature it needs."""

    fault: str
    target: str
    run: Callable[[Ctx, Row], None]
    missing: Callable[[], str | None] = lambda: None


SCENARIOS: dict[int, Scenario] = {
    1: Scenario("Binance websocket disconnect (ws+REST refused)", "failover <= 2 s", s1_disconnect),
    2: Scenario("Binance silent stall (REST refused)", "failover <= 10 s", s2_stall),
    3: Scenario("garbage frames (5 junk frames)", "kept, counted, not stale", s3_garbage),
    4: Scenario("reconnect discipline: accept_and_drop", "<< 300 / 5 min", s4_accept_and_drop),
    5: Scenario("serverShutdown -> rotation", "0 gap", s5_shutdown),
    6: Scenario(
        "Binance websocket blocked, REST fine",
        "binance keeps serving",
        s6_rest_fallback,
        missing_rest_fallback,
    ),
    7: Scenario(
        "CoinGecko 429 bursts while it serves",
        "back-off honoured, <= 30 calls/min",
        s7_coingecko_429,
        missing_budget,
    ),
    8: Scenario("Redis outage", "200s, /ready 503, flush, lost 0", s8_redis),
    9: Scenario("Postgres outage", "pending, drains, lost 0", s9_postgres),
    10: Scenario("persister SIGKILL mid-batch", "drains, lost 0, dup 0", s10_persister_kill),
    11: Scenario("active collector SIGKILL, hot standby", "takeover", s11_standby, missing_lease),
    12: Scenario(
        "one API worker crashes (HAProxy)", "no failed request", s12_api_worker, missing_haproxy
    ),
}


def healthy(ctx: Ctx) -> None:
    """No fault, every role of `ratesvc run` alive, binance serving fresh values."""
    ctx.stack.clear()
    if wait_for(ctx.stack.binance_serving, HEALTHY_TIMEOUT_S, 0.1) is None:
        raise RuntimeError(f"binance not serving within {HEALTHY_TIMEOUT_S:g} s before the fault")


def run_one(num: int, ctx: Ctx) -> tuple[Row, Account | None]:
    """Run scenario `num` and account for the ticks of its window; errors go into the row."""
    spec = SCENARIOS[num]
    row = Row(num, spec.fault, spec.target)
    reason = spec.missing()
    if reason:
        row.status = f"not measured: {reason}"
        return row, None
    started = time.monotonic()
    start = ctx.ledger.last
    try:
        healthy(ctx)
        spec.run(ctx, row)
    except Exception as err:  # pylint: disable=broad-exception-caught  # recorded in the row
        row.status, row.ok = f"error: {type(err).__name__}: {str(err)[:300]}", False
        traceback.print_exc()
        try:
            ctx.stack.clear()
        except Exception:  # pylint: disable=broad-exception-caught
            pass
    end = ctx.ledger.safe_checkpoint()
    account = None
    if end is not None:
        account = ctx.ledger.account(start, end)
        row.lost, row.duplicates = account.lost_text(), str(account.duplicates)
        row.notes.append(f"ticks: {account.summary()}")
        if account.lost or account.duplicates:
            row.ok = False
    else:
        row.lost = row.duplicates = "not checked: " + "; ".join(ctx.ledger.errors[-1:])
    row.seconds = time.monotonic() - started
    return row, account


def print_row(row: Row) -> None:
    print(
        f"| {row.num} | {row.fault} | {row.detect} | {row.recover} | {row.lost} | "
        f"{row.duplicates} | {row.verdict} |",
        flush=True,
    )
    for note in row.notes:
        print(f"|   | {note}", flush=True)


def whole_run(ledger: Ledger) -> Account | None:
    """The account from the first start to the last checkpoint, with the table's totals."""
    if ledger.last is ZERO:
        return None
    total = ledger.account(ZERO, ledger.last)
    stored, duplicates = ledger.table_totals()
    total.notes.append(
        f"rate_tick holds {stored} rows, rows - distinct (exchanger, direction, ts_ms, value) = "
        f"{duplicates}"
    )
    return total


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--only", default="", help="comma-separated scenario numbers, e.g. 1,5,8")
    parser.add_argument("--quick", action="store_true", help="shorter fault windows")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "fault-tolerance.md")
    args = parser.parse_args()
    args.numbers = sorted({int(n) for n in args.only.split(",") if n.strip()} or SCENARIOS)
    unknown = [n for n in args.numbers if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; known: 1-{len(SCENARIOS)}")
    return args


def main() -> None:
    """Start the system, run the scenarios, print and write the report."""
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="ratesvc-faults-"))
    workdir.chmod(0o755)  # ours: the embedded Postgres user keeps its cluster here
    command = "python bench/faults.py" + (f" --only {args.only}" if args.only else "")
    command += " --quick" if args.quick else ""
    print(f"{command}: logs and data in {workdir}", flush=True)
    stack = Stack(workdir)
    rows: list[Row] = []
    total: Account | None = None
    began, failure, cadence_s = time.monotonic(), "", 0.0
    load = "load average " + " / ".join(f"{x:.2f}" for x in os.getloadavg()) + " at start"
    watcher = None
    try:
        stack.start()
        cadence_s = metric(stack.collector(), "ratesvc_coingecko_poll_interval_seconds")
        watcher = Watcher(str(stack.api.base_url)).start()
        ctx = Ctx(stack, Ledger(stack), watcher, quick=args.quick)
        print("| # | fault | detect | recover | ticks lost | duplicates | target met |", flush=True)
        for num in args.numbers:
            row, _account = run_one(num, ctx)
            rows.append(row)
            print_row(row)
        total = whole_run(ctx.ledger)
    except KeyboardInterrupt:
        failure = "interrupted (Ctrl-C)"
    except Exception as err:  # pylint: disable=broad-exception-caught  # still write the report
        failure = f"{type(err).__name__}: {err}"
        traceback.print_exc()
    finally:
        if watcher is not None:
            watcher.stop()
        stack.stop()
    done = {row.num for row in rows}
    rows += [
        Row(num, SCENARIOS[num].fault, SCENARIOS[num].target, status="not run")
        for num in args.numbers
        if num not in done
    ]
    write_report(
        args.out,
        rows,
        command=command,
        total=total,
        elapsed_s=time.monotonic() - began,
        failure=failure,
        workdir=workdir,
        cadence_s=cadence_s,
        machine=f"{os.cpu_count()} cores, {platform.platform()}, "
        f"Python {platform.python_version()}; {load}, "
        + " / ".join(f"{x:.2f}" for x in os.getloadavg())
        + " at the end (every role, the simulator and the poller share the machine)",
    )
    print(f"wrote {args.out} ({time.monotonic() - began:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
