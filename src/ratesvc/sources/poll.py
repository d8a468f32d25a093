"""REST polling template: the HTTP client, the cadence and the pacing of every call.

A PollSource paces its own calls, so no restart, retry or wake-up can make it call sooner than
allowed: the next poll is due `poll_interval_s()` after the previous one (across reconnects too),
later after failures (exponential), never while the venue's gate is closed (a Retry-After, a ban:
sources/gate.py), and adapters may add limits (`next_poll_at()`). Reconnecting and staleness stay
in sources/supervise.py.
"""

from __future__ import annotations

import asyncio
import math
import time
from abc import abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ClassVar

import httpx

from ratesvc.domain import Transport, now_ms
from ratesvc.errors import Unavailable
from ratesvc.sources.base import Frame, Source, first_of
from ratesvc.sources.gate import Gate

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[Any]]


KEEPALIVE_S = 2.0  # idle connections older than this are closed by the client


class PollSource(Source):
    """REST template: subclasses give `request(client)` and the cadence via `poll_interval_s()`.

    The first poll is at once; each later one when `next_poll_at()` is due: the cadence after the
    previous poll, the cadence x 2**(n-1) (capped at `max_backoff_s`) after n failed polls in a
    row; never while the gate is closed. `wake()` makes a waiting loop (and a supervise() retry
    wait) re-evaluate at once, so a new cadence applies immediately.

    Args:
        timeout_s: per-request timeout.
        clock: monotonic seconds; `sleep` waits on it. Tests inject fakes for both.
    """

    transport: ClassVar[Transport] = Transport.REST
    max_backoff_s: float = 600.0

    def __init__(
        self,
        *,
        stale_after_s: float,
        timeout_s: float = 10.0,
        http_transport: httpx.AsyncBaseTransport | None = None,
        gate: Gate | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        super().__init__(
            stale_after_s=stale_after_s,
            gate=gate or Gate(self.name, clock=clock),  # one clock for pacing and the gate
            http_transport=http_transport,
        )
        self.timeout_s = timeout_s
        self.clock, self.sleep = clock, sleep
        self._wake = asyncio.Event()
        self.last_poll_at: float | None = None  # clock() when the previous request started
        self.failed_polls = 0  # failed requests in a row

    @abstractmethod
    async def request(self, client: httpx.AsyncClient) -> httpx.Response:
        """One poll with `client` (from `http_client()`: an error answer raises in there)."""

    @abstractmethod
    def poll_interval_s(self) -> float:
        """Seconds between polls right now."""

    def backoff_s(self) -> float:
        """The wait after the previous poll: the cadence, doubled per further failure in a row."""
        interval = self.poll_interval_s()
        if self.failed_polls <= 1:
            return interval
        factor = 2 ** min(self.failed_polls - 1, 32)
        return min(interval * factor, max(interval, self.max_backoff_s))

    def next_poll_at(self) -> float:
        """clock() time at which the next request may start by the cadence (-inf: at once)."""
        if self.last_poll_at is None:
            return -math.inf
        return self.last_poll_at + self.backoff_s()

    def retry_floor_s(self) -> float:
        """How long until the next poll is due and the gate open (supervise() waits that long)."""
        return max(super().retry_floor_s(), self.next_poll_at() - self.clock())

    def wake(self) -> None:
        """Re-evaluate the cadence at once (interrupts a sleeping poll loop or retry wait)."""
        self._wake.set()

    async def retry_wakeup(self) -> None:
        """Returns on wake(): the cadence changed, so supervise() retries (and we pace) now."""
        await self._wake.wait()

    async def frames(self) -> AsyncIterator[Frame]:
        """Response bodies of one poll loop."""
        self._wake.clear()  # this attempt re-reads the cadence: earlier wake-ups are spent
        # Polls are seconds to minutes apart, longer than servers keep idle connections: never
        # reuse one idle past KEEPALIVE_S, or a poll meets a connection the server just closed.
        async with self.http_client(
            timeout=self.timeout_s, limits=httpx.Limits(keepalive_expiry=KEEPALIVE_S)
        ) as client:
            while True:
                await self._wait_until_due()
                frame = await self.next_frame(client)
                if frame is not None:
                    yield frame

    async def next_frame(self, client: httpx.AsyncClient) -> Frame | None:
        """What is due now: one poll's body by default (None: nothing new, wait for the next)."""
        response = await self._poll(client)
        return Frame(response.content, now_ms())

    async def _poll(self, client: httpx.AsyncClient) -> httpx.Response:
        """One request, with the bookkeeping the pacing needs (failures in a row)."""
        # before anything is counted or spent: while the gate is closed nothing goes out
        await self.gate.admit()
        self.last_poll_at = self.clock()
        ok = False
        try:
            response = await self.request(client)
            ok = True
        except httpx.TimeoutException as err:
            raise Unavailable(f"timeout after {self.timeout_s:g}s ({type(err).__name__})") from err
        finally:
            self.failed_polls = 0 if ok else self.failed_polls + 1
        return response

    async def _wait_until_due(self) -> None:
        while (remaining := self.next_poll_at() - self.clock()) > 0:
            self._wake.clear()
            await first_of(self.sleep(remaining), self._wake.wait())
