"""The one reconnect loop every source runs under, with an optional fallback transport.

Adapters only open one connection (Source.quotes()); surviving failures lives in sources/lane.py
and here. A source whose `fallback()` returns a second transport (Binance: REST polling behind the
websocket) is served by it while the primary transport keeps failing: after
`source.fallback_after_failures` failures in a row without a quote, or at once when
`source.refused()` says the venue refused the connection. The primary is probed meanwhile with
the normal backoff; its first quote stops the fallback. The status stays UP while the fallback
serves (with its transport), so consumers know the values are fresh.

With a fallback, a failure of the primary is reported DOWN only if no quote arrived over either
transport within DOWN_GRACE_S: a websocket drop that the fallback (or a quick reconnect) bridges
is not a failover for the API. A polled source (CoinGecko) is reported DOWN only after
POLL_DOWN_AFTER_FAILURES failed polls in a row. Otherwise DOWN is reported at once.
"""

from __future__ import annotations

import asyncio
import time

from ratesvc.domain import SourceState, SourceStatus, Transport
from ratesvc.errors import RateLimited, Unavailable
from ratesvc.metrics import SOURCE_TRANSPORT
from ratesvc.sources.backoff import Backoff
from ratesvc.sources.base import Source, first_of
from ratesvc.sources.lane import (
    CONNECTION_ERRORS,
    Clock,
    Lane,
    OnQuotes,
    OnStatus,
    Sleep,
)
from ratesvc.sources.poll import PollSource
from ratesvc.timing import Timing

__all__ = ["Backoff", "CONNECTION_ERRORS", "DOWN_GRACE_S", "supervise"]

# How long a failing primary may go unreported while a fallback transport takes over: short
# enough that a real outage still fails over well within the 2 s target.
DOWN_GRACE_S = 1.5  # above the 1 s ceiling of the first reconnect delay, below the 2 s target
# A polled source's values stay valid until their legs age out; one failed poll (a 429, a dropped
# keep-alive connection) is not an outage. Report DOWN after this many failures in a row.
POLL_DOWN_AFTER_FAILURES = 3


async def supervise(
    source: Source,
    *,
    on_quotes: OnQuotes,
    on_status: OnStatus,
    backoff: Backoff,
    stop: asyncio.Event,
    clock: Clock = time.monotonic,
    sleep: Sleep = asyncio.sleep,
    wall_clock: Clock = time.time,
) -> None:
    """Run `source` until `stop` is set, reconnecting forever with backoff and full jitter.

    Emits UP on the first quote of each connection, STALE when no quote came for
    `source.stale_after_s` (then reconnects), DOWN on failure; UP with the fallback's transport
    while `source.fallback()` serves, UP with the primary's when that is back. `clock` (monotonic
    seconds) and `sleep` drive the watchdog and the backoff waits, `wall_clock` (epoch seconds)
    stamps statuses; tests and simulations inject fakes.
    """
    timing = Timing(monotonic=clock, wall=wall_clock, sleep=sleep)
    await _Supervisor(source, on_quotes, on_status, backoff, stop, timing).run()


