"""Shared helpers for the source adapter tests: fixture frames, metric values, a manual clock."""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Self

from prometheus_client import REGISTRY

from ratesvc.domain import Quote, SourceState, SourceStatus, Transport
from ratesvc.sources.backoff import Backoff
from ratesvc.sources.base import Source
from ratesvc.sources.supervise import supervise
from tests.captured import read_fixture

__all__ = ["ManualClock", "NOV_1_2026", "Supervised", "metric", "read_fixture", "settle"]


def metric(name: str, **labels: str) -> float:
    """Current value of a sample in the default registry (0 when never touched)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


# 2026-11-01T00:00:00Z: a 30-day month starts, so budget arithmetic is easy to follow
NOV_1_2026 = 1_793_491_200.0
SETTLE_STEPS = 50  # loop turns that let a mocked HTTP call and its callbacks finish


async def settle() -> None:
    """Let every task that can run do so (mock HTTP calls need a few dozen loop turns)."""
    for _ in range(SETTLE_STEPS):
        await asyncio.sleep(0)


class ManualClock:
    """Monotonic (`clock()`) and wall (`clock.time()`) time that move only in `advance()`.

    `sleep()` blocks until the test advances past its deadline, so concurrent waits (poll
    cadence, watchdog, retry) interleave exactly as they would in real time.
    """

    def __init__(self, wall_start: float = NOV_1_2026) -> None:
        self.now = 0.0
        self.wall_start = wall_start
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def __call__(self) -> float:
        return self.now

    def time(self) -> float:
        """Epoch seconds."""
        return self.wall_start + self.now

    async def sleep(self, delay_s: float) -> None:
        if delay_s <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + delay_s, future))
        await future

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking each sleeper at its own deadline, in order."""
        target = self.now + seconds
        while True:
            await settle()
            self._sleepers = [(t, f) for t, f in self._sleepers if not f.done()]
            due = [t for t, _ in self._sleepers if t <= target]
            if not due:
                break
            self.now = max(self.now, min(due))
            for deadline, future in self._sleepers:
                if deadline <= self.now:
                    future.set_result(None)
        self.now = target
        await settle()


class Supervised:
    """supervise(source) as a background task while `async with` lasts; records what it reports.

    With a ManualClock, supervise() waits on it too; stopping is bounded by a 5 s guard against
    hangs (never a threshold).
    """

    def __init__(
        self, source: Source, *, backoff: Backoff, clock: ManualClock | None = None
    ) -> None:
        self.source, self.backoff, self.clock = source, backoff, clock
        self.quotes: list[Quote] = []
        self.statuses: list[SourceStatus] = []
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        timing = {} if self.clock is None else {"clock": self.clock, "sleep": self.clock.sleep}
        self.task = asyncio.create_task(
            supervise(
                self.source,
                stop=self.stop,
                backoff=self.backoff,
                on_quotes=self.on_quotes,
                on_status=self.on_status,
                **timing,  # type: ignore[arg-type]
            )
        )
        await settle()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, timeout=5)

    async def on_quotes(self, batch: list[Quote]) -> None:
        """Record quotes."""
        self.quotes.extend(batch)

    async def on_status(self, status: SourceStatus) -> None:
        """Record statuses."""
        self.statuses.append(status)

    @property
    def states(self) -> list[tuple[SourceState, Transport]]:
        """(state, transport) of every status reported."""
        return [(s.state, s.transport) for s in self.statuses]
