"""The stream is trimmed by what the persister group has stored, never past it (real Redis)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from ratesvc.bus import DEAD_LETTER, DEAD_LETTER_MAXLEN, GROUP, STREAM, RateBus
from ratesvc.domain import now_ms
from ratesvc.settings import Settings
from ratesvc.workers.persister import run_persister
from tests.integration.test_persister import make_ticks, wait_until

pytestmark = pytest.mark.integration

FUTURE_MS = 2**53  # a keep-window floor later than every entry: only the group's position counts


async def ids(redis: aioredis.Redis) -> list[str]:
    return [entry_id for entry_id, _fields in await redis.xrange(STREAM)]


async def test_trim_never_removes_an_entry_the_group_has_not_acknowledged(
    redis: aioredis.Redis,
) -> None:
    bus = RateBus(redis)
    published = await bus.publish(make_ticks(1_000))
    await bus.ensure_group()
    delivered = await bus.read_batch("c1", count=700)
    await bus.ack([entry_id for entry_id, _ in delivered[:600]])  # 100 stay pending, 300 unread
    removed = await bus.trim_persisted(keep_after_ms=FUTURE_MS)
    left = await ids(redis)
    assert set(published[600:]) <= set(left), "a pending or undelivered entry was trimmed"
    assert removed == 1_000 - len(left) and removed > 0
    assert len(await bus.read_own_pending("c1")) == 100


async def test_with_nothing_pending_the_trim_stops_at_the_last_delivered_entry(
    redis: aioredis.Redis,
) -> None:
    bus = RateBus(redis)
    published = await bus.publish(make_ticks(1_000))
    await bus.ensure_group()
    await bus.ack([entry_id for entry_id, _ in await bus.read_batch("c1", count=500)])
    await bus.trim_persisted(keep_after_ms=FUTURE_MS)
    left = await ids(redis)
    assert set(published[500:]) <= set(left) and len(left) < 1_000
    assert len(await bus.read_batch("c1", count=1_000)) == 500  # the unread half is all there


async def test_stored_entries_inside_the_keep_window_stay(redis: aioredis.Redis) -> None:
    bus = RateBus(redis)
    await bus.publish(make_ticks(500))
    await bus.ensure_group()
    await bus.ack([entry_id for entry_id, _ in await bus.read_batch("c1", count=500)])
    assert await bus.trim_persisted(keep_after_ms=now_ms() - 60_000) == 0
    assert await redis.xlen(STREAM) == 500


async def test_without_a_consumer_group_nothing_is_trimmed(redis: aioredis.Redis) -> None:
    bus = RateBus(redis)
    assert await bus.trim_persisted(keep_after_ms=FUTURE_MS) == 0  # no stream at all
    await bus.publish(make_ticks(300))
    assert await bus.trim_persisted(keep_after_ms=FUTURE_MS) == 0
    assert await redis.xlen(STREAM) == 300


async def test_the_dead_letter_stream_is_bounded(redis: aioredis.Redis) -> None:
    bus = RateBus(redis)
    entry_ids = await bus.publish(make_ticks(10))
    await bus.ensure_group()
    await redis.xadd(DEAD_LETTER, {"filler": "x"})
    for _ in range(DEAD_LETTER_MAXLEN // 500 + 1):  # fill it past the bound, 500 at a time
        async with redis.pipeline(transaction=False) as pipe:
            for _ in range(500):
                pipe.xadd(DEAD_LETTER, {"filler": "x"})
            await pipe.execute()
    await bus.dead_letter(entry_ids[0], {"junk": "1"}, reason="test")
    length = await redis.xlen(DEAD_LETTER)
    assert DEAD_LETTER_MAXLEN <= length < DEAD_LETTER_MAXLEN + 500  # "~": whole nodes only


@pytest.mark.usefixtures("db")  # migrated and emptied
async def test_the_persister_trims_what_it_stored(
    redis: aioredis.Redis,
    redis_url: str,
    migrated_url: str,
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(
        redis_url=redis_url,
        database_url=migrated_url,
        stream_keep_s=0,
        stream_trim_interval_s=0.1,
    )
    bus = RateBus(redis)
    await bus.publish(make_ticks(1_000))
    before = REGISTRY.get_sample_value("ratesvc_stream_trimmed_entries_total") or 0.0
    stop = asyncio.Event()
    task = asyncio.create_task(run_persister(settings, stop=stop, consumer="trimmer"))
    try:

        async def trimmed() -> bool:
            """the stream shrinks once its entries are stored"""
            groups = [g["name"] for g in await redis.xinfo_groups(STREAM)]
            length, pending = await bus.group_info()
            return GROUP in groups and pending == 0 and length < 1_000

        await wait_until(trimmed)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=15)
    after = REGISTRY.get_sample_value("ratesvc_stream_trimmed_entries_total") or 0.0
    assert after - before == 1_000 - await redis.xlen(STREAM)
