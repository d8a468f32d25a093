"""A long Postgres outage at the throttle ceiling, time compressed: every tick stored exactly once.

    python bench/long_outage.py                       # 3 h at 18 entries/s = 194,400 entries
    python bench/long_outage.py --hours 1 --rate 18   # shorter

Real servers (embedded Redis 6.2 and PostgreSQL 18 on free ports) and the real persister
(`ratesvc persister`, as compose runs it, with its defaults but STREAM_KEEP_S=30); the ticks are
published through RateBus.publish, the collector's own publish call, as fast as Redis takes them:
what a 3-hour outage at the ceiling accumulates arrives in about a minute. Postgres is stopped,
the whole outage's ticks are published (a few of them twice, and status events twice, as a
publish retried after a lost reply does), Postgres comes back, and the bench waits until the
persister has stored everything. It checks that every published tick is stored exactly once,
nothing went to the dead letters, and the stream was trimmed back; it reports the stream's peak
length and Redis memory, and writes docs/long-outage.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# pylint: disable=wrong-import-position
from ratesvc.bus import DEAD_LETTER, GROUP, STREAM, RateBus  # noqa: E402
from ratesvc.domain import DIRECTIONS, Leg, RateTick, SourceState, SourceStatus  # noqa: E402
from ratesvc.embedded import EmbeddedPostgres, EmbeddedRedis, free_port  # noqa: E402
from ratesvc.store.db import migrate  # noqa: E402
from testkit.procs import Daemon  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "docs" / "long-outage.md"
KEYS = [(ex, d) for ex in ("binance", "coingecko") for d in DIRECTIONS]
BATCH = 200


@dataclass
class Figures:  # pylint: disable=too-many-instance-attributes
    """What the run measured."""

    hours: float
    rate: float
    entries: int = 0
    publish_s: float = 0.0
    peak_length: int = 0
    peak_memory: int = 0
    base_memory: int = 0
    drain_s: float = 0.0
    trimmed_length: int = 0
    rows: int = 0
    distinct_values: int = 0
    events: int = 0
    dead: int = 0
    replayed: int = 0
    notes: list[str] = field(default_factory=list)


def make_tick(i: int, base_ms: int, step_ms: int) -> RateTick:
    """Tick number `i`: the 16 (exchanger, direction) keys in turn, time moving on."""
    exchanger, direction = KEYS[i % len(KEYS)]
    ts_ms = base_ms + i * step_ms
    value = Decimal(65_000) + Decimal(i % 10_000) / 100
    legs = (Leg(exchanger, direction.replace("-", "/"), value, ts_ms, 60_000),)
    return RateTick(exchanger, direction, value, ts_ms, legs, since_ms=base_ms)


async def publish_outage(bus: RateBus, figures: Figures, base_ms: int) -> None:
    """Every tick of the outage, in pipelined batches; every 1,000th batch also re-published."""
    step_ms = max(1, round(1000 / figures.rate))
    started = time.monotonic()
    for first in range(0, figures.entries, BATCH):
        batch = [
            make_tick(i, base_ms, step_ms)
            for i in range(first, min(first + BATCH, figures.entries))
        ]
        status = SourceStatus("binance", SourceState.UP, base_ms + first * step_ms)
        await bus.publish([*batch, status])
        if first % (BATCH * 100) == 0:  # a retried publish: same events, new stream entries
            await bus.publish([*batch[:10], status])
            figures.replayed += 11
        if first % (BATCH * 50) == 0:
            length = await bus.redis.xlen(STREAM)
            used, _limit = await bus.memory()
            figures.peak_length = max(figures.peak_length, length)
            figures.peak_memory = max(figures.peak_memory, used)
    figures.publish_s = time.monotonic() - started
    figures.peak_length = max(figures.peak_length, await bus.redis.xlen(STREAM))
    figures.peak_memory = max(figures.peak_memory, (await bus.memory())[0])


async def wait_drained(bus: RateBus, pg_url: str, expected: int, timeout_s: float) -> float:
    """Seconds until every published tick is a row and nothing is pending."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        conn = await asyncpg.connect(pg_url)
        try:
            rows = int(await conn.fetchval("SELECT count(*) FROM rate_tick"))
        finally:
            await conn.close()
        _length, pending = await bus.group_info()
        if rows >= expected and pending == 0:
            return time.monotonic() - started
        await asyncio.sleep(0.5)
    raise RuntimeError(f"not drained within {timeout_s:.0f} s")


async def wait_trimmed(client: aioredis.Redis, below: int, timeout_s: float) -> int:
    """The stream's length once the persister's trimming brought it under `below`."""
    deadline = time.monotonic() + timeout_s
    while (length := await client.xlen(STREAM)) >= below and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
    return length


async def count_rows(pg_url: str, figures: Figures) -> None:
    conn = await asyncpg.connect(pg_url)
    try:
        figures.rows = int(await conn.fetchval("SELECT count(*) FROM rate_tick"))
        figures.distinct_values = int(
            await conn.fetchval(
                "SELECT count(*) FROM (SELECT DISTINCT exchanger, direction, ts_ms, value"
                " FROM rate_tick) d"
            )
        )
        figures.events = int(await conn.fetchval("SELECT count(*) FROM source_event"))
    finally:
        await conn.close()


