"""History and point-in-time latency: /v2/history and /v2/courses?at= on a month of stored ticks.

Usage: python bench/history.py [--days 30] [--requests 2000] [--admin-url postgres://...]
                               [--reuse] [--out docs/performance.md]

Fills a scratch database (`ratesvc_bench_history_<days>d` on the --admin-url server, dropped and
created again unless --reuse finds it filled for the same --days) with `--days` of ticks at the
collector's throttle ceiling: 18 ticks/s over the 16 (exchanger, direction) pairs, one every
889 ms per pair (~1.56M rows a day, ~46.7M for 30 days), X-RUB values with a second (FX) leg as
the collector writes them. Rows are generated in SQL (generate_series, one INSERT per day); the
tables are UNLOGGED and the tick_id unique index is built after the load (write speed only: reads
are the same). Candles are then built with the repository's bulk twin of the persister's upsert
(RateRepository.build_candles, day by day). Then one `ratesvc api` worker (uvicorn, embedded
Redis, the history loader seeding its snapshot from this database) answers, over HTTP on one
keep-alive connection, `--requests` sequential requests of each kind:
  (a) /v2/history of one random pair, interval 1m, a random 1,440-minute window (1,440 candles);
  (b) /v2/courses?at=<random instant> (all eight directions, no exchanger: 16 index probes).
Prints p50/p90/p99/max and rewrites the results block of `--out` (text outside it is kept).
Imports nothing from tests/. Every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

# pylint: disable=wrong-import-position
from ratesvc.embedded import EmbeddedRedis  # noqa: E402
from ratesvc.store.db import connect_args, migrate, open_db  # noqa: E402
from ratesvc.store.repository import RateRepository  # noqa: E402
from testkit.net import free_tcp_port  # noqa: E402
from testkit.procs import Daemon  # noqa: E402

DATABASE = "ratesvc_bench_history_{days}d"
WINDOW_MIN = 1_440
DAY_MS = 86_400_000
MIN_MS = 60_000
STEP_MS = 889  # per pair: 16 pairs / 0.889 s = 18 ticks/s in all, the collector's ceiling
BEGIN, END = "<!-- history:begin -->", "<!-- history:end -->"
EXCHANGERS = ("binance", "coingecko")
# direction -> (price level, the own leg's symbol)
DIRECTIONS = {
    "BTC-USD": ("65000", "BTC/USDT"),
    "BTC-RUB": ("6207500", "BTC/USDT"),
    "ETH-USD": ("3200", "ETH/USDT"),
    "ETH-RUB": ("305600", "ETH/USDT"),
    "USDTTRC-USD": ("1", "USDT/USD"),
    "USDTTRC-RUB": ("95.5", "USDT/RUB"),
    "USDTERC-USD": ("1", "USDT/USD"),
    "USDTERC-RUB": ("95.5", "USDT/RUB"),
}

# One day of ticks for every pair: a slow sine plus noise, 8 decimal places, a book around the
# value, the own leg (30 s limit) and for X-RUB an FX leg 20 s older (15 min limit).
_FILL_DAY = """
INSERT INTO rate_tick (tick_id, exchanger, direction, value, bid, ask, ts_ms, transport, legs,
                       stream_id)
SELECT md5(p.exchanger || p.direction || s::text), p.exchanger, p.direction, v.value,
       v.value - 0.01, v.value + 0.01, s, 'ws',
       CASE WHEN p.direction LIKE '%-RUB' AND p.symbol <> 'USDT/RUB' THEN
           jsonb_build_array(
               jsonb_build_array(p.exchanger, p.symbol, (v.value / 95.5)::numeric(30, 8)::text,
                                 s, 30000),
               jsonb_build_array('coingecko', 'USDT/RUB', '95.5', s - 20000, 900000))
       ELSE jsonb_build_array(jsonb_build_array(p.exchanger, p.symbol, v.value::text, s, 30000))
       END,
       s::text || '-0'
