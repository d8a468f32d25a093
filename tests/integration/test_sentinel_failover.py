"""Redis primary lost under load (Sentinel): every role follows the promoted replica.

Real servers on loopback (sentinel_nodes.py: a primary, a replica, three sentinels, short sentinel
timings). A collector (`run_collector` against the in-process simulator, prices moving every
20 ms), a persister (`run_persister`) and an API mirror (`RateMirror`) all use the Sentinel
REDIS_URL. The primary is SIGKILLed; the test waits (bounded polls) until each role works against
the promoted replica and prints how long that took and how many ticks were published but never
stored (the writes asynchronous replication lost). Timings are reported, never asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from ratesvc.api.mirror import RateMirror
from ratesvc.bus import STREAM, TERM_FIELD, RateBus
from ratesvc.connections import redis_client
from ratesvc.domain import now_ms
from ratesvc.sim import SimHandle, running_sim
from ratesvc.sim.testing import SimControl, eventually
from ratesvc.sources.binance import BinanceOptions, BinanceSource
from ratesvc.workers.collector import run_collector
from ratesvc.workers.persister import run_persister
from tests.integration.sentinel_nodes import SENTINEL_PASSWORD, SentinelSet

pytestmark = pytest.mark.integration

WAIT_S = 30.0  # bound of every poll: only a hang reaches it
PACE_S = 0.02  # the load: one BTC price change every 20 ms
BTC_USD = ("binance", "BTC-USD")


@pytest.fixture(name="nodes")
async def nodes_fixture(tmp_path) -> AsyncIterator[SentinelSet]:
    nodes = SentinelSet(tmp_path / "redis")
    try:
        yield await nodes.start()
    finally:
        nodes.stop()


@pytest.fixture(name="sim")
async def sim_fixture() -> AsyncIterator[SimHandle]:
    async with running_sim() as handle:
        yield handle


@pytest.fixture(name="ctl")
async def ctl_fixture(sim: SimHandle) -> AsyncIterator[SimControl]:
    async with SimControl(sim.control_url) as ctl:
        yield ctl


class Roles:
    """The collector, persister and mirror of one test, each on the Sentinel URL."""

    def __init__(self, settings, sim: SimHandle) -> None:
        options = BinanceOptions(
            _env_file=None, ws_url=sim.binance_ws_url, rest_url=sim.binance_rest_url
        )
        self.stop = asyncio.Event()
        self.tasks = [
            asyncio.create_task(
                run_collector(settings, stop=self.stop, sources=[BinanceSource(options)])
            ),
            asyncio.create_task(run_persister(settings, stop=self.stop, consumer="p1")),
        ]
        self.mirror_redis = redis_client(
            str(settings.redis_url.get_secret_value()), sentinel_password=SENTINEL_PASSWORD
        )
        self.mirror = RateMirror(RateBus(self.mirror_redis))

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(asyncio.gather(*self.tasks, return_exceptions=True), 30)
        await self.mirror.stop()
        await self.mirror_redis.aclose()

    def mirror_value(self) -> Decimal:
        tick = self.mirror.ticks.get(BTC_USD)
        return tick.value if tick is not None else Decimal(0)


async def drive(ctl: SimControl, stop: asyncio.Event) -> None:
    """Move BTC up by 1 every PACE_S: every stream value is unique and larger than the last."""
    price = 70_000
    while not stop.is_set():
        price += 1
        await ctl.set_prices(binance={"BTCUSDT": str(price)})
        await asyncio.sleep(PACE_S)  # the load's pace


def published_total() -> float:
    labels = {"exchanger": "binance"}
    return REGISTRY.get_sample_value("ratesvc_ticks_published_total", labels) or 0.0


async def btc_entries(node: aioredis.Redis, start: str = "-") -> list[tuple[str, dict]]:
    return [
        (entry_id, fields)
        for entry_id, fields in await node.xrange(STREAM, min=start)
        if (fields.get("exchanger"), fields.get("direction")) == BTC_USD
    ]


async def stored_btc_values(db) -> set[Decimal]:
    rows = await db.execute_query_dict(
        "SELECT value FROM rate_tick WHERE exchanger = 'binance' AND direction = 'BTC-USD'"
    )
    return {Decimal(row["value"]).normalize() for row in rows}


@dataclass(frozen=True)
class Recovery:
    """Seconds from the kill until each step worked against the promoted replica."""

    promoted_s: float
    collector_s: float
    persister_s: float
    mirror_s: float


async def kill_and_measure(nodes: SentinelSet, roles: Roles, replica, db) -> Recovery:
    """SIGKILL the primary; time the promotion and each role's first work on the new master."""
    nodes.kill_primary()
    kill_ms = now_ms()  # after the reap: every entry the primary wrote is older
    await nodes.wait_promoted()
    promoted_s = (now_ms() - kill_ms) / 1000
    # collector: its first write on the promoted replica (the entry id is the write's time)
    await eventually(lambda: _has_entry_after(replica, kill_ms), WAIT_S)
    first_id, first = (await btc_entries(replica, f"{kill_ms + 1}-0"))[0]
    value = Decimal(first["value"])
    # persister: the commit time of that entry's row
    created = await _wait_row(db, value)
    # API mirror: following again, holding that value (or a newer one)
    await eventually(lambda: roles.mirror.following and roles.mirror_value() >= value, WAIT_S)
    return Recovery(
        promoted_s=promoted_s,
        collector_s=(int(first_id.split("-")[0]) - kill_ms) / 1000,
        persister_s=created.timestamp() - kill_ms / 1000,
        mirror_s=(now_ms() - kill_ms) / 1000,
    )


