"""RateMirror against a real Redis: load, follow, no lost ticks, outage and re-sync, cold start."""

# pylint: disable=missing-function-docstring

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal

import httpx
import pytest
import redis.asyncio as aioredis

from ratesvc.api.app import create_app
from ratesvc.api.mirror import MirrorOptions, RateMirror
from ratesvc.bus import RateBus
from ratesvc.domain import DIRECTIONS, Leg, RateTick, SourceStatus, now_ms
from ratesvc.settings import Settings
from ratesvc.store.repository import RateRepository
from tests.integration.redis_proxy import RedisProxy

pytestmark = pytest.mark.integration

FAST = MirrorOptions(
    evaluate_interval_s=0.05, block_ms=100, backoff_initial_s=0.05, backoff_max_s=0.2
)


def make_tick(exchanger: str, direction: str, value: str, *, ts_ms: int | None = None) -> RateTick:
    """A one-leg tick stamped now (or at `ts_ms`)."""
    ts_ms = now_ms() if ts_ms is None else ts_ms
    leg = Leg(exchanger, direction.replace("-", "/"), Decimal(value), ts_ms, 60_000)
    return RateTick(exchanger, direction, Decimal(value), ts_ms, (leg,))


def all_ticks(exchanger: str, value: str, *, ts_ms: int | None = None) -> list[RateTick]:
    """One tick per direction."""
    return [make_tick(exchanger, d, value, ts_ms=ts_ms) for d in DIRECTIONS]


async def eventually(predicate: Callable[[], bool], *, timeout_s: float = 10.0) -> None:
    """Poll `predicate` until it holds; fail after `timeout_s` (a bound, not a measurement)."""
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(mirror: RateMirror) -> AsyncIterator[RateMirror]:
    """Start the mirror, stop it on exit."""
    await mirror.start()
    try:
        yield mirror
    finally:
        await mirror.stop()


@pytest.fixture(name="bus")
def bus_fixture(redis: aioredis.Redis) -> RateBus:
    """A RateBus on the clean test db."""
    return RateBus(redis)


async def test_start_loads_the_hash_and_follows(bus: RateBus) -> None:
    await bus.publish(all_ticks("binance", "100") + all_ticks("coingecko", "101"))
    async with running(RateMirror(bus, options=FAST)) as mirror:
        assert mirror.loaded
        await eventually(lambda: mirror.ready)
        assert len(mirror.ticks) == 16
        assert mirror.decide(None, DIRECTIONS).exchanger == "binance"


async def test_follow_applies_published_ticks_and_bumps_the_version(bus: RateBus) -> None:
    await bus.publish(all_ticks("binance", "100"))
    async with running(RateMirror(bus, options=FAST)) as mirror:
        await eventually(lambda: mirror.ready)
        version = mirror.version
        newer = make_tick("binance", "BTC-USD", "105.5", ts_ms=now_ms() + 1)
        await bus.publish([newer])
        await eventually(lambda: mirror.ticks[("binance", "BTC-USD")] == newer)
        assert mirror.version > version


async def test_ticks_published_while_loading_are_not_lost(redis: aioredis.Redis) -> None:
    bus = RateBus(redis)
    await bus.publish(all_ticks("binance", "100"))
    base_ms = now_ms()
    # one lands between last_id() and the hash read, one after the hash read
    early = make_tick("binance", "BTC-USD", "101", ts_ms=base_ms + 5)
    late = make_tick("binance", "ETH-USD", "3000", ts_ms=base_ms + 6)
    last_id, read_latest = bus.last_id, bus.read_latest

    async def last_id_then_publish() -> str:
        noted = await last_id()
        await RateBus(redis).publish([early])
        return noted

    async def read_then_publish() -> tuple[list[RateTick], list[SourceStatus]]:
        snapshot = await read_latest()
        await RateBus(redis).publish([late])
        return snapshot

    bus.last_id = last_id_then_publish  # type: ignore[method-assign]
    bus.read_latest = read_then_publish  # type: ignore[method-assign]
    async with running(RateMirror(bus, options=FAST)) as mirror:
        await eventually(lambda: mirror.ticks.get(("binance", "ETH-USD")) == late)
        assert mirror.ticks[("binance", "BTC-USD")] == early


