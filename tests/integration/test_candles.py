"""Candles on real Postgres: maintained by the inserts that store ticks, counted once, merged in
any order, built in bulk the same way, pruned by their own retention."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal

import pytest
from prometheus_client import REGISTRY

from ratesvc.bus import RateBus
from ratesvc.domain import Leg, RateTick, now_ms
from ratesvc.settings import Settings
from ratesvc.store.candles import Candle, bucket_of
from ratesvc.store.repository import RateRepository
from ratesvc.workers.persister import run_persister

pytestmark = pytest.mark.integration

D = Decimal
MIN = 60_000
HOUR = 3_600_000
DUPLICATES = "ratesvc_persister_duplicates_total"
T0 = 1_764_547_200_000  # 2025-12-01T00:00:00Z


def tick(
    value: str, ts_ms: int, *, exchanger: str = "binance", direction: str = "BTC-USD"
) -> RateTick:
    """A one-leg tick at `ts_ms`."""
    legs = (Leg("binance", "BTC/USDT", D(value), ts_ms, 10_000),)
    return RateTick(exchanger, direction, D(value), ts_ms, legs)


def items(*ticks: RateTick) -> list[tuple[str, RateTick]]:
    """(stream id, tick) pairs as the persister passes them."""
    return [(f"{t.ts_ms}-{i}", t) for i, t in enumerate(ticks)]


async def test_inserted_ticks_make_candles_of_every_interval(repo: RateRepository) -> None:
    """One batch across a minute boundary: two 1m candles, one of each wider interval."""
    batch = [tick("10", T0 + 1_000), tick("12.5", T0 + 2_000), tick("9", T0 + 59_999)]
    batch.append(tick("11", T0 + MIN))

    assert await repo.save_batch(items(*batch)) == 4

    assert await repo.candles("binance", "BTC-USD", 60) == [
        Candle(T0, D("10"), D("12.5"), D("9"), D("9"), 3, T0 + 1_000, T0 + 59_999),
        Candle(T0 + MIN, D("11"), D("11"), D("11"), D("11"), 1, T0 + MIN, T0 + MIN),
    ]
    for width in (300, 900, 3_600, 86_400):
        assert await repo.candles("binance", "BTC-USD", width) == [
            Candle(T0, D("10"), D("12.5"), D("9"), D("11"), 4, T0 + 1_000, T0 + MIN)
        ]
    assert await repo.candles("binance", "ETH-USD", 60) == []


async def test_redelivered_ticks_are_never_counted_twice(repo: RateRepository) -> None:
    """A batch delivered again (new stream ids, plus a duplicate inside a batch) adds nothing."""
    first, second, third = tick("10", T0 + 1_000), tick("20", T0 + 2_000), tick("5", T0 + 3_000)
    await repo.save_batch(items(first, second))

    assert await repo.save_batch(items(second, first, third, third)) == 1

    assert await repo.candles("binance", "BTC-USD", 60) == [
        Candle(T0, D("10"), D("20"), D("5"), D("5"), 3, T0 + 1_000, T0 + 3_000)
    ]


async def test_an_out_of_order_batch_moves_open_and_close_only_when_earlier_or_later(
    repo: RateRepository,
) -> None:
    """A late batch holding an earlier tick takes the open; its later-than-stored tick the close;
    ticks inside the stored span change only high/low/count."""
    await repo.save_batch(items(tick("10", T0 + 20_000), tick("11", T0 + 30_000)))
    await repo.save_batch(items(tick("15", T0 + 25_000)))  # inside: only the high
    await repo.save_batch(items(tick("8", T0 + 5_000), tick("7", T0 + 50_000)))  # both ends

    assert await repo.candles("binance", "BTC-USD", 60) == [
        Candle(T0, D("8"), D("15"), D("7"), D("7"), 5, T0 + 5_000, T0 + 50_000)
    ]


async def test_bucket_boundaries_split_at_the_exact_millisecond(repo: RateRepository) -> None:
    """The last millisecond of an hour and of a day stay in their bucket; the next starts anew."""
    day_end = T0 + 86_400_000
    await repo.save_batch(
        items(
            tick("1", T0 + HOUR - 1),
            tick("2", T0 + HOUR),
            tick("3", day_end - 1),
            tick("4", day_end),
        )
    )

    hours = await repo.candles("binance", "BTC-USD", 3_600)
    assert [(c.bucket_ms, c.open, c.ticks) for c in hours] == [
        (T0, D("1"), 1),
        (T0 + HOUR, D("2"), 1),
        (day_end - HOUR, D("3"), 1),
        (day_end, D("4"), 1),
    ]
    days = await repo.candles("binance", "BTC-USD", 86_400)
    assert [(c.bucket_ms, c.open, c.close, c.ticks) for c in days] == [
        (T0, D("1"), D("3"), 3),
        (day_end, D("4"), D("4"), 1),
    ]


async def test_the_bulk_build_gives_the_candles_the_persister_maintains(
    repo: RateRepository, db: object
) -> None:
    """build_candles over stored ticks equals the candles maintained batch by batch."""
    ticks = [tick(str(100 + (i * 37) % 23), T0 + i * 7_919) for i in range(300)]
    for start in range(0, 300, 40):
        await repo.save_batch(items(*ticks[start : start + 40][::-1]))  # each batch reversed
    maintained = {w: await repo.candles("binance", "BTC-USD", w) for w in (60, 300, 3_600)}

    await db.execute_script("TRUNCATE rate_candle")  # type: ignore[attr-defined]
    await repo.build_candles(T0, T0 + 86_400_000)

    assert {w: await repo.candles("binance", "BTC-USD", w) for w in (60, 300, 3_600)} == maintained


async def test_one_tick_stored_twice_within_the_same_batch_counts_once(
    repo: RateRepository,
) -> None:
    """The unique tick_id settles duplicates inside one statement too."""
    same = tick("10", T0)
    assert await repo.save_batch(items(same, same)) == 1
    assert [c.ticks for c in await repo.candles("binance", "BTC-USD", 60)] == [1]


async def test_candles_outlive_ticks_and_are_pruned_by_their_own_retention(
    make_settings: Callable[..., Settings],
    redis_url: str,
    migrated_url: str,
    repo: RateRepository,
    redis: object,
) -> None:
    """RETENTION_DAYS prunes ticks, CANDLE_RETENTION_DAYS candles: 3-day-old candles stay with
    5-day candle retention while their ticks go; 10-day-old candles go."""
    day_ms = 86_400_000
    now = now_ms()
    await repo.save_batch(
        items(tick("1", now - 10 * day_ms), tick("2", now - 3 * day_ms), tick("3", now - 1_000))
    )
    settings = make_settings(
        redis_url=redis_url,
        database_url=migrated_url,
        retention_days=1.0,
        candle_retention_days=5.0,
        retention_batch_rows=1,
    )
    await RateBus(redis).ensure_group()  # type: ignore[arg-type]
    stop = asyncio.Event()
    task = asyncio.create_task(run_persister(settings, stop=stop, consumer="candles"))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    try:
        while (
            await repo.count_ticks() != 1 or len(await repo.candles("binance", "BTC-USD", 60)) != 2
        ):
            assert loop.time() < deadline, "retention did not run within 15 s"
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)

    minutes = await repo.candles("binance", "BTC-USD", 60)
    assert [c.bucket_ms for c in minutes] == [
        bucket_of(now - 3 * day_ms, 60),
        bucket_of(now - 1_000, 60),
    ]
    for width in (300, 900, 3_600, 86_400):
        assert all(
            c.bucket_ms >= now - 5 * day_ms - width * 1000
            for c in await repo.candles("binance", "BTC-USD", width)
        )
        assert len(await repo.candles("binance", "BTC-USD", width)) >= 1


async def test_the_persister_keeps_candles_through_the_stream(
    make_settings: Callable[..., Settings],
    redis_url: str,
    migrated_url: str,
    repo: RateRepository,
    redis: object,
) -> None:
    """Ticks published on the bus end up in the candles once, via the running persister; the
    same ticks published again (new stream entries) change nothing."""
    bus = RateBus(redis)  # type: ignore[arg-type]
    await bus.ensure_group()
    ticks = [tick(str(v), T0 + i * 1_000) for i, v in enumerate([5, 7, 3, 6])]
    settings = make_settings(redis_url=redis_url, database_url=migrated_url, persister_block_ms=50)
    stop = asyncio.Event()
    task = asyncio.create_task(run_persister(settings, stop=stop, consumer="candles"))
    loop = asyncio.get_running_loop()

    duplicates = REGISTRY.get_sample_value(DUPLICATES) or 0.0

    async def settled(stored: int, skipped: int) -> None:
        deadline = loop.time() + 15
        while (
            await repo.count_ticks() != stored
            or (REGISTRY.get_sample_value(DUPLICATES) or 0.0) - duplicates != skipped
        ):
            assert loop.time() < deadline, "the persister did not handle the ticks in 15 s"
            await asyncio.sleep(0.05)

    try:
        await bus.publish(ticks)
        await settled(4, 0)
        await bus.publish(ticks[::-1])  # the same ticks again: skipped by their tick_id
        await settled(4, 4)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)

    assert await repo.candles("binance", "BTC-USD", 60) == [
        Candle(T0, D("5"), D("7"), D("3"), D("6"), 4, T0, T0 + 3_000)
    ]
