"""The shared call ledger: one monthly count, one schedule and one answer for every collector."""

import pytest
from redis.asyncio import Redis

from ratesvc.bus import CALLS, METERED, CallLedger
from ratesvc.domain import Answer

pytestmark = pytest.mark.integration

NOV = "2026-11"


async def test_two_collectors_count_into_one_ledger(redis: Redis) -> None:
    first, second = CallLedger(redis), CallLedger(redis)
    assert await first.incr("coingecko", NOV, at_s=1_000.0) == 1
    assert await second.incr("coingecko", NOV, at_s=1_300.5) == 2
    assert await first.get("coingecko", NOV) == 2
    assert 0 < await redis.ttl(CALLS + "coingecko:2026-11") <= 40 * 24 * 3600
    # the schedule is the deployment's: the last call, whoever made it
    assert await first.last_call_s("coingecko") == 1_300.5


async def test_an_answer_shared_by_the_caller_is_read_by_the_others(redis: Redis) -> None:
    await redis.delete(METERED + "coingecko")
    caller, standby = CallLedger(redis), CallLedger(redis)
    assert await standby.shared("coingecko") is None
    await caller.share("coingecko", Answer('{"tether":{"rub":95.5}}', 1_793_491_200_000))
    assert await standby.shared("coingecko") == Answer('{"tether":{"rub":95.5}}', 1_793_491_200_000)


async def test_calls_made_while_redis_is_down_are_counted_locally_and_folded_back() -> None:
    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    ledger = CallLedger(dead)
    assert await ledger.incr("coingecko", NOV, at_s=5.0) == 1
    assert await ledger.incr("coingecko", NOV, at_s=6.0) == 2
    assert await ledger.get("coingecko", NOV) == 2
    # our own schedule and answer stand in for the shared ones
    assert await ledger.last_call_s("coingecko") == 6.0
    await ledger.share("coingecko", Answer("{}", 6_000))
    assert await ledger.shared("coingecko") == Answer("{}", 6_000)
    await dead.aclose()


async def test_local_counts_reach_redis_when_it_returns(redis: Redis) -> None:
    ledger = CallLedger(redis)
    ledger._local["coingecko:2026-11"] = 3  # counted during an outage
    assert await ledger.incr("coingecko", NOV, at_s=7.0) == 4
    assert int(await redis.get(CALLS + "coingecko:2026-11")) == 4
