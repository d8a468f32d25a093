"""The markdown report of bench/faults.py (docs/fault-tolerance.md)."""

from __future__ import annotations

import time
from pathlib import Path

from faults_common import Row, fields_of
from faults_ledger import Account
from faults_stack import SERVICE_ENV

from ratesvc.settings import Settings
from ratesvc.sources.binance import BinanceOptions

DEFAULTS = [
    (Settings, "failback_hold_down_s", "FAILBACK_HOLD_DOWN_S"),
    (BinanceOptions, "stale_after_s", "BINANCE_STALE_AFTER_S"),
    (Settings, "backoff_initial_s", "BACKOFF_INITIAL_S"),
    (Settings, "backoff_max_s", "BACKOFF_MAX_S"),
    (Settings, "redis_stale_after_s", "REDIS_STALE_AFTER_S"),
    (Settings, "publish_min_interval_ms", "PUBLISH_MIN_INTERVAL_MS"),
    (Settings, "refresh_interval_s", "REFRESH_INTERVAL_S"),
    (Settings, "collector_lease_ms", "COLLECTOR_LEASE_MS"),
    (BinanceOptions, "rest_fallback_after_failures", "BINANCE_REST_FALLBACK_AFTER_FAILURES"),
]

DEFINITIONS = """\
## How the figures are taken

- **detect**: from the fault's injection to the moment the API's behaviour reflects it (the
  default exchanger switched, a stale mark, `/ready` 503, HAProxy marking a worker DOWN...).
  Every wait is a 20 ms poll, so figures carry up to ~20 ms of polling (plus one HTTP round trip).
- **recover**: from the fault's removal (or the kill) to normal service: binance serving fresh
  values by default again (which includes the `FAILBACK_HOLD_DOWN_S` hold-down when the API had
  failed over), `/ready` 200, nothing pending in the persister group...
- **ticks lost**: between two consistent cuts, one before and one after each scenario. A cut
  reads the published total, the stream's newest id, and the total again until both totals agree
  (a collector counts a tick right after Redis accepted it, so every entry up to that id was
  counted and none after it); a checkpoint waits until the persister has passed the cut (nothing
  up to it undelivered or pending). *Published* is the sum of `ratesvc_ticks_published_total`
  over every collector process that ever ran: a killed collector takes its counter with it and its
  restart starts at 0, so each collector port is scraped with `process_start_time_seconds`, and
  when that changes the old process's last value is kept. When a scenario kills or stops a
  collector it takes a cut right before and adds the entries that process still wrote after it
  (each stream entry carries its publisher's lease term). Counting stream entries alone would hide
  ticks lost between the collector and Redis, which is what the Redis outage tests. Lost = ticks
  counted as published that are not in the stream window (`published - tick entries`) + distinct
  tick ids in the window with no `rate_tick` row; entries of `ratesvc:ticks:dead` are listed
  apart. The same tick published twice (a new leader re-publishing the current state) has the
  same tick id and is stored once: shown as "republished", not lost.
- **duplicates**: rows stored from the scenario's stream entries whose (exchanger, direction,
  ts_ms, value) another row of `rate_tick` has too (over the whole run:
  `rows - count(DISTINCT (exchanger, direction, ts_ms, value))`).
- A row's **target met** also requires 0 lost and 0 duplicates.
"""


def _defaults() -> str:
    parts = []
    for model, name, env in DEFAULTS:
        field = fields_of(model).get(name)
        if field is not None:
            parts.append(f"{env}={field.default:g}")
    return ", ".join(parts)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def write_report(  # pylint: disable=too-many-arguments
    out: Path,
    rows: list[Row],
    *,
    command: str,
    total: Account | None,
    elapsed_s: float,
    failure: str,
    workdir: Path,
    machine: str,
    cadence_s: float = 0.0,
) -> None:
    """Write the markdown report to `out`."""
    overrides = ", ".join(f"{k}={v}" for k, v in SERVICE_ENV.items() if k != "LOG_LEVEL")
    lines = [
        "# Fault tolerance: measured",
        "",
        "Every fault of the failure model (DESIGN.md §6) injected into a running `ratesvc run`",
        "(collector, persister, API; restarts a dead child) against `ratesvc sim`, with Redis and",
        "Postgres run by the benchmark itself (embedded Redis 6.2 and PostgreSQL 18, fixed ports,",
        "so it can stop and start them). Produced by `bench/faults.py`.",
        "",
        f"- Command: `{command}` ({elapsed_s:.0f} s in all)",
        f"- Machine: {machine}",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- Settings: the service's defaults ({_defaults()}), except {overrides} (defaults 300 and"
        " 30) so the simulator-driven run is quick"
        + (
            f" (the CoinGecko call budget, 10,000 calls a month by default, still stretched the"
            f" standby cadence to {cadence_s:g} s; 5 s applied while CoinGecko served)"
            if cadence_s > 5
            else ""
        )
        + "; CoinGecko's own freshness limit (900 s) is not"
        " involved in any figure.",
        "",
        "| # | fault | target | detect | recover | ticks lost | duplicates | target met |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells = [row.fault, row.target, row.detect, row.recover, row.lost, row.duplicates]
        lines.append(
            f"| {row.num} | " + " | ".join(_cell(c) for c in cells) + f" | {row.verdict} |"
        )
    missed = [str(r.num) for r in rows if r.status == "measured" and r.ok is False]
    other = [f"{r.num} ({r.status})" for r in rows if r.status != "measured"]
    lines += [
        "",
        "Scenarios run one after the other on the same running system, each from no fault and",
        "binance serving fresh values. "
        + (f"Targets not met: {', '.join(missed)} (see Details). " if missed else "")
        + (f"Not measured: {'; '.join(other)}." if other else ""),
    ]
    if failure:
        lines += ["", f"**The run stopped early:** `{_cell(failure)}`"]
    lines += ["", "## Details", ""]
    for row in rows:
        lines.append(f"**{row.num}. {row.fault}** ({row.seconds:.0f} s) - {row.status}")
        lines += [f"- {note}" for note in row.notes]
        lines.append("")
    if total is not None:
        lines += [
            "## Whole run",
            "",
            f"From the first start to the last cut: {total.summary()}; lost "
            f"{total.lost_text()}, duplicates {total.duplicates}.",
            "",
        ]
    lines += [
        DEFINITIONS,
        f"Logs of every process of the run were kept in `{workdir}` (not part of the repository).",
        "",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines), encoding="utf-8")
