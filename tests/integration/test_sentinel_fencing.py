"""The collector lease across a failover that loses the old primary's last writes.

Real servers on loopback (sentinel_nodes.py). The replica and the sentinels reach the primary
through a RedisProxy that can hold the replication stream alone (a replica that stopped keeping
up while clients are still served). Collector alpha (a `ratesvc collector` process) takes the
lease on the primary while its replica gets nothing; alpha is paused (SIGSTOP), the primary is
SIGKILLed and the replica promoted without alpha's write; collector bravo takes the lease there;
alpha resumes. Replication lost alpha's term, so the promoted replica hands term 1 out again: the
lease must have kept alpha from publishing under a term its replica never had, and whatever alpha
sends afterwards is refused. A reader following the stream through the failover (as every API
worker does) checks that no term was published by two collectors and that alpha never published
after bravo.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import pytest
import redis.asyncio as aioredis

from ratesvc.bus import LEASE, STREAM, TERM_FIELD, LeaseToken, RateBus
from ratesvc.connections import REDIS_ERRORS, redis_client
from ratesvc.embedded import free_port
from ratesvc.settings import Settings
from ratesvc.sim import SimHandle, running_sim
from ratesvc.sim.testing import SimControl, eventually
from ratesvc.sources.binance import BinanceOptions, BinanceSource
from ratesvc.workers.collector import run_collector
from tests.integration.redis_proxy import RedisProxy
from tests.integration.sentinel_nodes import SENTINEL_PASSWORD, SentinelSet
from tests.procs import Daemon

pytestmark = pytest.mark.integration

WAIT_S = 30.0  # bound of every poll: only a hang reaches it
ALPHA_PRICE, BRAVO_PRICE = Decimal(70_000), Decimal(80_000)  # each collector's own market
# Long enough that alpha still trusts its lease when it resumes after the failover (~3 s): a
# paused leader that believes it leads is the case fencing exists for.
ALPHA_LEASE_MS = 10_000


@pytest.fixture(name="cluster")
async def cluster_fixture(tmp_path) -> AsyncIterator[tuple[SentinelSet, RedisProxy]]:
    """The nodes, and the proxy through which the replica and the sentinels reach the primary."""
    nodes = SentinelSet(tmp_path / "redis")
    gate = await RedisProxy(nodes.data_url(nodes.primary_port)).open()
    nodes.front_port = gate.port
    try:
        yield await nodes.start(), gate
    finally:
        nodes.stop()
        gate.heal()
        with contextlib.suppress(AssertionError):  # cut already
            await gate.cut()


@pytest.fixture(name="sims")
async def sims_fixture() -> AsyncIterator[tuple[SimHandle, SimHandle]]:
    async with running_sim() as alpha, running_sim() as bravo:
        for sim, price in ((alpha, ALPHA_PRICE), (bravo, BRAVO_PRICE)):
            async with SimControl(sim.control_url) as ctl:
                await ctl.set_prices(binance={"BTCUSDT": str(price)})
        yield alpha, bravo


class Reader:
    """Follows the stream through the failover, as an API worker does; keeps (term, value)."""

    def __init__(self, url: str) -> None:
        self.redis = redis_client(url, sentinel_password=SENTINEL_PASSWORD)
        self.seen: list[tuple[int, Decimal]] = []
        self.task = asyncio.create_task(self._follow())

    async def _follow(self) -> None:
        after = "0-0"
        while True:
            try:
                reply = await self.redis.xread({STREAM: after}, count=1_000, block=200)
            except REDIS_ERRORS:
                await asyncio.sleep(0.05)  # failover under way: ask the sentinels again
                continue
            for _stream, entries in reply or []:
                for entry_id, fields in entries:
                    after = entry_id
                    if fields.get("direction") == "BTC-USD":
                        self.seen.append((int(fields[TERM_FIELD]), Decimal(fields["value"])))

    def saw(self, collector: str) -> bool:
        return any(who(value) == collector for _term, value in self.seen)

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.redis.aclose()


def who(value: Decimal) -> str:
    """Which collector published a BTC-USD value (each one's market has its own price)."""
    return "alpha" if value < BRAVO_PRICE else "bravo"


class Alpha:
    """Collector alpha: a `ratesvc collector` process we can pause, and its /metrics."""

    def __init__(self, nodes: SentinelSet, sim: SimHandle, workdir) -> None:
        self.port = free_port()
        fields = {name.upper() for name in Settings.model_fields.keys()}
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in fields and not k.startswith(("BINANCE_", "COINGECKO_"))
        }
        env.update(
            REDIS_URL=nodes.url,
            REDIS_SENTINEL_PASSWORD=SENTINEL_PASSWORD,
            SOURCES="binance",
            BINANCE_WS_URL=sim.binance_ws_url,
            BINANCE_REST_URL=sim.binance_rest_url,
            COLLECTOR_ID="alpha",
            COLLECTOR_LEASE_MS=str(ALPHA_LEASE_MS),
            COLLECTOR_METRICS_PORT=str(self.port),
            PUBLISH_MIN_INTERVAL_MS="0",
            LOG_LEVEL="INFO",
            PYTHONUNBUFFERED="1",
        )
        self.sim = sim
        self.daemon = Daemon.ratesvc("alpha", ["collector"], env=env, workdir=workdir)

    async def metric(self, name: str) -> float:
        """One sample of its /metrics (-1 while it does not answer)."""
        try:
            async with httpx.AsyncClient(timeout=2) as client:
                text = (await client.get(f"http://127.0.0.1:{self.port}/metrics")).text
        except httpx.HTTPError:
            return -1.0
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return 0.0

    async def leads(self) -> bool:
        return await self.metric("ratesvc_collector_leader") == 1

    async def tried(self) -> bool:
        """It took the lease: leading, or holding it unacknowledged by the replica."""
        unconfirmed = await self.metric("ratesvc_collector_lease_unconfirmed_total")
        return await self.leads() or unconfirmed >= 1

    def pause(self, paused: bool) -> None:
        os.kill(self.daemon.pid, signal.SIGSTOP if paused else signal.SIGCONT)

    async def move_price(self) -> None:
        async with SimControl(self.sim.control_url) as ctl:
            await ctl.set_prices(binance={"BTCUSDT": str(ALPHA_PRICE + 100)})

    async def stop(self) -> None:
        if self.daemon.alive:
            self.pause(False)
        await asyncio.to_thread(self.daemon.stop, timeout_s=15.0)


