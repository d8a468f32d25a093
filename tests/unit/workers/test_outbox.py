"""Outbox: ordered delivery, buffering while Redis is down, bounded with drop-oldest."""

import asyncio

from redis.exceptions import ConnectionError as RedisConnectionError

from ratesvc.domain import SourceState, SourceStatus
from ratesvc.workers.outbox import Outbox


def ev(i: int) -> SourceStatus:
    return SourceStatus("binance", SourceState.UP, i)


class FlakyBus:
    def __init__(self) -> None:
        self.down = False
        self.received: list[int] = []
        self.attempts = 0

    async def publish(self, events) -> list[str]:
        self.attempts += 1
        if self.down:
            raise RedisConnectionError("down")
        self.received.extend(e.ts_ms for e in events)
        return []


async def wait_for(predicate, timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_events_are_published_in_order():
    bus, stop = FlakyBus(), asyncio.Event()
    outbox = Outbox(bus.publish, batch=3)
    task = asyncio.create_task(outbox.run(stop))
    outbox.put([ev(i) for i in range(10)])
    await wait_for(lambda: len(bus.received) == 10)
    stop.set()
    await task
    assert bus.received == list(range(10))


async def test_events_wait_while_redis_is_down_and_flush_in_order_when_it_returns():
    bus, stop = FlakyBus(), asyncio.Event()
    bus.down = True
    outbox = Outbox(bus.publish, max_backoff_s=0.05)
    task = asyncio.create_task(outbox.run(stop))
    outbox.put([ev(1), ev(2)])
    await wait_for(lambda: bus.attempts >= 3)
    outbox.put([ev(3)])
    assert len(outbox) == 3 and not outbox.connected
    bus.down = False
    await wait_for(lambda: len(outbox) == 0)
    stop.set()
    await task
    assert bus.received == [1, 2, 3]
    assert outbox.connected


async def test_buffer_is_bounded_and_drops_the_oldest():
    bus = FlakyBus()
    outbox = Outbox(bus.publish, max_events=3)
    outbox.put([ev(i) for i in range(5)])
    assert len(outbox) == 3 and outbox.dropped == 2
    stop = asyncio.Event()
    stop_task = asyncio.create_task(outbox.run(stop))
    await wait_for(lambda: len(outbox) == 0)
    stop.set()
    await stop_task
    assert bus.received == [2, 3, 4]