async def test_every_role_follows_the_promoted_replica_when_the_primary_dies_under_load(
    nodes, make_settings, migrated_url, db, sim, ctl
):
    settings = make_settings(
        redis_url=nodes.url,
        redis_sentinel_password=SENTINEL_PASSWORD,
        database_url=migrated_url,
        collector_id="solo",
        sources=["binance"],
        publish_min_interval_ms=0,
        collector_metrics_port=0,
        persister_metrics_port=0,
    )
    published_before = published_total()
    roles = Roles(settings, sim)
    load_stop = asyncio.Event()
    load = asyncio.create_task(drive(ctl, load_stop))
    replica = aioredis.Redis.from_url(nodes.data_url(nodes.replica_port), decode_responses=True)
    try:
        await roles.mirror.start()
        # the whole pipeline works before the fault
        await eventually(lambda: roles.mirror_value() > 70_050, WAIT_S)
        await eventually(lambda: _stored_above(db, Decimal(70_050)), WAIT_S)

        took = await kill_and_measure(nodes, roles, replica, db)

        load_stop.set()
        await load
        values, terms = await values_and_terms(replica)
        # nothing the promoted replica holds is lost: every value lands in Postgres, and the
        # mirror ends on the last one
        await eventually(lambda: _all_stored(db, values), WAIT_S)
        await eventually(lambda: roles.mirror_value() == max(values), WAIT_S)
        assert terms == sorted(terms), "a term older than one already published came back"
        holder = await RateBus(replica).lease_holder()
        assert holder is not None and holder.holder == "solo" and holder.term == max(terms)

        published = published_total() - published_before
        stored = int((await db.execute_query_dict("SELECT count(*) AS n FROM rate_tick"))[0]["n"])
        assert stored <= published  # no tick stored twice
        print(
            f"\nSENTINEL FAILOVER (primary SIGKILLed under {1 / PACE_S:.0f} price changes/s; "
            f"down-after-milliseconds 1000): replica promoted after {took.promoted_s:.2f} s; "
            f"working again on it: collector {took.collector_s:.2f} s, persister "
            f"{took.persister_s:.2f} s, API mirror {took.mirror_s:.2f} s; ticks published "
            f"{published:.0f}, stored {stored}, lost {published - stored:.0f}"
        )
    finally:
        load_stop.set()
        with contextlib.suppress(Exception):
            await load
        await roles.close()
        await replica.aclose()


async def values_and_terms(replica: aioredis.Redis) -> tuple[set[Decimal], list[int]]:
    """The BTC-USD values the promoted replica's stream holds, and the terms, in stream order."""
    entries = await btc_entries(replica)
    values = {Decimal(f["value"]).normalize() for _id, f in entries}
    return values, [int(f[TERM_FIELD]) for _id, f in entries]


async def _stored_above(db, value: Decimal) -> bool:
    return any(v > value for v in await stored_btc_values(db))


async def _all_stored(db, values: set[Decimal]) -> bool:
    return values <= await stored_btc_values(db)


async def _has_entry_after(replica: aioredis.Redis, kill_ms: int) -> bool:
    try:
        return bool(await btc_entries(replica, f"{kill_ms + 1}-0"))
    except OSError:
        return False


async def _wait_row(db, value: Decimal):
    async with asyncio.timeout(WAIT_S):
        while True:
            rows = await db.execute_query_dict(
                "SELECT created_at FROM rate_tick WHERE exchanger = 'binance' "
                "AND direction = 'BTC-USD' AND value = $1",
                [value],
            )
            if rows:
                return rows[0]["created_at"]
            await asyncio.sleep(0.01)