def bravo_collector(make_settings, nodes: SentinelSet, sim: SimHandle, stop: asyncio.Event):
    """Collector bravo, in this process, on its own market."""
    settings = make_settings(
        redis_url=nodes.url,
        redis_sentinel_password=SENTINEL_PASSWORD,
        collector_id="bravo",
        sources=["binance"],
        publish_min_interval_ms=0,
    )
    options = BinanceOptions(
        _env_file=None, ws_url=sim.binance_ws_url, rest_url=sim.binance_rest_url
    )
    return asyncio.create_task(run_collector(settings, stop=stop, sources=[BinanceSource(options)]))


async def lease_on(url: str) -> str | None:
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        return await client.get(LEASE)
    finally:
        await client.aclose()


async def promoted_state(nodes: SentinelSet) -> tuple[LeaseToken | None, set[str]]:
    """The promoted replica's lease, and whose BTC-USD values its stream holds."""
    promoted = aioredis.Redis.from_url(nodes.data_url(nodes.replica_port), decode_responses=True)
    try:
        entries = await promoted.xrange(STREAM)
        return await RateBus(promoted).lease_holder(), {
            who(Decimal(f["value"])) for _i, f in entries if f.get("direction") == "BTC-USD"
        }
    finally:
        await promoted.aclose()