class _Supervisor(Lane):
    """The primary transport's lane plus, while it fails, a lane over the fallback transport."""

    def __init__(  # pylint: disable=too-many-positional-arguments
        self,
        source: Source,
        on_quotes: OnQuotes,
        on_status: OnStatus,
        backoff: Backoff,
        stop: asyncio.Event,
        timing: Timing,
    ) -> None:
        super().__init__(source, on_quotes, on_status, backoff, stop, timing)
        self.fallback_source = source.fallback()
        self._fallback: asyncio.Task[None] | None = None
        self._fallback_stop = asyncio.Event()
        self._deliveries = 0  # first quotes seen on either transport (cancels a deferred DOWN)
        self._deferred: asyncio.Task[None] | None = None

    async def run(self) -> None:
        """The primary lane; the fallback lane is started and stopped from its hooks."""
        self._use_transport(self.source.transport)
        try:
            await super().run()
        finally:
            await self._stop_fallback()
            if self._deferred is not None:
                self._deferred.cancel()
            self._use_transport(None)

    async def _first_quote(self) -> None:
        self._deliveries += 1
        if self._fallback is not None and self.fallback_source is not None:
            await self._stop_fallback()  # before UP(primary), so no fallback status follows it
            self.log.info(
                "{primary} is back: switching transport {fallback} -> {primary}",
                primary=self.source.transport,
                fallback=self.fallback_source.transport,
            )
            self._use_transport(self.source.transport)
        await super()._first_quote()

    async def _report(self, state: SourceState, reason: str, error: BaseException | None) -> None:
        if self._fallback is not None:
            return  # while the fallback runs, it reports the source's state
        if self._poll_blip(state, error):
            return
        if self.fallback_source is None or state is not SourceState.DOWN:
            await super()._report(state, reason, error)
        elif self._deferred is None or self._deferred.done():
            self._deferred = asyncio.create_task(self._report_later(state, reason, error))
        if self.fallback_source is not None and self._fallback_due(error):
            self._start_fallback(self.fallback_source, reason)

    def _poll_blip(self, state: SourceState, error: BaseException | None) -> bool:
        """A polled source's isolated transient failure: counted and logged, not reported DOWN.

        Configuration errors (a bad key, a spent quota) are reported at once.
        """
        return (
            state is SourceState.DOWN
            and self.fallback_source is None
            and isinstance(self.source, PollSource)
            and isinstance(error, (RateLimited, Unavailable, *CONNECTION_ERRORS))
            and self.failures < POLL_DOWN_AFTER_FAILURES
        )

    async def _report_later(
        self, state: SourceState, reason: str, error: BaseException | None
    ) -> None:
        """Report the failure unless either transport delivers within DOWN_GRACE_S."""
        seen = self._deliveries
        await first_of(self.timing.sleep(DOWN_GRACE_S), self.stop.wait())
        if self._deliveries == seen and not self.stop.is_set():
            await super()._report(state, reason, error)

    def _fallback_due(self, error: BaseException | None) -> bool:
        if self.failures >= self.source.fallback_after_failures:
            return True
        return error is not None and self.source.refused(error)

    def _failure_level(self) -> str:
        # a failing primary is not an error while the fallback transport serves
        return "WARNING" if self._fallback is not None else super()._failure_level()

    def _start_fallback(self, fallback: Source, reason: str) -> None:
        self.log.info(
            "{primary} failing ({reason}): switching transport {primary} -> {fallback}, "
            "probing {primary} with backoff",
            primary=self.source.transport,
            fallback=fallback.transport,
            reason=reason,
        )
        self._use_transport(fallback.transport)
        self._fallback_stop = asyncio.Event()
        lane = Lane(
            fallback,
            self.on_quotes,
            self._fallback_status,
            self.backoff.clone(),  # the fallback's failures must not slow the primary's probes
            self._fallback_stop,
            self.timing,
        )
        lane.role = f"{fallback.transport} fallback"
        self._fallback = asyncio.create_task(lane.run())

    async def _fallback_status(self, status: SourceStatus) -> None:
        if status.state is SourceState.UP:
            self._deliveries += 1
        await self._emit(status.state, status.reason, status.transport)

    async def _stop_fallback(self) -> None:
        task, self._fallback = self._fallback, None
        if task is not None:
            self._fallback_stop.set()
            await asyncio.gather(task, return_exceptions=True)

    def _use_transport(self, active: Transport | None) -> None:
        """ratesvc_source_transport: 1 for the transport in use, 0 for the others."""
        for transport in Transport:
            gauge = SOURCE_TRANSPORT.labels(source=self.source.name, transport=str(transport))
            gauge.set(1 if transport == active else 0)