async def test_cold_start_from_history_seeds_the_hash(bus: RateBus) -> None:
    history_ticks = all_ticks("coingecko", "99")
    calls = []

    async def history() -> tuple[list[RateTick], list[SourceStatus]]:
        calls.append(1)
        return history_ticks, []

    async with running(RateMirror(bus, history=history, options=FAST)) as mirror:
        assert mirror.loaded
        assert mirror.decide(None, DIRECTIONS).exchanger == "coingecko"
    ticks, _statuses = await bus.read_latest()
    assert sorted(t.key for t in ticks) == sorted(t.key for t in history_ticks)
    assert calls == [1]


async def test_history_is_not_read_when_the_hash_has_values(bus: RateBus) -> None:
    await bus.publish(all_ticks("binance", "100"))

    async def history() -> tuple[list[RateTick], list[SourceStatus]]:
        raise AssertionError("history must not be read")

    async with running(RateMirror(bus, history=history, options=FAST)) as mirror:
        assert mirror.loaded


async def test_redis_outage_keeps_the_snapshot_then_resyncs(
    redis: aioredis.Redis, redis_url: str
) -> None:
    await RateBus(redis).publish(all_ticks("binance", "100"))
    proxy = RedisProxy(redis_url)
    await proxy.open()
    client = aioredis.Redis.from_url(proxy.url, decode_responses=True)
    try:
        async with running(RateMirror(RateBus(client), options=FAST)) as mirror:
            await eventually(lambda: mirror.ready)
            await proxy.cut()
            await eventually(lambda: not mirror.following)
            assert not mirror.ready
            assert len(mirror.ticks) == 8
            assert mirror.decide(None, DIRECTIONS).exchanger == "binance"
            # published while this worker is cut off: only a re-sync can bring it
            missed = make_tick("binance", "BTC-RUB", "9000", ts_ms=now_ms() + 5)
            await RateBus(redis).publish([missed])
            await proxy.open()
            await eventually(lambda: mirror.ready)
            await eventually(lambda: mirror.ticks[("binance", "BTC-RUB")] == missed)
            after = make_tick("binance", "BTC-USD", "101", ts_ms=now_ms() + 10)
            await RateBus(redis).publish([after])
            await eventually(lambda: mirror.ticks[("binance", "BTC-USD")] == after)
    finally:
        await client.aclose()
        with contextlib.suppress(AssertionError):
            await proxy.cut()


async def test_app_lifespan_serves_from_redis(
    redis: aioredis.Redis, redis_url: str, make_settings: Callable[..., Settings]
) -> None:
    await RateBus(redis).publish(all_ticks("binance", "54000.000123"))
    app = create_app(make_settings(redis_url=redis_url))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ratesvc") as client:
            await _eventually_status(lambda: client.get("/ready"), 200)
            response = await client.get("/v1/courses?direction=BTC-USD")
    assert response.json() == {
        "exchanger": "binance",
        "courses": [{"direction": "BTC-USD", "value": 54000.000123}],
    }


async def test_app_cold_start_reads_postgres_when_redis_is_empty(
    redis: aioredis.Redis,
    redis_url: str,
    repo: RateRepository,
    migrated_url: str,
    make_settings: Callable[..., Settings],
) -> None:
    ticks = all_ticks("coingecko", "53999.5")
    await repo.save_batch([(f"{i + 1}-0", t) for i, t in enumerate(ticks)])
    app = create_app(make_settings(redis_url=redis_url, database_url=migrated_url))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ratesvc") as client:
            await _eventually_status(lambda: client.get("/courses?direction=ETH-RUB"), 200)
            response = await client.get("/courses?direction=ETH-RUB")
            await _eventually_status(lambda: client.get("/ready"), 200)  # seeded by now
    assert response.json()["courses"] == [{"direction": "ETH-RUB", "value": 53999.5}]
    seeded, _statuses = await RateBus(redis).read_latest()
    assert sorted(t.key for t in seeded) == sorted(t.key for t in ticks)


async def _eventually_status(
    call: Callable[[], Awaitable[httpx.Response]], status: int, *, timeout_s: float = 10.0
) -> None:
    async with asyncio.timeout(timeout_s):
        while (await call()).status_code != status:
            await asyncio.sleep(0.05)