async def fail_over(nodes: SentinelSet, gate: RedisProxy) -> None:
    """The primary dies with what it had not sent its replica; the sentinels promote it."""
    await gate.cut()  # what the primary had not sent its replica is gone...
    nodes.kill_primary()  # ...with the primary
    await nodes.wait_promoted()


async def test_an_acquisition_counts_once_the_replica_has_it(cluster):
    nodes, gate = cluster
    client = redis_client(nodes.url, sentinel_password=SENTINEL_PASSWORD)
    bus = RateBus(client)
    try:
        claim = await bus.acquire_lease("alpha", lease_ms=2_000)
        assert claim.token == LeaseToken("alpha", 1)
        assert (claim.confirmed, claim.replicas, claim.acked) == (True, 1, 1)
        await bus.release_lease(claim.token)

        gate.hold_replication()  # the replica stops keeping up
        claim = await bus.acquire_lease("bravo", lease_ms=2_000)
        assert claim.token == LeaseToken("bravo", 2)
        assert (claim.confirmed, claim.replicas, claim.acked) == (False, 1, 0)

        gate.heal()  # it catches up: the same term, re-taken, now counts
        again = await bus.acquire_lease("bravo", lease_ms=2_000, previous=claim.token)
        assert again.token == claim.token and again.confirmed
    finally:
        await client.aclose()


async def test_a_term_lost_in_a_failover_is_never_published_by_two_collectors(
    cluster, sims, make_settings, tmp_path
):
    nodes, gate = cluster
    sim_alpha, sim_bravo = sims
    reader = Reader(nodes.url)
    alpha = Alpha(nodes, sim_alpha, tmp_path)
    bravo_stop = asyncio.Event()
    bravo: asyncio.Task | None = None
    try:
        gate.hold_replication()  # from now on the replica receives nothing
        alpha.daemon.start()
        await eventually(alpha.tried, WAIT_S)
        # the premise: alpha's term is on the primary only
        assert await lease_on(nodes.data_url(nodes.primary_port)) == "alpha:1"
        assert await lease_on(nodes.data_url(nodes.replica_port)) is None
        if await alpha.leads():
            # alpha leads (without the replica's acknowledgement): its values reach readers
            await eventually(lambda: reader.saw("alpha"), WAIT_S)

        alpha.pause(True)  # mid-term, as in a GC pause or a frozen VM
        await fail_over(nodes, gate)
        assert await lease_on(nodes.data_url(nodes.replica_port)) is None  # alpha's term is lost
        bravo = bravo_collector(make_settings, nodes, sim_bravo, bravo_stop)
        await eventually(lambda: reader.saw("bravo"), WAIT_S)

        alpha.pause(False)
        await alpha.move_price()  # something to send, if it believed it still leads
        await eventually(lambda: "standing by: bravo:" in alpha.daemon.output(), WAIT_S)

        # bravo's term holds on the promoted replica, and only bravo's values are there
        assert await promoted_state(nodes) == (LeaseToken("bravo", 1), {"bravo"})
        # what readers saw through the failover: one collector per term, alpha never after bravo
        publishers: dict[int, set[str]] = {}
        for term, value in reader.seen:
            publishers.setdefault(term, set()).add(who(value))
        assert all(len(names) == 1 for names in publishers.values()), publishers
        order = [who(value) for _term, value in reader.seen]
        assert "alpha" not in order[order.index("bravo") :], order
        assert not await alpha.leads()
        print(
            "\nLOST-WRITE FAILOVER: alpha's unacknowledged acquisitions "
            f"{await alpha.metric('ratesvc_collector_lease_unconfirmed_total'):.0f}, its "
            "publishes refused by the fence "
            f"{await alpha.metric('ratesvc_collector_fenced_publishes_total'):.0f}; "
            f"readers saw terms {publishers}"
        )
    finally:
        bravo_stop.set()
        if bravo is not None:
            await asyncio.wait_for(asyncio.gather(bravo, return_exceptions=True), 30)
        await alpha.stop()
        await reader.close()
