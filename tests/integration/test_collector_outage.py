"""Redis outage under a lone collector: it buffers boundedly, flushes in order when Redis returns.

The collector (`run_collector`, in-process simulator) publishes to a private EmbeddedRedis that the
test stops and starts again on the same port and data directory (AOF keeps the term counter). The
outage outlasts the lease, so the collector loses it, keeps buffering, re-acquires the next term on
return (nobody else held it: the buffer continues its history) and flushes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY
from redis.exceptions import RedisError

from ratesvc.bus import LATEST, STREAM, TERM_FIELD, LeaseToken, RateBus
from ratesvc.domain import Quote
from ratesvc.embedded import EmbeddedRedis, free_port
from ratesvc.sim import SimHandle, running_sim
from ratesvc.sim.testing import SimControl, eventually
from ratesvc.sources.binance import BinanceOptions, BinanceSource
from ratesvc.workers.collector import run_collector

pytestmark = pytest.mark.integration

LEASE_MS = 500
WAIT_S = 15.0  # bound for every poll: only a hang reaches it
OUTAGE_PRICES = ("71000", "72000", "73000")


@pytest.fixture(name="server")
def server_fixture(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A private Redis on a fixed port, so it comes back where the collector looks for it."""
    server = EmbeddedRedis(tmp_path / "outage", port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(name="client")
async def client_fixture(server: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(server.url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(name="sim")
async def sim_fixture() -> AsyncIterator[SimHandle]:
    async with running_sim() as handle:
        yield handle


@pytest.fixture(name="ctl")
async def ctl_fixture(sim: SimHandle) -> AsyncIterator[SimControl]:
    async with SimControl(sim.control_url) as ctl:
        yield ctl


def gauge(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


async def btc_usd_values(client: aioredis.Redis) -> list[tuple[Decimal, int]]:
    """(value, term) of every binance BTC-USD entry, in stream order."""
    return [
        (Decimal(f["value"]), int(f[TERM_FIELD]))
        for _id, f in await client.xrange(STREAM)
        if f.get("direction") == "BTC-USD" and f.get("exchanger") == "binance"
    ]


async def latest_btc_usd(client: aioredis.Redis) -> Decimal | None:
    raw = await client.hget(LATEST, "binance:BTC-USD")
    return Decimal(orjson.loads(raw)["value"]) if raw else None


def changes(values: list[Decimal]) -> list[Decimal]:
    """The sequence without consecutive repeats (periodic refreshes re-publish a value)."""
    return [v for i, v in enumerate(values) if i == 0 or values[i - 1] != v]


class WatchedBinance(BinanceSource):
    """The Binance adapter, keeping the last BTCUSDT price it parsed for the collector."""

    btc_usdt: Decimal | None = None

    def parse(self, raw: str | bytes, *, received_ms: int) -> list[Quote]:
        quotes = super().parse(raw, received_ms=received_ms)
        for quote in quotes:
            if quote.symbol == "BTC/USDT":
                self.btc_usdt = quote.price
        return quotes


async def test_a_lone_collector_buffers_through_an_outage_and_flushes_in_order(
    server, client, make_settings, sim, ctl
):
    await ctl.set_prices(binance={"BTCUSDT": "70000"})
    settings = make_settings(
        redis_url=server.url,
        collector_id="solo",
        collector_lease_ms=LEASE_MS,
        sources=["binance"],
        publish_min_interval_ms=0,
    )
    options = BinanceOptions(
        _env_file=None, ws_url=sim.binance_ws_url, rest_url=sim.binance_rest_url
    )
    stop = asyncio.Event()
    source = WatchedBinance(options)
    task = asyncio.create_task(run_collector(settings, stop=stop, sources=[source]))
    try:
        await eventually(lambda: _latest_is(client, "70000"), WAIT_S)
        assert await RateBus(client).lease_holder() == LeaseToken("solo", 1)

        await asyncio.to_thread(server.stop)
        for price in OUTAGE_PRICES:
            buffered = gauge("ratesvc_collector_buffer_events")
            await ctl.set_prices(binance={"BTCUSDT": price})
            # the collector has taken this price (it derives and buffers in the same step as
            # the parse) before the next one is set: every price is in the buffer, in order
            await eventually(lambda p=Decimal(price): source.btc_usdt == p, WAIT_S)
            assert gauge("ratesvc_collector_buffer_events") > buffered
        # the outage outlasts the lease: the collector no longer counts itself the publisher
        await eventually(lambda: gauge("ratesvc_collector_leader") == 0, WAIT_S)
        # it gives up locally a little before Redis would expire the key: outlast that too, so
        # the lease is really gone (a shorter outage resumes the same term, also continuous)
        await asyncio.sleep(LEASE_MS / 1000)
        await asyncio.to_thread(server.start)

        await eventually(lambda: _latest_is(client, OUTAGE_PRICES[-1]), WAIT_S)
        await eventually(lambda: gauge("ratesvc_collector_buffer_events") == 0, WAIT_S)
        published = await btc_usd_values(client)
        assert changes([v for v, _ in published]) == [Decimal(p) for p in ("70000", *OUTAGE_PRICES)]
        # the buffered events went out under the next term, after everything of the first one
        assert {t for v, t in published if v != Decimal("70000")} == {2}
        assert await RateBus(client).lease_holder() == LeaseToken("solo", 2)
        assert gauge("ratesvc_collector_leader") == 1
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def _latest_is(client: aioredis.Redis, price: str) -> bool:
    try:
        return await latest_btc_usd(client) == Decimal(price)
    except (OSError, RedisError):
        return False
