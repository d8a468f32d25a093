"""Hot-standby collectors on one Redis: the lease, its fencing, takeover on death and partition.

Collectors run in-process (`run_collector`) against an in-process simulator; the leader reaches
Redis through a TCP proxy the test can cut (death: connections refused) or black-hole (partition:
bytes held and delivered late, when it heals, as a paused network would). Waits are bounded polls;
assertions are about what the stream and the lease hold, never about how long something took.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal
from urllib.parse import urlsplit

import orjson
import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from ratesvc.bus import LATEST, LEASE, STREAM, TERM_FIELD, FencedOut, LeaseToken, RateBus
from ratesvc.domain import Quote, RateTick, SourceState, SourceStatus, now_ms
from ratesvc.settings import Settings
from ratesvc.sim import SimHandle, running_sim
from ratesvc.sim.testing import SimControl, eventually
from ratesvc.sources.binance import BinanceOptions, BinanceSource
from ratesvc.workers.collector import assemble, run_collector
from ratesvc.workers.outbox import Mode
from tests.integration.redis_proxy import RedisProxy

pytestmark = pytest.mark.integration

LEASE_MS = 1_000
WAIT_S = 10.0  # bound for every poll: only a hang reaches it


# ---------------------------------------------------------------- helpers
class Running:
    """One `run_collector` task."""

    def __init__(self, settings: Settings, sim: SimHandle) -> None:
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(
            run_collector(settings, stop=self.stop, sources=[binance(sim)])
        )

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(asyncio.gather(self.task, return_exceptions=True), 30)

    async def kill(self) -> None:
        """Cancel the task (its Redis is cut first, so nothing is flushed or released)."""
        self.task.cancel()
        await asyncio.wait_for(asyncio.gather(self.task, return_exceptions=True), 30)


def binance(sim: SimHandle) -> BinanceSource:
    return BinanceSource(
        BinanceOptions(
            _env_file=None,
            ws_url=sim.binance_ws_url,
            rest_url=sim.binance_rest_url,
            stale_after_s=5.0,
        )
    )


def settings_for(make_settings, url: str, holder: str, **overrides: object) -> Settings:
    """Every change published at once and no periodic refreshes: a collector's outbox is idle
    until a price moves, and a value under a new term can only come from the takeover itself."""
    return make_settings(
        redis_url=url,
        collector_id=holder,
        collector_lease_ms=LEASE_MS,
        sources=["binance"],
        publish_min_interval_ms=0,
        refresh_interval_s=60.0,
        backoff_initial_s=0.1,
        backoff_max_s=0.5,
        **overrides,
    )


async def entries(redis: aioredis.Redis) -> list[dict[str, str]]:
    return [fields for _id, fields in await redis.xrange(STREAM)]


def btc_usd(fields: dict[str, str]) -> bool:
    return fields.get("direction") == "BTC-USD" and fields.get("exchanger") == "binance"


async def holder(redis: aioredis.Redis) -> LeaseToken | None:
    return await RateBus(redis).lease_holder()


async def has_btc_value(redis: aioredis.Redis, value: str, term: int) -> bool:
    return any(
        btc_usd(f) and Decimal(f["value"]) == Decimal(value) and f[TERM_FIELD] == str(term)
        for f in await entries(redis)
    )


def make_tick(value: str) -> RateTick:
    """A leg-less BTC-USD tick: the bus does not look at legs."""
    return RateTick("binance", "BTC-USD", Decimal(value), now_ms(), ())


def btc(price: str) -> Quote:
    return Quote("binance", "BTC/USDT", Decimal(price), now_ms())


def fenced_total() -> float:
    return REGISTRY.get_sample_value("ratesvc_collector_fenced_publishes_total") or 0.0


def assert_terms_never_interleave(stream: list[dict[str, str]], old: int, new: int) -> None:
    terms = [int(f[TERM_FIELD]) for f in stream]
    first_new = terms.index(new)
    assert old not in terms[first_new:], terms
    assert set(terms[first_new:]) == {new}


@pytest.fixture(name="sim")
async def sim_fixture() -> AsyncIterator[SimHandle]:
    async with running_sim() as handle:
        yield handle


@pytest.fixture(name="ctl")
async def ctl_fixture(sim: SimHandle) -> AsyncIterator[SimControl]:
    async with SimControl(sim.control_url) as ctl:
        yield ctl


@pytest.fixture(name="proxy")
async def proxy_fixture(redis_url: str) -> AsyncIterator[RedisProxy]:
    if urlsplit(redis_url).scheme == "unix":
        pytest.skip("the proxy speaks TCP only")
    proxy = await RedisProxy(redis_url).open()
    try:
        yield proxy
    finally:
        proxy.heal()
        with contextlib.suppress(AssertionError):
            await proxy.cut()


# ---------------------------------------------------------------- the lease primitives
async def test_the_lease_is_exclusive_renewable_by_its_holder_only_and_terms_grow(redis):
    bus = RateBus(redis)
    first = await bus.acquire_lease("alpha", lease_ms=60_000)
    assert first.token == LeaseToken("alpha", 1)
    other = await bus.acquire_lease("bravo", lease_ms=60_000)
    assert other.token is None and other.holder == "alpha:1" and 0 < other.ttl_ms <= 60_000
    assert not await bus.renew_lease(LeaseToken("bravo", 1), lease_ms=60_000)
    assert await bus.renew_lease(first.token, lease_ms=60_000)
    again = await bus.acquire_lease("alpha", lease_ms=60_000, previous=first.token)
    assert again.token == first.token  # still ours: same term, extended
    assert not await bus.release_lease(LeaseToken("bravo", 1))
    assert await bus.release_lease(first.token)
    second = await bus.acquire_lease("bravo", lease_ms=60_000)
    assert second.token == LeaseToken("bravo", 2)


async def test_a_redis_without_replicas_confirms_an_acquisition_at_once(redis):
    claim = await RateBus(redis).acquire_lease("alpha", lease_ms=60_000)
    assert claim.token == LeaseToken("alpha", 1)
    assert claim.confirmed and claim.replicas == 0  # nothing to WAIT for: a lone node never waits


async def test_a_fenced_publish_writes_with_its_term_and_is_refused_once_the_lease_moved(redis):
    bus = RateBus(redis)
    token = (await bus.acquire_lease("alpha", lease_ms=60_000)).token
    assert token is not None
    tick = make_tick("70000")
    status = SourceStatus("binance", SourceState.UP, now_ms())
    ids = await bus.publish([tick, status], fence=token)
    assert len(ids) == 2
    assert [f[TERM_FIELD] for f in await entries(redis)] == ["1", "1"]
    assert (await bus.read_latest()) == ([tick], [status])

    await redis.set(LEASE, "bravo:2", px=60_000)  # stolen (or expired and re-acquired)
    with pytest.raises(FencedOut) as refused:
        await bus.publish([make_tick("1")], fence=token)
    assert refused.value.holder == "bravo:2"
    assert len(await entries(redis)) == 2
    assert (await bus.read_latest())[0] == [tick]


# ---------------------------------------------------------------- a collector fenced off
async def test_a_leader_whose_lease_was_stolen_is_refused_counted_and_stands_by(
    redis, redis_url, make_settings, sim
):
    settings = settings_for(make_settings, redis_url, "alpha")
    parts = assemble(settings, RateBus(redis), [binance(sim)])
    collector, outbox, leadership = parts.collector, parts.outbox, parts.leadership
    stop = asyncio.Event()
    runner = asyncio.create_task(outbox.run(stop))
    try:
        await leadership.step()  # no background renewals: the test decides what happens when
        assert leadership.is_leader()
        await collector.on_quotes([btc("70000")])
        await eventually(lambda: has_btc_value(redis, "70000", 1), WAIT_S)
        written = len(await entries(redis))
        before = fenced_total()

        await redis.set(LEASE, "intruder:99", px=60_000)
        await collector.on_quotes([btc("70001")])
        await eventually(lambda: fenced_total() > before, WAIT_S)

        assert not leadership.is_leader() and outbox.mode is Mode.HOLDING
        assert len(await entries(redis)) == written
        latest = RateTick.from_fields(orjson.loads(await redis.hget(LATEST, "binance:BTC-USD")))
        assert latest.value == Decimal("70000")
        await leadership.step()  # sees the intruder: stands by, drops what it held
        assert outbox.mode is Mode.DISCARDING and len(outbox) == 0
    finally:
        stop.set()
        await runner


# ---------------------------------------------------------------- two collectors
async def test_the_warm_standby_takes_over_when_the_leader_dies(
    redis, redis_url, make_settings, sim, ctl, proxy
):
    await ctl.set_prices(binance={"BTCUSDT": "70000"})
    alpha = Running(settings_for(make_settings, proxy.url, "alpha"), sim)
    bravo: Running | None = None
    try:
        await eventually(lambda: has_btc_value(redis, "70000", 1), WAIT_S)
        bravo = Running(settings_for(make_settings, redis_url, "bravo"), sim)
        # the standby's websocket is open too, yet only alpha's term reaches the stream
        await eventually(lambda: _ws_open(ctl, 2), WAIT_S)
        await ctl.set_prices(binance={"BTCUSDT": "70100"})
        await eventually(lambda: has_btc_value(redis, "70100", 1), WAIT_S)
        assert {f[TERM_FIELD] for f in await entries(redis)} == {"1"}
        assert await holder(redis) == LeaseToken("alpha", 1)

        await proxy.cut()
        await alpha.kill()  # no renewal, no release: the lease must expire by itself
        await eventually(lambda: _held_by(redis, "bravo"), WAIT_S)
        assert (await holder(redis)) == LeaseToken("bravo", 2)
        # takeover publishes the current state at once, then live changes follow
        await eventually(lambda: has_btc_value(redis, "70100", 2), WAIT_S)
        await ctl.set_prices(binance={"BTCUSDT": "70200"})
        await eventually(lambda: has_btc_value(redis, "70200", 2), WAIT_S)
        assert_terms_never_interleave(await entries(redis), 1, 2)
    finally:
        await alpha.close()
        if bravo is not None:
            await bravo.close()


async def test_a_partitioned_leader_is_replaced_and_its_late_writes_are_refused(
    redis, redis_url, make_settings, sim, ctl, proxy
):
    await ctl.set_prices(binance={"BTCUSDT": "70000"})
    alpha = Running(settings_for(make_settings, proxy.url, "alpha"), sim)
    bravo: Running | None = None
    try:
        await eventually(lambda: has_btc_value(redis, "70000", 1), WAIT_S)
        bravo = Running(settings_for(make_settings, redis_url, "bravo"), sim)
        await eventually(lambda: _ws_open(ctl, 2), WAIT_S)
        await asyncio.sleep(0.2)  # alpha's first quotes (ETH trails BTC) are out: it is idle now
        before = fenced_total()

        proxy.blackhole()
        # alpha still believes it leads: this publish leaves it and waits in the partition
        await ctl.set_prices(binance={"BTCUSDT": "71000"})
        await eventually(lambda: _held_by(redis, "bravo"), WAIT_S)
        await eventually(lambda: has_btc_value(redis, "71000", 2), WAIT_S)

        proxy.heal()  # alpha's held commands arrive now, after bravo's term began
        await eventually(lambda: fenced_total() > before, WAIT_S)
        await ctl.set_prices(binance={"BTCUSDT": "71100"})
        await eventually(lambda: has_btc_value(redis, "71100", 2), WAIT_S)
        assert (await holder(redis)) == LeaseToken("bravo", 2)
        assert_terms_never_interleave(await entries(redis), 1, 2)
    finally:
        proxy.heal()
        if bravo is not None:
            await bravo.close()
        await alpha.close()


async def _ws_open(ctl: SimControl, n: int) -> bool:
    return (await ctl.state())["counters"].get("binance_ws_open") == n


async def _held_by(redis: aioredis.Redis, name: str) -> bool:
    token = await holder(redis)
    return token is not None and token.holder == name
