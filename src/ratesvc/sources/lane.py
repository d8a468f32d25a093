"""One transport's reconnect loop: connect, consume, watchdog, classify failures, back off.

supervise.py runs one Lane per source (plus one for its fallback transport while the primary
fails); adapters never see this module. It must not import bus/store/api (data flows one way).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from ratesvc.domain import Quote, SourceState, SourceStatus, Transport
from ratesvc.errors import Held, RateLimited, SourceError
from ratesvc.metrics import (
    SOURCE_ERRORS,
    SOURCE_LAST_TICK,
    SOURCE_QUOTES,
    SOURCE_RECONNECTS,
    SOURCE_STALE,
    SOURCE_UP,
)
from ratesvc.sources.backoff import Backoff
from ratesvc.sources.base import Source, first_of
from ratesvc.timing import REAL_TIME, Timing

# failures in a row (without one parsed quote) after which retries are logged at ERROR
ERROR_AFTER_FAILURES = 5
REASON_CHARS = 200
# InvalidHandshake: the server answered the websocket upgrade with an HTTP error (403, 451, 503)
CONNECTION_ERRORS = (
    OSError,
    ConnectionClosed,
    InvalidHandshake,
    TimeoutError,
    httpx.TransportError,
)

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[Any]]
OnQuotes = Callable[[list[Quote]], Awaitable[None]]
OnStatus = Callable[[SourceStatus], Awaitable[None]]


class _Stale(Exception):
    """The watchdog saw no quote within the limit."""


class Lane:
    """The loop over one Source: reconnects forever with backoff until `stop` is set.

    Emits UP on the first quote of each connection, STALE when no quote came for
    `source.stale_after_s` (then reconnects), DOWN on failure. Subclasses hook `_first_quote`,
    `_report` and `_failure_level` (supervise.py adds the fallback transport that way).
    """

    def __init__(  # pylint: disable=too-many-positional-arguments
        self,
        source: Source,
        on_quotes: OnQuotes,
        on_status: OnStatus,
        backoff: Backoff,
        stop: asyncio.Event,
        timing: Timing = REAL_TIME,
    ) -> None:
        self.source, self.backoff, self.stop = source, backoff, stop
        self.on_quotes, self.on_status = on_quotes, on_status
        self.timing = timing  # the watchdog, the waits, the status times
        self.role = f"{source.transport} transport"  # names this loop in logs
        self.state: tuple[SourceState, Transport] | None = None
        self.failures = 0
        self.last_quote_at = 0.0
        self.quoted = False  # a quote arrived on the current connection

    @property
    def log(self) -> Any:
        """The source's bound logger."""
        return self.source.log

    async def run(self) -> None:
        """Connect, consume, classify the failure, wait, repeat."""
        self.log.info("{role} starting", role=self.role)
        attempt = 0
        try:
            while not self.stop.is_set():
                if attempt:
                    SOURCE_RECONNECTS.labels(source=self.source.name).inc()
                attempt += 1
                delay_s = await self._attempt()
                if delay_s is None or self.stop.is_set():
                    break
                # the source may cut the wait short (e.g. its cadence just changed): it paces
                # its own calls, so retrying early cannot exceed its budget
                await first_of(
                    self.timing.sleep(delay_s), self.stop.wait(), self.source.retry_wakeup()
                )
        finally:
            SOURCE_UP.labels(source=self.source.name).set(0)
            self.log.info("{role} stopped", role=self.role)

    async def _attempt(self) -> float | None:
        """One connection; returns the delay before the next one, None when stopping."""
        try:
            await self._connection()
            return None
        except _Stale:
            return await self._failed("stale", f"no quote for {self.source.stale_after_s:g}s")
        except SourceError as err:
            return await self._source_error(err)
        except CONNECTION_ERRORS as err:
            return await self._failed("connection", f"{type(err).__name__}: {err}", error=err)
        except Exception as err:  # pylint: disable=broad-exception-caught
            # the loop's one broad except: an adapter bug or a failing callback must not end the
            # feed for good; log the traceback, count it, back off and reconnect
            self.log.exception("unexpected error in source loop")
            return await self._failed("unexpected", f"{type(err).__name__}: {err}", error=err)

    async def _source_error(self, err: SourceError) -> float | None:
        if isinstance(err, Held):
            return self._held(err)
        if isinstance(err, RateLimited):
            delay_s = max(err.retry_after_s or 0.0, self.backoff.next_delay())
            reason = f"{err.kind.replace('_', ' ')}: {err}"
            return await self._failed(err.kind, reason, delay_s, err)
        return await self._failed(err.kind, str(err) or type(err).__name__, error=err)

    def _held(self, err: Held) -> float | None:
        """Nothing was sent (the venue's gate is closed): no new failure, wait until it opens."""
        if self.stop.is_set():
            return None
        SOURCE_ERRORS.labels(source=self.source.name, kind=err.kind).inc()
        delay_s = max(err.retry_after_s or 0.0, self.source.retry_floor_s())
        self.log.info(
            "{role}: {reason}; trying again in {delay_s:.1f}s",
            role=self.role,
            reason=err,
            delay_s=delay_s,
        )
        return delay_s

    async def _connection(self) -> None:
        """Consume one connection until it fails, goes stale (_Stale) or stop is set."""
        self.quoted = False
        self.last_quote_at = self.timing.monotonic()
        quotes = self.source.quotes()
        consume = asyncio.ensure_future(self._consume(quotes))
        watchdog = asyncio.ensure_future(self._watchdog())
        try:
            done = await first_of(consume, watchdog, self.stop.wait())
        finally:
            aclose = getattr(quotes, "aclose", None)
            if aclose is not None:
                await aclose()  # closes the socket now, not whenever the generator is collected
        if self.stop.is_set():
            return
        if consume in done:
            consume.result()  # raises the connection's error
            raise SourceError("stream ended")
        if watchdog in done:
            raise _Stale()

    async def _consume(self, quotes: Any) -> None:
        async for batch in quotes:
            self.last_quote_at = self.timing.monotonic()
            SOURCE_QUOTES.labels(source=self.source.name).inc(len(batch))
            SOURCE_LAST_TICK.labels(source=self.source.name).set(self.timing.wall_ms() / 1000)
            if not self.quoted:
                self.quoted = True
                await self._first_quote()
            self.log.debug("quotes {quotes}", quotes=batch)
            await self.on_quotes(batch)

    async def _first_quote(self) -> None:
        """The current connection delivers: reset the backoff and report UP."""
        self.failures = 0
        # reset only now: a socket that accepts but never quotes keeps backing off
        self.backoff.reset()
        self.log.info("receiving quotes over {transport}", transport=self.source.transport)
        SOURCE_UP.labels(source=self.source.name).set(1)
        await self._emit(SourceState.UP, "")

    async def _watchdog(self) -> None:
        """Return once no quote came for stale_after_s (per connection; cryptofeed's _watcher)."""
        while (
            remaining := self.last_quote_at + self.source.stale_after_s - self.timing.monotonic()
        ) > 0:
            await self.timing.sleep(remaining)

    async def _failed(
        self,
        kind: str,
        reason: str,
        delay_s: float | None = None,
        error: BaseException | None = None,
    ) -> float | None:
        if self.stop.is_set():
            return None  # an error caused by shutting down is not a failure
        name = self.source.name
        reason = reason[:REASON_CHARS]
        self.failures += 1
        if kind == "stale":
            SOURCE_STALE.labels(source=name).inc()
        else:
            SOURCE_ERRORS.labels(source=name, kind=kind).inc()
        await self._report(
            SourceState.STALE if kind == "stale" else SourceState.DOWN, reason, error
        )
        delay_s = self.backoff.next_delay() if delay_s is None else delay_s
        delay_s = max(delay_s, self.source.retry_floor_s())
        self.log.log(
            self._failure_level(),
            "{role}: {reason}; reconnecting in {delay_s:.1f}s (failure {failures} in a row)",
            role=self.role,
            reason=reason,
            delay_s=delay_s,
            failures=self.failures,
        )
        return delay_s

    async def _report(self, state: SourceState, reason: str, error: BaseException | None) -> None:
        """Publish a failure (`error` is the exception behind it, None for a stale feed)."""
        del error  # for overrides (supervise.py decides on a fallback from it)
        SOURCE_UP.labels(source=self.source.name).set(0)
        await self._emit(state, reason)

    def _failure_level(self) -> str:
        return "ERROR" if self.failures >= ERROR_AFTER_FAILURES else "WARNING"

    async def _emit(
        self, state: SourceState, reason: str, transport: Transport | None = None
    ) -> None:
        """Report a change of state or transport (repeats of the same pair are not re-sent)."""
        transport = transport or self.source.transport
        if (state, transport) == self.state:
            return
        self.state = (state, transport)
        status = SourceStatus(self.source.name, state, self.timing.wall_ms(), transport, reason)
        try:
            await self.on_status(status)
        except Exception:  # pylint: disable=broad-exception-caught
            # the status sink is the caller's (e.g. Redis); its failure must not end this loop,
            # which may be reporting a failure right now
            SOURCE_ERRORS.labels(source=self.source.name, kind="status_callback").inc()
            self.log.exception("status callback failed")