FROM unnest($1::text[], $2::text[], $3::numeric[], $4::text[], $5::int[])
     AS p(exchanger, direction, level, symbol, offset_ms)
CROSS JOIN LATERAL generate_series($6::bigint + p.offset_ms, $7::bigint - 1, $8::bigint) AS s
CROSS JOIN LATERAL (
    SELECT round(p.level * (1 + 0.02 * sin(s / 3.6e6) + 0.001 * random())::numeric, 8) AS value
) v
"""


def pairs() -> list[tuple[str, str, str, str, int]]:
    """(exchanger, direction, level, symbol, offset ms) for the 16 pairs, offsets spread."""
    rows = []
    for i, (exchanger, (direction, (level, symbol))) in enumerate(
        (e, d) for e in EXCHANGERS for d in DIRECTIONS.items()
    ):
        rows.append((exchanger, direction, level, symbol, i * STEP_MS // 16))
    return rows


def database_url(admin_url: str, days: int) -> str:
    """`admin_url` on the scratch database of `days`."""
    return admin_url.rsplit("/", 1)[0] + "/" + DATABASE.format(days=days)


async def filled_range(url: str) -> tuple[int, int, int] | None:
    """(first ts, last ts, rows) of a filled scratch database with candles, or None."""
    try:
        conn = await asyncpg.connect(**connect_args(url))
    except (OSError, asyncpg.PostgresError):
        return None
    try:
        row = await conn.fetchrow(
            "SELECT min(ts_ms), max(ts_ms), (SELECT reltuples::bigint FROM pg_class"
            " WHERE relname = 'rate_tick'), EXISTS(SELECT 1 FROM rate_candle) FROM rate_tick"
        )
    except asyncpg.PostgresError:
        return None
    finally:
        await conn.close()
    if row is None or row[0] is None or not row[3]:
        return None
    return row[0], row[1], row[2]


async def fill(admin_url: str, days: int) -> tuple[int, int, int]:
    """Create, migrate and fill the scratch database; returns (first ts, last ts, rows)."""
    name = DATABASE.format(days=days)
    admin = await asyncpg.connect(**connect_args(admin_url))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = database_url(admin_url, days)
    await migrate(url)
    end_ms = int(time.time()) * 1000
    start_ms = end_ms - days * DAY_MS
    columns = [list(c) for c in zip(*pairs())]
    conn = await asyncpg.connect(**connect_args(url))
    began = time.monotonic()
    try:
        await conn.execute(
            "ALTER TABLE rate_tick SET UNLOGGED; ALTER TABLE rate_candle SET UNLOGGED;"
            " ALTER TABLE rate_tick DROP CONSTRAINT rate_tick_tick_id_key"
        )
        for day in range(days):
            lo = start_ms + day * DAY_MS
            await conn.execute(_FILL_DAY, *columns, lo, lo + DAY_MS, STEP_MS)
            print(f"  ticks: day {day + 1}/{days} ({time.monotonic() - began:.0f} s)", flush=True)
        await conn.execute(
            "ALTER TABLE rate_tick ADD CONSTRAINT rate_tick_tick_id_key UNIQUE (tick_id)"
        )
        await conn.execute("VACUUM ANALYZE rate_tick")
        print(f"  tick_id index and analyze done ({time.monotonic() - began:.0f} s)", flush=True)
    finally:
        await conn.close()
    async with open_db(url) as db:
        repo = RateRepository(db)
        for day in range(days):
            lo = start_ms + day * DAY_MS
            await repo.build_candles(lo, lo + DAY_MS)
            print(f"  candles: day {day + 1}/{days} ({time.monotonic() - began:.0f} s)", flush=True)
    conn = await asyncpg.connect(**connect_args(url))
    try:
        await conn.execute("VACUUM ANALYZE rate_candle")
    finally:
        await conn.close()
    found = await filled_range(url)
    assert found is not None, "the fill left no ticks or no candles"
    return found


async def finish(url: str) -> tuple[int, int, int] | None:
    """Complete a fill whose ticks are stored: candles for every whole day that has none yet
    (one transaction per day, so an interrupted run resumes), then ANALYZE."""
    conn = await asyncpg.connect(**connect_args(url))
    try:
        first, last = await conn.fetchrow(
            "SELECT min(ts_ms), max(ts_ms) FROM rate_tick WHERE exchanger = 'binance'"
            " AND direction = 'BTC-USD'"
        )
        if first is None:
            return None
        began = time.monotonic()
        async with open_db(url) as db:
            repo = RateRepository(db)
            lo = first
            while lo < last:
                built = await conn.fetchval(
                    "SELECT EXISTS(SELECT 1 FROM rate_candle WHERE exchanger = 'binance'"
                    " AND direction = 'BTC-USD' AND interval_s = 60 AND bucket_ms > $1"
                    " AND bucket_ms < $2)",
                    lo + MIN_MS,
                    lo + DAY_MS - 2 * MIN_MS,
                )
                if not built:
                    await repo.build_candles(lo, lo + DAY_MS)
                    elapsed = time.monotonic() - began
                    print(f"  candles from {rfc3339(lo)} ({elapsed:.0f} s)", flush=True)
                lo += DAY_MS
        await conn.execute("ANALYZE rate_tick; ANALYZE rate_candle")
    finally:
        await conn.close()
    return await filled_range(url)


def percentiles(values: list[float]) -> dict[str, float]:
    """p50/p90/p99/max in milliseconds."""
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": ordered[-1] * 1000}


def rfc3339(ts_ms: int) -> str:
    """RFC 3339 UTC with milliseconds."""
    moment = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"


def window_min(first_ms: int, last_ms: int) -> int:
    """Candles per history request: 1,440, or what fits in a shorter fill."""
    return min(WINDOW_MIN, (last_ms - first_ms) // MIN_MS - 2)


def measure(base: str, first_ms: int, last_ms: int, requests: int) -> dict[str, dict[str, float]]:
    """Sequential requests of each kind on one keep-alive connection; every answer checked."""
    rng = random.Random(7)
    width = window_min(first_ms, last_ms)
    keys = [(e, d) for e in EXCHANGERS for d in DIRECTIONS]
    results: dict[str, list[float]] = {"history": [], "at": []}
    with httpx.Client(base_url=base, timeout=30) as client:

        def history() -> None:
            exchanger, direction = rng.choice(keys)
            lo = first_ms + rng.randrange((last_ms - first_ms) // MIN_MS - width) * MIN_MS
            params = {
                "exchanger": exchanger,
                "direction": direction,
                "interval": "1m",
                "from": rfc3339(lo),
                "to": rfc3339(lo + width * MIN_MS),
            }
            began = time.perf_counter()
            response = client.get("/v2/history", params=params)
            results["history"].append(time.perf_counter() - began)
            assert response.status_code == 200, response.text
            assert len(response.json()["candles"]) >= width - 1, "a window with missing candles"

        def at() -> None:
            instant = rng.randrange(first_ms + 60_000, last_ms)
            began = time.perf_counter()
            response = client.get("/v2/courses", params={"at": rfc3339(instant)})
            results["at"].append(time.perf_counter() - began)
            assert response.status_code == 200, response.text
            assert len(response.json()["courses"]) == 8

        for _ in range(50):  # warm-up: pool, caches, code paths
            history()
            at()
        results = {"history": [], "at": []}
        for _ in range(requests):
            history()
            at()
    return {name: percentiles(values) for name, values in results.items()}


def load_average() -> str:
    """The 1-minute load average and the core count."""
    return f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"


def serve_and_measure(url: str, args: argparse.Namespace, found: tuple[int, int, int]) -> dict:
    """Start one API worker on the filled database and measure it."""
    workdir = Path(tempfile.mkdtemp(prefix="ratesvc-bench-history-"))
    port = free_tcp_port("127.0.0.1")
    try:
        with EmbeddedRedis(workdir / "redis") as redis:
            env = {
                **os.environ,
                "REDIS_URL": redis.url,
                "DATABASE_URL": url,
                "API_HOST": "127.0.0.1",
                "API_PORT": str(port),
                "API_WORKERS": "1",
                "LOG_LEVEL": "WARNING",
                "RETENTION_DAYS": str(args.days + 1),
                "RATESVC_ENV_FILE": str(workdir / "none.env"),
            }
            api = Daemon.ratesvc("api", ["api"], env=env, workdir=workdir).start()
            try:
                base = f"http://127.0.0.1:{port}"
                deadline = time.monotonic() + 60
                while True:
                    try:
                        if httpx.get(base + "/health", timeout=2).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() > deadline or not api.alive:
                        raise RuntimeError("the API did not start:\n" + api.tail())
                    time.sleep(0.2)
                return measure(base, found[0], found[1], args.requests)
            finally:
                api.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def report(args: argparse.Namespace, found: tuple[int, int, int], figures: dict, load: str) -> str:
    """The markdown block."""
    days = (found[1] - found[0]) / DAY_MS
    lines = [
        f"`python bench/history.py --days {args.days} --requests {args.requests}` "
        f"({datetime.now(tz=UTC):%Y-%m-%d %H:%M} UTC; {found[2]:,} ticks over {days:.1f} days; "
        f"load average before measuring {load}, the machine shared with other work)",
        "",
        "| request | target p99 | p50 ms | p90 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|",
    ]
    names = {
        "history": (
            f"`/v2/history` {window_min(found[0], found[1]):,} one-minute candles, random pair "
            "and window",
            50,
        ),
        "at": ("`/v2/courses?at=` random instant, 8 directions, no exchanger", 20),
    }
    for key, (label, target) in names.items():
        p = figures[key]
        lines.append(
            f"| {label} | {target} | {p['p50']:.1f} | {p['p90']:.1f} | {p['p99']:.1f} | "
            f"{p['max']:.1f} |"
        )
    return "\n".join(lines)


def write_report(out: Path, block: str) -> None:
    """Replace the text between the markers of `out` (appended when absent)."""
    text = out.read_text() if out.exists() else ""
    wrapped = f"{BEGIN}\n{block}\n{END}"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + wrapped + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n" + wrapped + "\n"
    out.write_text(text)


def parse_args() -> argparse.Namespace:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--days", type=int, default=30, help="days of ticks to store (30)")
    parser.add_argument("--requests", type=int, default=2_000, help="requests of each kind")
    parser.add_argument(
        "--admin-url",
        default="postgres://postgres@127.0.0.1:5432/postgres",
        help="a Postgres server to create the scratch database on",
    )
    parser.add_argument("--reuse", action="store_true", help="keep a filled scratch database")
    parser.add_argument(
        "--finish",
        action="store_true",
        help="the ticks are stored (an interrupted fill): build the missing candles, measure",
    )
    parser.add_argument("--out", type=Path, default=None, help="markdown file to update")
    return parser.parse_args()


def main() -> None:
    """Fill (unless reused), serve, measure, report."""
    args = parse_args()
    url = database_url(args.admin_url, args.days)
    found = asyncio.run(finish(url)) if args.finish else None
    found = asyncio.run(filled_range(url)) if args.reuse and found is None else found
    if found is None or round((found[1] - found[0]) / DAY_MS) != args.days:
        print(f"filling {args.days} days into {DATABASE.format(days=args.days)} ...", flush=True)
        found = asyncio.run(fill(args.admin_url, args.days))
    print(f"{found[2]:,} ticks stored; measuring ...", flush=True)
    load = load_average()
    figures = serve_and_measure(url, args, found)
    block = report(args, found, figures, load)
    print(block)
    if args.out is not None:
        write_report(args.out, block)


if __name__ == "__main__":
    main()
