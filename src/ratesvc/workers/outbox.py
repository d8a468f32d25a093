"""The collector's outbox: an ordered, bounded in-memory queue in front of the rate bus.

Events are published in order, in batches, as soon as they are queued. While Redis is unreachable
they wait here (bounded: the oldest are dropped, counted and logged, when the bound is hit) and are
flushed in order when Redis returns.

Fenced (`fence_with`, the collector's lease): every publish carries the current lease token and the
outbox has three modes. PUBLISHING while this process leads; HOLDING after the lease was lost
(events keep queuing, bounded, in case the next term continues ours); DISCARDING while another
process publishes (nothing queues: the collector re-publishes its current state on takeover).
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from loguru import logger

from ratesvc import metrics
from ratesvc.bus import Event, FencedOut, LeaseToken
from ratesvc.connections import REDIS_ERRORS
from ratesvc.domain import RateTick
from ratesvc.errors import describe

PublishFn = Callable[..., Awaitable[object]]  # (events) or (events, *, fence=LeaseToken)


class Mode(StrEnum):
    """What the outbox does with events."""

    PUBLISHING = "publishing"
    HOLDING = "holding"
    DISCARDING = "discarding"


class Fence(Protocol):
    """The lease side the outbox needs (workers/lease.py Leadership)."""

    def token(self) -> LeaseToken | None:
        """The token to publish with, or None when this process may not publish."""

    def fenced(self, token: LeaseToken, reason: str) -> None:
        """Redis refused a publish made with `token`."""


@dataclass(frozen=True, slots=True)
class _Limits:
    max_events: int
    batch: int
    max_backoff_s: float
    publish_timeout_s: float


class Outbox:
    """Queue events with `put`; `run` drains them to `publish` until `stop` is set and empty.

    Args:
        publish: RateBus.publish (called with ``fence=`` once `fence_with` was called).
        max_events: the bound; beyond it the oldest events are dropped.
        batch: events per publish call.
        max_backoff_s: cap of the retry backoff while Redis is unreachable.
        publish_timeout_s: a publish hanging longer (partitioned Redis) is retried.
    """

    def __init__(
        self,
        publish: PublishFn,
        *,
        max_events: int = 100_000,
        batch: int = 500,
        max_backoff_s: float = 5.0,
        publish_timeout_s: float = 10.0,
    ) -> None:
        self._publish = publish
        self._queue: deque[Event] = deque()
        self._limits = _Limits(max_events, batch, max_backoff_s, publish_timeout_s)
        self._wake = asyncio.Event()
        self._kick = asyncio.Event()  # cuts a backoff wait short when publishing resumes
        self._fence: Fence | None = None
        self._epoch = 0  # bumped when the queue is dropped under an in-flight publish
        self.mode = Mode.PUBLISHING
        self.dropped = 0
        self.connected = True

    def fence_with(self, fence: Fence) -> None:
        """Publish only with `fence`'s token; discard until the collector gains the lease."""
        self._fence = fence
        self.discard()

    def put(self, events: Sequence[Event]) -> None:
        """Queue events for publishing (never blocks; drops the oldest beyond the bound)."""
        if self.mode is Mode.DISCARDING:
            return
        self._queue.extend(events)
        overflow = len(self._queue) - self._limits.max_events
        if overflow > 0:
            for _ in range(overflow):
                self._queue.popleft()
            self.dropped += overflow
            logger.warning("outbox full: dropped {n} oldest events", n=overflow)
        metrics.COLLECTOR_BUFFER.set(len(self._queue))
        self._wake.set()

    def resume(self) -> None:
        """Publish again (the collector gained the lease)."""
        self.mode = Mode.PUBLISHING
        self._wake.set()
        self._kick.set()

    def hold(self) -> None:
        """Stop publishing but keep queuing (the lease was lost; the next term may continue)."""
        if self.mode is Mode.PUBLISHING:
            self.mode = Mode.HOLDING

    def discard(self) -> None:
        """Drop what is queued and queue nothing more (another process publishes)."""
        self.drop()
        self.mode = Mode.DISCARDING

    def drop(self) -> int:
        """Drop every queued event (they belong to a term that will never be continued)."""
        n = len(self._queue)
        self._queue.clear()
        self._epoch += 1
        if n:
            logger.info("dropped {n} buffered events of a lost lease term", n=n)
        metrics.COLLECTOR_BUFFER.set(0)
        return n

    def __len__(self) -> int:
        return len(self._queue)

    async def run(self, stop: asyncio.Event) -> None:
        """Publish queued events in order; retry with backoff while Redis is down."""
        delay = 0.1
        while True:
            if not self._queue or self.mode is not Mode.PUBLISHING:
                if stop.is_set():
                    self._warn_unpublished()
                    return
                self._wake.clear()
                await _wait_any(self._wake, stop)
                continue
            try:
                await self._publish_next()
            except Exception as err:  # pylint: disable=broad-exception-caught
                # Unreachable Redis (REDIS_ERRORS; a hung publish's TimeoutError is an OSError)
                # is expected; any other error reply (OOM, a read-only replica) must not end the
                # collector's publishing either. The batch stays queued and is retried.
                metrics.PUBLISH_ERRORS.inc()
                if not isinstance(err, REDIS_ERRORS):
                    logger.opt(exception=err).error(
                        "publish failed, retrying: {err}", err=describe(err)
                    )
                elif self.connected:
                    logger.error("redis unreachable, buffering events: {err}", err=describe(err))
                self.connected = False
                if stop.is_set():
                    self._warn_unpublished()
                    return
                self._kick.clear()
                await _wait_any(self._kick, stop, timeout_s=random.uniform(0, delay))
                delay = min(delay * 2, self._limits.max_backoff_s)
                continue
            delay = 0.1

    def _warn_unpublished(self) -> None:
        if self._queue:
            logger.warning("stopping with {n} unpublished events", n=len(self._queue))

    async def _publish_next(self) -> None:
        batch = [self._queue[i] for i in range(min(self._limits.batch, len(self._queue)))]
        epoch = self._epoch
        token = None
        if self._fence is not None:
            token = self._fence.token()
            if token is None:
                self.hold()  # the lease was lost (Leadership told the collector already)
                return
        sent = await self._send(batch, token)
        if not self.connected:  # Redis answered, whether it took the batch or refused it
            logger.info("redis back, publishing buffered events")
        self.connected = True
        if not sent:
            return
        if epoch == self._epoch:  # else the queue was dropped (and refilled) meanwhile
            for _ in batch:
                self._queue.popleft()
        metrics.COLLECTOR_BUFFER.set(len(self._queue))
        for event in batch:
            if isinstance(event, RateTick):
                metrics.TICKS_PUBLISHED.labels(event.exchanger).inc()

    async def _send(self, batch: list[Event], token: LeaseToken | None) -> bool:
        """Publish one batch (fenced with `token` if given); False when Redis refused it."""
        async with asyncio.timeout(self._limits.publish_timeout_s):
            if token is None:
                await self._publish(batch)
                return True
            try:
                await self._publish(batch, fence=token)
                return True
            except FencedOut as err:
                refused = str(err)
                metrics.COLLECTOR_FENCED_PUBLISHES.inc()
                logger.warning(
                    "publish refused by the lease fence (term {term}, lease now {holder}): "
                    "{n} events not written",
                    term=token.term,
                    holder=err.holder or "free",
                    n=len(batch),
                )
        assert self._fence is not None
        self._fence.fenced(token, refused)
        if self._fence.token() == token:
            self.hold()  # never spin on a refused token
        return False


async def _wait_any(*events: asyncio.Event, timeout_s: float | None = None) -> None:
    waiters = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
