"""Outbox: ordered delivery, buffering while Redis is down, bounded with drop-oldest."""

import asyncio

from prometheus_client import REGISTRY
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from ratesvc.bus import FencedOut, LeaseToken
from ratesvc.domain import SourceState, SourceStatus
from ratesvc.workers.outbox import Mode, Outbox


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


async def test_an_unexpected_error_reply_is_retried_not_fatal():
    received: list[int] = []
    failures = [ResponseError("OOM command not allowed")]

    async def publish(events) -> list[str]:
        if failures:
            raise failures.pop()
        received.extend(e.ts_ms for e in events)
        return []

    outbox, stop = Outbox(publish, max_backoff_s=0.05), asyncio.Event()
    task = asyncio.create_task(outbox.run(stop))
    outbox.put([ev(1), ev(2)])
    await wait_for(lambda: received == [1, 2])
    stop.set()
    await task


# ---------------------------------------------------------------- fenced by the collector lease
class FencedBus:
    """Publishes while the lease holds `current`; refuses other tokens like the Lua fence."""

    def __init__(self) -> None:
        self.current: LeaseToken | None = None
        self.received: list[tuple[int, int]] = []  # (term, ts_ms)
        self.gate: asyncio.Event | None = None  # when set to an unset Event, publishes wait on it

    async def publish(self, events, *, fence: LeaseToken) -> list[str]:
        if self.gate is not None:
            await self.gate.wait()
        if fence != self.current:
            raise FencedOut(fence, self.current.value if self.current else "")
        self.received.extend((fence.term, e.ts_ms) for e in events)
        return []


class Fence:
    def __init__(self) -> None:
        self.current: LeaseToken | None = None
        self.refused: list[LeaseToken] = []

    def token(self) -> LeaseToken | None:
        return self.current

    def fenced(self, token: LeaseToken, reason: str) -> None:
        assert reason
        self.refused.append(token)
        if token == self.current:
            self.current = None


def fenced_outbox():
    bus, fence = FencedBus(), Fence()
    outbox = Outbox(bus.publish, max_backoff_s=0.05)
    outbox.fence_with(fence)
    return outbox, bus, fence


def fenced_total() -> float:
    return REGISTRY.get_sample_value("ratesvc_collector_fenced_publishes_total") or 0.0


async def test_a_fenced_outbox_queues_nothing_until_it_leads_then_publishes_with_the_token():
    outbox, bus, fence = fenced_outbox()
    assert outbox.mode is Mode.DISCARDING
    outbox.put([ev(1)])
    assert len(outbox) == 0
    stop = asyncio.Event()
    task = asyncio.create_task(outbox.run(stop))
    fence.current = bus.current = LeaseToken("alpha", 4)
    outbox.resume()
    outbox.put([ev(2), ev(3)])
    await wait_for(lambda: len(bus.received) == 2)
    stop.set()
    await task
    assert bus.received == [(4, 2), (4, 3)]


async def test_a_refused_publish_is_counted_kept_and_stops_publishing():
    outbox, bus, fence = fenced_outbox()
    fence.current = LeaseToken("alpha", 1)
    bus.current = LeaseToken("bravo", 2)  # the lease moved on
    outbox.resume()
    before = fenced_total()
    stop = asyncio.Event()
    task = asyncio.create_task(outbox.run(stop))
    outbox.put([ev(1), ev(2)])
    await wait_for(lambda: fenced_total() == before + 1)
    assert fence.refused == [LeaseToken("alpha", 1)]
    assert not bus.received and len(outbox) == 2
    outbox.hold()  # what the collector does when Leadership reports the loss
    await asyncio.sleep(0.05)
    assert fenced_total() == before + 1  # no retry while holding
    stop.set()
    await task


async def test_events_held_after_a_loss_flush_in_order_when_leadership_continues():
    outbox, bus, fence = fenced_outbox()
    fence.current = bus.current = LeaseToken("solo", 1)
    outbox.resume()
    stop = asyncio.Event()
    task = asyncio.create_task(outbox.run(stop))
    outbox.put([ev(1)])
    await wait_for(lambda: len(bus.received) == 1)
    fence.current = None
    outbox.hold()
    outbox.put([ev(2), ev(3)])
    await asyncio.sleep(0.05)
    assert len(outbox) == 2
    fence.current = bus.current = LeaseToken("solo", 2)
    outbox.resume()
    await wait_for(lambda: len(outbox) == 0)
    stop.set()
    await task
    assert bus.received == [(1, 1), (2, 2), (2, 3)]


async def test_no_token_holds_without_calling_redis():
    outbox, bus, _fence = fenced_outbox()
    outbox.resume()  # resumed, but the lease is already gone
    bus.gate = asyncio.Event()  # a publish attempt would hang here
    stop = asyncio.Event()
    task = asyncio.create_task(outbox.run(stop))
    outbox.put([ev(1)])
    await wait_for(lambda: outbox.mode is Mode.HOLDING)
    assert len(outbox) == 1
    stop.set()
    await task


async def test_an_old_publish_refused_after_a_takeover_neither_stalls_nor_pops_the_new_term():
    outbox, bus, fence = fenced_outbox()
    fence.current = bus.current = LeaseToken("alpha", 1)
    outbox.resume()
    bus.gate = asyncio.Event()
    stop = asyncio.Event()
    task = asyncio.create_task(outbox.run(stop))
    outbox.put([ev(1), ev(2)])
    await asyncio.sleep(0.02)  # the publish of [1, 2] under term 1 is in flight
    outbox.discard()  # meanwhile: lost, superseded, and regained as term 3
    fence.current = bus.current = LeaseToken("alpha", 3)
    outbox.resume()
    outbox.put([ev(10)])
    bus.gate.set()  # term 1's publish reaches the fence now: refused
    await wait_for(lambda: len(outbox) == 0)
    stop.set()
    await task
    assert bus.received == [(3, 10)]
    assert fence.refused == [LeaseToken("alpha", 1)] and fence.current == LeaseToken("alpha", 3)


async def test_a_batch_published_while_the_queue_was_replaced_does_not_pop_the_new_events():
    outbox, bus, fence = fenced_outbox()
    fence.current = bus.current = LeaseToken("alpha", 1)
    outbox.resume()
    bus.gate = asyncio.Event()
    stop = asyncio.Event()
    task = asyncio.create_task(outbox.run(stop))
    outbox.put([ev(1), ev(2)])
    await asyncio.sleep(0.02)  # in flight, and Redis will take it
    outbox.drop()
    outbox.put([ev(10), ev(11)])
    bus.gate.set()
    await wait_for(lambda: len(bus.received) == 4)
    stop.set()
    await task
    assert bus.received == [(1, 1), (1, 2), (1, 10), (1, 11)]
