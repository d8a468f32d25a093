"""The persister end to end on real Redis + Postgres: at-least-once, idempotent, nothing lost."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from decimal import Decimal
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY
from tortoise.backends.base.client import BaseDBAsyncClient

from ratesvc.bus import DEAD_LETTER, GROUP, STREAM, RateBus
from ratesvc.domain import Leg, RateTick, SourceState, SourceStatus, now_ms
from ratesvc.settings import Settings
from ratesvc.store.repository import RateRepository
from ratesvc.workers.persister import run_persister

pytestmark = pytest.mark.integration

ROWS = "ratesvc_persister_rows_total"
DUPLICATES = "ratesvc_persister_duplicates_total"
CLAIMED = "ratesvc_persister_claimed_total"
DEAD = "ratesvc_persister_dead_letter_total"
ERRORS = "ratesvc_persister_errors_total"
PRUNED = "ratesvc_persister_pruned_rows_total"


def metric(name: str) -> float:
    """Current value of a counter sample, 0 when never touched."""
    return REGISTRY.get_sample_value(name) or 0.0


async def wait_until(check: Callable[[], Awaitable[bool]], *, timeout_s: float = 15.0) -> None:
    """Poll `check` until it is true; fail the test after `timeout_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await check():
        if loop.time() > deadline:
            pytest.fail(f"not reached within {timeout_s}s: {check.__doc__}")
        await asyncio.sleep(0.05)


def make_ticks(count: int, *, start_ms: int | None = None) -> list[RateTick]:
    """`count` distinct BTC-USD ticks one millisecond apart, from `start_ms` (default: now)."""
    start_ms = now_ms() if start_ms is None else start_ms
    ticks = []
    for i in range(count):
        value = Decimal("64000.5") + Decimal(i) / 100
        legs = (Leg("binance", "BTC/USDT", value, start_ms + i, 10_000),)
        ticks.append(RateTick("binance", "BTC-USD", value, start_ms + i, legs))
    return ticks


@pytest.fixture(name="bus")
async def bus_fixture(redis: aioredis.Redis) -> RateBus:
    """A RateBus on the emptied test Redis, with the persister group (as a past run left it)."""
    bus = RateBus(redis)
    await bus.ensure_group()
    return bus


@pytest.fixture(name="settings_for")
def settings_for_fixture(
    make_settings: Callable[..., Settings], redis_url: str, migrated_url: str
) -> Callable[..., Settings]:
    """Factory of persister settings: short blocking reads, the shortest claim idle allowed."""
    defaults = {
        "redis_url": redis_url,
        "database_url": migrated_url,
        "persister_block_ms": 50,
        "persister_claim_idle_ms": 1_000,
        "persister_max_deliveries": 3,
        "persister_batch_size": 50,
    }
    return lambda **overrides: make_settings(**{**defaults, **overrides})


@pytest.fixture(name="settings")
def settings_fixture(settings_for: Callable[..., Settings]) -> Settings:
    """The default test settings."""
    return settings_for()


@asynccontextmanager
async def running(settings: Settings, *, consumer: str = "persister-b") -> AsyncIterator[None]:
    """Run the persister in a task; on exit stop it and require a prompt, clean exit."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_persister(settings, stop=stop, consumer=consumer))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)


def drained(bus: RateBus, repo: RateRepository, rows: int, *, events: int = 0) -> Callable:
    """A check: `rows` ticks and `events` events stored, nothing pending in the group."""

    async def check() -> bool:
        _length, pending = await bus.group_info()
        stored = await repo.count_ticks(), await repo.count_events()
        return pending == 0 and stored == (rows, events)

    check.__doc__ = f"{rows} rows, {events} events, 0 pending"
    return check


async def test_published_ticks_and_events_land_once_and_are_acked(
    settings: Settings, bus: RateBus, repo: RateRepository
) -> None:
    """publish -> persister -> Postgres: every entry stored, every entry acked."""
    ticks = make_ticks(40)
    status = SourceStatus("binance", SourceState.UP, now_ms())
    rows_before = metric(ROWS)
    await bus.publish([*ticks, status])

    async with running(settings):
        await wait_until(drained(bus, repo, 40, events=1))

    assert [t.value for t in await repo.latest_ticks()] == [ticks[-1].value]
    assert await repo.latest_statuses() == [status]
    assert metric(ROWS) - rows_before == 41


async def test_entries_of_a_consumer_killed_mid_batch_are_claimed_and_written_once(
    settings: Settings, bus: RateBus, repo: RateRepository
) -> None:
    """Consumer A read 20 entries, committed half, died before XACK: B claims all, writes 10."""
    ticks = make_ticks(20)
    await bus.publish(ticks)
    taken = await bus.read_batch("persister-a", count=20, block_ms=10)
    assert len(taken) == 20
    await repo.save_batch([(entry_id, tick) for (entry_id, _f), tick in zip(taken[:10], ticks)])
    claimed_before, duplicates_before = metric(CLAIMED), metric(DUPLICATES)

    async with running(settings, consumer="persister-b"):
        await wait_until(drained(bus, repo, 20))

    assert metric(CLAIMED) - claimed_before == 20
    assert metric(DUPLICATES) - duplicates_before == 10


async def test_a_restarted_consumer_first_rereads_its_own_pending_entries(
    settings_for: Callable[..., Settings], bus: RateBus, repo: RateRepository
) -> None:
    """Same consumer name after a crash: its unacked entries are persisted without a claim."""
    await bus.publish(make_ticks(5))
    assert len(await bus.read_batch("persister-b", count=5, block_ms=10)) == 5
    no_claims = settings_for(persister_claim_idle_ms=600_000)

    async with running(no_claims, consumer="persister-b"):
        await wait_until(drained(bus, repo, 5))


async def test_poison_entries_are_dead_lettered_without_blocking_the_others(
    settings: Settings, bus: RateBus, repo: RateRepository, redis: aioredis.Redis
) -> None:
    """Garbage fields go to the dead letter at once, with the reason; good entries land."""
    ticks = make_ticks(10)
    dead_before = metric(DEAD)
    await bus.publish(ticks[:5])
    await redis.xadd(STREAM, {"kind": "tick", "exchanger": "binance"})
    await redis.xadd(STREAM, {"junk": "\x00garbage"})
    await redis.xadd(
        STREAM, {**make_ticks(1, start_ms=now_ms() + 5)[0].to_fields(), "legs": "[not json"}
    )
    await redis.xadd(
        STREAM, {**make_ticks(1, start_ms=now_ms() + 6)[0].to_fields(), "value": "NaN"}
    )
    await bus.publish(ticks[5:])

    async with running(settings):
        await wait_until(drained(bus, repo, 10))

    dead = await redis.xrange(DEAD_LETTER)
    assert len(dead) == 4 and metric(DEAD) - dead_before == 4
    assert all(fields["_reason"] and fields["_origin_id"] for _id, fields in dead)


async def test_a_row_postgres_refuses_is_isolated_and_dead_lettered(
    settings: Settings, bus: RateBus, repo: RateRepository, redis: aioredis.Redis
) -> None:
    """A row Postgres refuses fails the batch: entries are retried one by one.

    (Values are NUMERIC without a limit since migration 1; a direction longer than its
    VARCHAR(32) column is what Postgres refuses here.)
    """
    ticks = make_ticks(6)
    huge = RateTick("binance", "ETH-USD" + "-" * 40, Decimal(1), now_ms(), ticks[0].legs)
    dead_before = metric(DEAD)
    await bus.publish([*ticks[:3], huge, *ticks[3:]])

    async with running(settings):
        await wait_until(drained(bus, repo, 6))

    [(_id, fields)] = await redis.xrange(DEAD_LETTER)
    assert fields["id"] == huge.tick_id and "value too long" in fields["_reason"]
    assert metric(DEAD) - dead_before == 1


async def test_an_entry_delivered_too_often_is_dead_lettered(
    settings: Settings, bus: RateBus, repo: RateRepository, redis: aioredis.Redis
) -> None:
    """An entry that already crashed consumers max_deliveries times is parked, not retried."""
    [poison_id] = await bus.publish(make_ticks(1))
    await bus.read_batch("ghost", count=1, block_ms=10)
    retries = settings.persister_max_deliveries
    await redis.xclaim(STREAM, GROUP, "ghost", 0, [poison_id], idle=60_000, retrycount=retries)
    await bus.publish(make_ticks(1, start_ms=now_ms() + 42))

    async with running(settings):
        await wait_until(drained(bus, repo, 1))

    [(_id, fields)] = await redis.xrange(DEAD_LETTER)
    assert fields["_origin_id"] == poison_id
    assert fields["_reason"] == f"delivered {retries + 1} times (max {retries})"


def free_port() -> int:
    """A TCP port nothing listens on (yet)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def start_proxy(port: int, target_host: str, target_port: int) -> asyncio.Server:
    """A TCP forwarder 127.0.0.1:`port` -> target: "Postgres comes back" on that port."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with suppress(ConnectionError):
            while data := await reader.read(65_536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(target_host, target_port)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    return await asyncio.start_server(handle, "127.0.0.1", port)


async def test_postgres_down_keeps_entries_pending_until_it_returns(
    settings_for: Callable[..., Settings], migrated_url: str, bus: RateBus, repo: RateRepository
) -> None:
    """Postgres unreachable: errors, backoff, entries stay pending; once back, all land once."""
    real = urlsplit(migrated_url)
    port = free_port()
    userinfo = real.netloc.rpartition("@")[0]
    down_url = urlunsplit(real._replace(netloc=f"{userinfo}@127.0.0.1:{port}"))
    unreachable = settings_for(database_url=down_url)
    errors_before = metric(ERRORS)
    await bus.publish(make_ticks(30))

    async def failing_with_all_pending() -> bool:
        """persister errors counted and the 30 entries read but pending"""
        return metric(ERRORS) - errors_before >= 2 and (await bus.group_info())[1] == 30

    proxy = None
    try:
        async with running(unreachable):
            await wait_until(failing_with_all_pending)
            assert await repo.count_ticks() == 0
            proxy = await start_proxy(port, str(real.hostname), int(real.port or 5432))
            await wait_until(drained(bus, repo, 30))
    finally:
        if proxy is not None:
            proxy.close()


async def test_a_dropped_redis_connection_is_retried(
    settings: Settings, bus: RateBus, repo: RateRepository, redis: aioredis.Redis
) -> None:
    """Redis kills the persister's connection mid-read: it reconnects and carries on."""
    ticks = make_ticks(10)
    async with running(settings):
        await bus.publish(ticks[:5])
        await wait_until(drained(bus, repo, 5))
        assert await redis.client_kill_filter(_type="normal", skipme=True) >= 1
        await bus.publish(ticks[5:])
        await wait_until(drained(bus, repo, 10))


async def test_history_older_than_the_retention_is_pruned_at_start(
    settings_for: Callable[..., Settings], repo: RateRepository
) -> None:
    """Rows older than RETENTION_DAYS go (the newest per pair stays); recent rows stay."""
    day_ms = 86_400_000
    old = make_ticks(6, start_ms=now_ms() - 3 * day_ms)
    recent = make_ticks(4)
    await repo.save_batch([(f"{i}-0", tick) for i, tick in enumerate(old + recent)])
    pruned_before = metric(PRUNED)

    async def pruned() -> bool:
        """the 6 old rows removed"""
        return await repo.count_ticks() == 4

    async with running(settings_for(retention_days=1.5, retention_batch_rows=4)):
        await wait_until(pruned)

    assert metric(PRUNED) - pruned_before == 6
    assert [t.value for t in await repo.latest_ticks()] == [recent[-1].value]


async def consumers(redis: aioredis.Redis) -> dict[str, int]:
    """Consumer name -> entries pending for it, in the persister group."""
    return {c["name"]: c["pending"] for c in await redis.xinfo_consumers(STREAM, GROUP)}


async def test_idle_consumers_with_nothing_pending_are_dropped_and_the_others_kept(
    bus: RateBus, redis: aioredis.Redis
) -> None:
    """Every process uses a new consumer name; the group must not grow forever."""
    await bus.publish(make_ticks(3))
    assert len(await bus.read_batch("gone-with-pending", count=3, block_ms=10)) == 3
    await redis.xgroup_createconsumer(STREAM, GROUP, "gone-empty")
    await redis.xgroup_createconsumer(STREAM, GROUP, "me")
    await asyncio.sleep(1.2)
    await redis.xgroup_createconsumer(STREAM, GROUP, "just-started")

    dropped = await bus.drop_idle_consumers(keep="me", min_idle_ms=1_000)

    assert dropped == ["gone-empty"]
    assert await consumers(redis) == {"gone-with-pending": 3, "me": 0, "just-started": 0}


@pytest.mark.usefixtures("bus")  # the group exists, as a past run left it
async def test_the_persister_drops_gone_consumers_at_start(
    settings: Settings, redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Housekeeping at start (then every RETENTION_INTERVAL_S) removes consumers gone for good."""
    monkeypatch.setattr("ratesvc.workers.persister.CONSUMER_IDLE_DROP_MS", 100)
    await redis.xgroup_createconsumer(STREAM, GROUP, "host-1234")
    await asyncio.sleep(0.2)

    async def replaced() -> bool:
        """the earlier process's consumer deleted, the running one kept"""
        return set(await consumers(redis)) == {"persister-b"}

    async with running(settings, consumer="persister-b"):
        await wait_until(replaced)


async def test_a_batch_that_keeps_hitting_a_bug_ends_in_the_dead_letter(
    settings: Settings,
    bus: RateBus,
    repo: RateRepository,
    redis: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An unexpected error: the batch is re-read (delivery count +1) until max_deliveries."""
    cursed = make_ticks(1, start_ms=now_ms() - 1_000)[0]
    save_batch = RateRepository.save_batch

    async def buggy_save_batch(self: RateRepository, items: list[tuple[str, RateTick]]) -> int:
        if any(tick == cursed for _id, tick in items):
            raise RuntimeError("a bug in the batch path")
        return await save_batch(self, items)

    monkeypatch.setattr(RateRepository, "save_batch", buggy_save_batch)
    [cursed_id] = await bus.publish([cursed])

    async def parked() -> bool:
        """the cursed entry in the dead letter"""
        return await redis.xlen(DEAD_LETTER) == 1

    async with running(settings):
        await wait_until(parked)
        await bus.publish(make_ticks(3))
        await wait_until(drained(bus, repo, 3))

    [(_id, fields)] = await redis.xrange(DEAD_LETTER)
    assert fields["_origin_id"] == cursed_id and fields["_reason"].startswith("delivered 4 times")


async def test_a_postgres_restart_under_the_pool_is_survived(
    settings_for: Callable[..., Settings],
    migrated_url: str,
    bus: RateBus,
    db: BaseDBAsyncClient,
    repo: RateRepository,
) -> None:
    """The server drops the persister's pooled connections: retry on a fresh connection."""
    settings = settings_for(database_url=f"{migrated_url}?application_name=persister_restart")
    ticks = make_ticks(10)
    async with running(settings):
        await bus.publish(ticks[:5])
        await wait_until(drained(bus, repo, 5))
        terminated = await db.execute_query_dict(
            "SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity"
            " WHERE application_name = 'persister_restart'"
        )
        assert terminated and all(row["ok"] for row in terminated)
        await bus.publish(ticks[5:])
        await wait_until(drained(bus, repo, 10))
