"""RateMirror: this worker's in-process snapshot of the latest ticks and source statuses.

Loads from the Redis hash (or, when it is empty, from Postgres history, seeding the hash), then
follows the stream from the id noted BEFORE loading, so nothing published meanwhile is lost.
Serves on while Redis is away (not ready), and re-syncs on reconnect. The request path only reads
`version` and calls `decide`: no I/O there.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from loguru import logger
from redis.exceptions import RedisError

from ratesvc.api.snapshot import Snapshot
from ratesvc.bus import RateBus
from ratesvc.connections import REDIS_ERRORS
from ratesvc.domain import EXCHANGERS, RateTick, SourceStatus, now_ms
from ratesvc.errors import describe

HistoryLoader = Callable[[], Awaitable[tuple[list[RateTick], list[SourceStatus]]]]
FOLLOW_ERRORS = (*REDIS_ERRORS, RedisError, TimeoutError)


@dataclass(frozen=True, slots=True)
class MirrorOptions:
    """Timings of the mirror's loops (seconds unless the name says otherwise)."""

    evaluate_interval_s: float = 0.1  # re-check time-based state (staleness, hold-down expiry)
    block_ms: int = 1_000  # XREAD block
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 5.0
    history_timeout_s: float = 5.0
    start_wait_s: float = 2.5  # start() waits this long for the first load, then goes on


class RateMirror(Snapshot):
    """A Snapshot kept current from Redis by its own tasks.

    Args:
        bus: the Redis bus to load from and follow; None for a mirror filled by hand (tests).
        history: cold-start loader used when the Redis hash is empty.
        options: loop timings.
        preference, hold_down_s, redis_stale_after_s, clock: see Snapshot.
    """

    def __init__(
        self,
        bus: RateBus | None = None,
        *,
        preference: Sequence[str] = EXCHANGERS,
        hold_down_s: float = 10.0,
        redis_stale_after_s: float = 10.0,
        history: HistoryLoader | None = None,
        clock: Callable[[], int] = now_ms,
        options: MirrorOptions = MirrorOptions(),
    ) -> None:
        super().__init__(
            preference=preference,
            hold_down_s=hold_down_s,
            redis_stale_after_s=redis_stale_after_s,
            clock=clock,
        )
        self.bus = bus
        self.history = history
        self.options = options
        self._tasks: list[asyncio.Task[None]] = []

    # ---------------------------------------------------------------- tasks
    async def start(self) -> None:
        """Start loading, following and re-evaluating; waits briefly for the first load."""
        if self._tasks:
            return
        self._tasks = [asyncio.create_task(self._evaluate_forever(), name="mirror-evaluate")]
        if self.bus is not None:
            self._tasks.append(asyncio.create_task(self._follow_forever(), name="mirror-follow"))
        deadline = asyncio.get_running_loop().time() + self.options.start_wait_s
        while not self.loaded and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        """Cancel the tasks and wait for them."""
        tasks, self._tasks = self._tasks, []
        pending = set(tasks)
        while pending:
            # Cancel again until done: on Python 3.11 asyncio.wait_for (used by redis-py around
            # socket writes) can swallow a cancellation that races with its inner completion.
            for task in pending:
                task.cancel()
            _done, pending = await asyncio.wait(pending, timeout=0.5)
        if self.following:
            self.set_following(False)

    async def sync(self) -> str:
        """Note the stream position, then load the hash (or history); returns the noted id."""
        assert self.bus is not None
        after = await self.bus.last_id()
        ticks, statuses = await self.bus.read_latest()
        if ticks:
            self.load(ticks, statuses)
            return after
        # Cold start (or a Redis that lost its data): history, merged with what we already hold,
        # seeds the hash; HSETNX never overwrites a value a collector wrote meanwhile.
        history_ticks, history_statuses = await self._history()
        self.load(history_ticks, [*history_statuses, *statuses])
        if self.ticks:
            seeded = await self.bus.seed_latest(list(self.ticks.values()))
            logger.info("seeded {n} latest values into redis", n=seeded)
        return after

    async def _history(self) -> tuple[list[RateTick], list[SourceStatus]]:
        if self.history is None:
            return [], []
        # Postgres down must not stop the API from following Redis: log and go on without it.
        try:
            async with asyncio.timeout(self.options.history_timeout_s):
                ticks, statuses = await self.history()
        except Exception as err:  # pylint: disable=broad-exception-caught
            logger.warning("cold start from history failed: {err}", err=describe(err))
            return [], []
        logger.info("loaded {n} values from history", n=len(ticks))
        return list(ticks), list(statuses)

    async def _follow_forever(self) -> None:
        assert self.bus is not None
        backoff_s = self.options.backoff_initial_s
        while True:
            try:
                after = await self.sync()
                self.set_following(True)
                backoff_s = self.options.backoff_initial_s
                while True:
                    after = await self._follow_once(after)
            except FOLLOW_ERRORS as err:
                self._lost(f"redis: {describe(err)}")
            # The loop's one broad except: a bug in decoding must not stop following for good.
            except Exception:  # pylint: disable=broad-exception-caught
                logger.exception("mirror follow loop failed")
                self._lost("bug")
            if not self.loaded:
                # Redis down at start: serve history meanwhile (loaded, but not ready).
                ticks, statuses = await self._history()
                if ticks:
                    self.load(ticks, statuses)
            await asyncio.sleep(random.uniform(backoff_s / 2, backoff_s))
            backoff_s = min(backoff_s * 2, self.options.backoff_max_s)

    async def _follow_once(self, after: str) -> str:
        assert self.bus is not None
        block_ms = self.options.block_ms
        # XREAD BLOCK on a silently dead link would wait forever: bound it.
        async with asyncio.timeout(block_ms / 1000 + 5):
            entries = await self.bus.follow(after, block_ms=block_ms)
        if entries:
            self.apply(event for _id, event in entries if event is not None)
            after = entries[-1][0]
        return after

    def _lost(self, reason: str) -> None:
        if self.following:
            logger.warning(
                "stopped following the stream ({reason}); serving the snapshot", reason=reason
            )
        self.set_following(False)

    async def _evaluate_forever(self) -> None:
        while True:
            await asyncio.sleep(self.options.evaluate_interval_s)
            self.evaluate()
