"""The shared CoinGecko call ledger: one monthly count for every collector, never lost."""

import pytest
from redis.asyncio import Redis

from ratesvc.bus import CALLS, CallLedger

pytestmark = pytest.mark.integration


async def test_two_collectors_count_into_one_ledger(redis: Redis) -> None:
    first, second = CallLedger(redis), CallLedger(redis)
    assert await first.incr("coingecko:2026-11") == 1
    assert await second.incr("coingecko:2026-11") == 2
    assert await first.get("coingecko:2026-11") == 2
    assert 0 < await redis.ttl(CALLS + "coingecko:2026-11") <= 40 * 24 * 3600


async def test_calls_made_while_redis_is_down_are_counted_locally_and_folded_back() -> None:
    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    ledger = CallLedger(dead)
    assert await ledger.incr("coingecko:2026-11") == 1
    assert await ledger.incr("coingecko:2026-11") == 2
    assert await ledger.get("coingecko:2026-11") == 2
    await dead.aclose()


async def test_local_counts_reach_redis_when_it_returns(redis: Redis) -> None:
    ledger = CallLedger(redis)
    ledger._local["coingecko:2026-11"] = 3  # counted during an outage
    assert await ledger.incr("coingecko:2026-11") == 4
    assert int(await redis.get(CALLS + "coingecko:2026-11")) == 4
