"""Metered calls are spent once per deployment: a hot standby adds no CoinGecko call (issue 11).

Two `run_collector`s on one Redis poll the in-process simulator's CoinGecko; each sends its own
API key, so the simulator's call log says which collector made every call. Waits are bounded
polls; the assertions are about who called and how the calls are spaced by the simulator's own
timestamps, never about how long something took.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from redis.asyncio import Redis

from ratesvc.bus import METERED, RateBus
from ratesvc.sim import SimHandle, running_sim
from ratesvc.sim.testing import eventually
from ratesvc.sources.coingecko import CoinGeckoOptions, CoinGeckoSource
from ratesvc.workers.collector import run_collector
from tests.integration.redis_proxy import RedisProxy

pytestmark = pytest.mark.integration

CADENCE_S = 2.0  # longer than the lease, so a takeover that called at once would show
LEASE_MS = 1_000
WAIT_S = 20.0  # bound for every poll: only a hang reaches it


class Collector:
    """One `run_collector` task with a CoinGecko source sending `key`."""

    def __init__(self, make_settings, redis_url: str, sim: SimHandle, key: str) -> None:
        self.key = key
        self.source = CoinGeckoSource(
            CoinGeckoOptions(
                _env_file=None,
                api_url=sim.coingecko_url,
                api_key=key,
                poll_interval_s=CADENCE_S,
                active_poll_interval_s=CADENCE_S,
                calls_per_minute=600,
                calls_per_month=100_000_000,
                stale_after_s=60,
            )
        )
        settings = make_settings(
            redis_url=redis_url,
            collector_id=key,
            collector_lease_ms=LEASE_MS,
            sources=["coingecko"],
            backoff_initial_s=0.1,
            backoff_max_s=0.5,
        )
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(
            run_collector(settings, stop=self.stop, sources=[self.source])
        )

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(asyncio.gather(self.task, return_exceptions=True), 30)

    async def kill(self) -> None:
        self.task.cancel()
        await asyncio.wait_for(asyncio.gather(self.task, return_exceptions=True), 30)


def calls(sim: SimHandle) -> list[tuple[str, int]]:
    """(API key, simulator ms) of every simple/price call, in order."""
    return [
        (c.headers.get("x-cg-demo-api-key", ""), c.ts_ms)
        for c in sim.state.call_log("coingecko")
        if c.path.endswith("/simple/price")
    ]


def callers(sim: SimHandle) -> list[str]:
    return [key for key, _ in calls(sim)]


@pytest.fixture(name="sim")
async def sim_fixture() -> AsyncIterator[SimHandle]:
    async with running_sim() as handle:
        yield handle


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


async def test_a_standby_spends_no_call_and_a_takeover_keeps_the_deployments_schedule(
    redis: Redis, redis_url: str, make_settings, sim: SimHandle, proxy: RedisProxy
) -> None:
    await redis.delete(METERED + "coingecko")
    alpha = Collector(make_settings, proxy.url, sim, "alpha")
    bravo: Collector | None = None
    try:
        await eventually(lambda: callers(sim).count("alpha") >= 1, WAIT_S)
        bravo = Collector(make_settings, redis_url, sim, "bravo")
        # the standby reads the leader's answer (its FX leg is warm) without calling
        await eventually(lambda: bravo.source._seen_ms is not None, WAIT_S)
        seen = callers(sim).count("alpha")
        await eventually(lambda: callers(sim).count("alpha") >= seen + 3, WAIT_S)
        assert "bravo" not in callers(sim)
        assert not bravo.source.metered and alpha.source.metered

        # kill the leader right after one of its calls
        before = len(calls(sim))
        await eventually(lambda: len(calls(sim)) > before, WAIT_S)
        await proxy.cut()
        await alpha.kill()
        last_alpha_ms = calls(sim)[-1][1]
        await eventually(lambda: "bravo" in callers(sim), WAIT_S)
        assert (await RateBus(redis).lease_holder()).holder == "bravo"
        first_bravo_ms = next(ms for key, ms in calls(sim) if key == "bravo")
        # the new leader waited for the deployment's next call instead of calling at once
        assert first_bravo_ms - last_alpha_ms >= CADENCE_S * 1000 * 0.95
    finally:
        await alpha.close()
        if bravo is not None:
            await bravo.close()
