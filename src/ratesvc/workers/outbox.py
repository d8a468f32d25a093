"""The collector's outbox: an ordered, bounded in-memory queue in front of the rate bus.

Events are published in order, in batches, as soon as they are queued. While Redis is unreachable
they wait here (bounded: the oldest are dropped, counted and logged, when the bound is hit) and are
flushed in order when Redis returns.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

from loguru import logger

from ratesvc import metrics
from ratesvc.bus import Event
from ratesvc.connections import REDIS_ERRORS

PublishFn = Callable[[Sequence[Event]], Awaitable[object]]


class Outbox:
    """Queue events with `put`; `run` drains them to `publish` until `stop` is set and empty."""

    def __init__(
        self,
        publish: PublishFn,
        *,
        max_events: int = 100_000,
        batch: int = 500,
        max_backoff_s: float = 5.0,
    ) -> None:
        self._publish = publish
        self._queue: deque[Event] = deque()
        self._max_events = max_events
        self._batch = batch
        self._max_backoff_s = max_backoff_s
        self._wake = asyncio.Event()
        self.dropped = 0
        self.connected = True

    def put(self, events: Sequence[Event]) -> None:
        """Queue events for publishing (never blocks; drops the oldest beyond the bound)."""
        self._queue.extend(events)
        overflow = len(self._queue) - self._max_events
        if overflow > 0:
            for _ in range(overflow):
                self._queue.popleft()
            self.dropped += overflow
            logger.warning("outbox full: dropped {n} oldest events", n=overflow)
        metrics.COLLECTOR_BUFFER.set(len(self._queue))
        self._wake.set()

    def __len__(self) -> int:
        return len(self._queue)

    async def run(self, stop: asyncio.Event) -> None:
        """Publish queued events in order; retry with backoff while Redis is down."""
        delay = 0.1
        while not (stop.is_set() and not self._queue):
            if not self._queue:
                self._wake.clear()
                await _wait_any(self._wake, stop)
                continue
            batch = [self._queue[i] for i in range(min(self._batch, len(self._queue)))]
            try:
                await self._publish(batch)
            except REDIS_ERRORS as err:
                metrics.PUBLISH_ERRORS.inc()
                if self.connected:
                    logger.error("redis unreachable, buffering events: {err}", err=err)
                self.connected = False
                if stop.is_set():
                    logger.warning("stopping with {n} unpublished events", n=len(self._queue))
                    return
                await _sleep_or_stop(random.uniform(0, delay), stop)
                delay = min(delay * 2, self._max_backoff_s)
                continue
            if not self.connected:
                logger.info("redis back, flushed buffered events")
            self.connected, delay = True, 0.1
            for _ in batch:
                self._queue.popleft()
            metrics.COLLECTOR_BUFFER.set(len(self._queue))


async def _wait_any(*events: asyncio.Event) -> None:
    waiters = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


async def _sleep_or_stop(delay_s: float, stop: asyncio.Event) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=delay_s)
    except TimeoutError:
        pass