async def run(figures: Figures, redis: EmbeddedRedis, postgres: EmbeddedPostgres) -> None:
    """The measured part: outage, publishing, return, drain, checks."""
    client = aioredis.Redis.from_url(redis.url, decode_responses=True)
    bus = RateBus(client, maxlen=1_000_000)
    try:
        await bus.ensure_group()
        figures.base_memory = (await bus.memory())[0]
        base_ms = int(time.time() * 1000) - int(figures.hours * 3_600_000)
        postgres.stop()
        await publish_outage(bus, figures, base_ms)
        postgres.start()
        figures.drain_s = await wait_drained(bus, postgres.url, figures.entries, 1_800)
        figures.trimmed_length = await wait_trimmed(client, figures.entries // 10, 120)
        figures.dead = await client.xlen(DEAD_LETTER)
        await count_rows(postgres.url, figures)
        pending = (await client.xpending(STREAM, GROUP))["pending"]
        figures.notes.append(f"pending after the drain: {pending}")
    finally:
        await client.aclose()


def write_report(figures: Figures, ok: bool, command: str) -> None:
    mib = 1024 * 1024
    per_entry = (figures.peak_memory - figures.base_memory) / max(1, figures.peak_length)
    lines = [
        "# A long Postgres outage at the throttle ceiling: measured",
        "",
        f"- Command: `{command}`",
        f"- Machine: {os.cpu_count()} cores, {platform.platform()}, "
        f"Python {platform.python_version()}",
        f"- Date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        "- Servers: embedded Redis 6.2 (AOF) and PostgreSQL 18; the real `ratesvc persister` with "
        "its defaults (STREAM_MAXLEN 1,000,000, STREAM_TRIM_INTERVAL_S 5) but STREAM_KEEP_S=30",
        "- Load: the outage's ticks published through `RateBus.publish` (the collector's publish "
        "call) as fast as Redis takes them, 16 (exchanger, direction) keys in turn; every 100th "
        "batch published twice and a status event with every batch (as retried publishes do)",
        "",
        "| measure | result |",
        "|---|---|",
        f"| outage simulated | {figures.hours:g} h at {figures.rate:g} entries/s = "
        f"{figures.entries:,} ticks (+{figures.replayed:,} re-published entries), published in "
        f"{figures.publish_s:.1f} s |",
        f"| stream at the end of the outage | {figures.peak_length:,} entries; Redis used memory "
        f"{figures.peak_memory / mib:.0f} MiB ({figures.base_memory / mib:.1f} MiB before), "
        f"about {per_entry:.0f} bytes per entry |",
        f"| Postgres back: everything stored after | {figures.drain_s:.1f} s |",
        f"| rows in rate_tick | {figures.rows:,} (expected {figures.entries:,}); rows with a "
        "duplicate (exchanger, direction, ts_ms, value): "
        f"{figures.rows - figures.distinct_values} |",
        f"| source events stored | {figures.events:,} (one per distinct event: "
        f"{-(-figures.entries // BATCH):,} expected, re-published ones skipped) |",
        f"| dead letters | {figures.dead} |",
        f"| stream after the next trim | {figures.trimmed_length:,} entries |",
        f"| every tick stored exactly once | {'yes' if ok else '**NO**'} |",
        "",
        *[f"- {note}" for note in figures.notes],
        "",
    ]
    REPORT.write_text("\n".join(lines), encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--hours", type=float, default=3.0, help="outage length to simulate")
    parser.add_argument("--rate", type=float, default=18.0, help="entries per second (ceiling)")
    args = parser.parse_args()
    figures = Figures(hours=args.hours, rate=args.rate)
    figures.entries = int(args.hours * 3600 * args.rate)
    workdir = Path(tempfile.mkdtemp(prefix="ratesvc-long-outage-"))
    workdir.chmod(0o755)  # ours: the embedded Postgres user keeps its cluster here
    redis = EmbeddedRedis(workdir, port=free_port()).start()
    postgres = EmbeddedPostgres(workdir, port=free_port()).start()
    persister = None
    try:
        asyncio.run(migrate(postgres.url))
        env = {
            **{k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")},
            "REDIS_URL": redis.url,
            "DATABASE_URL": postgres.url,
            "STREAM_KEEP_S": "30",
            "PERSISTER_CONSUMER": "bench",
            "PERSISTER_METRICS_PORT": "0",
        }
        persister = Daemon.ratesvc("persister", ["persister"], env=env, workdir=workdir).start()
        asyncio.run(run(figures, redis, postgres))
    finally:
        if persister is not None:
            persister.stop(timeout_s=10)
        postgres.stop()
        redis.stop()
    batches = -(-figures.entries // BATCH)
    ok = (
        figures.rows == figures.entries == figures.distinct_values
        and figures.events == batches
        and figures.dead == 0
    )
    write_report(figures, ok, " ".join(["python bench/long_outage.py", *sys.argv[1:]]))
    print(REPORT.read_text(encoding="utf-8"))
    shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
