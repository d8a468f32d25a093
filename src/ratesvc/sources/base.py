"""Source templates: what a venue adapter is (Source) and the websocket transport (StreamSource).

StreamSource owns websocket connect, ping and connection rotation; PollSource (sources/poll.py)
owns the HTTP client and the poll cadence. Neither reconnects or watches staleness: that is
sources/supervise.py, which also switches to a source's `fallback()` transport while needed.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import httpx
from loguru import logger
from pydantic_settings import BaseSettings
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from ratesvc.domain import Quote, Transport, now_ms
from ratesvc.errors import ParseError, RateLimited, RatesvcError, SourceError, Unavailable
from ratesvc.metrics import SOURCE_SKIPPED_FRAMES

if TYPE_CHECKING:
    from ratesvc.sources.budget import CallLedger

RAW_LOG_CHARS = 200  # how much of a skipped frame goes into the log line


@dataclass(frozen=True, slots=True)
class Frame:
    """One raw message as received: a websocket frame or an HTTP response body."""

    raw: str | bytes
    received_ms: int


class RotateRequested(RatesvcError):
    """Raised by parse() when the venue announces it will close this connection (serverShutdown)."""


def truncate(raw: str | bytes, limit: int = RAW_LOG_CHARS) -> str:
    """A log-safe prefix of a raw frame (bytes that are not UTF-8 are shown as a repr)."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raw = repr(raw)
    return raw if len(raw) <= limit else f"{raw[:limit]}... ({len(raw)} chars)"


class Source(ABC):
    """One venue feed. `quotes()` is one connection (or one poll loop); supervise() reconnects.

    Subclasses set `Options` (a pydantic-settings model), implement `frames()` (transport) and
    `parse()` (pure), and are registered with ``@register("slug")``, which sets `name`.
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type[BaseSettings]]
    transport: ClassVar[Transport] = Transport.WS
    # failures in a row (none with a quote) after which supervise() switches to fallback()
    fallback_after_failures: int = 2

    def __init__(self, *, stale_after_s: float) -> None:
        self.stale_after_s = stale_after_s
        self.log = logger.bind(source=self.name)
        self._rotate_reason: str | None = None

    @abstractmethod
    async def frames(self) -> AsyncIterator[Frame]:
        """Raw messages of one connection; raises when the connection fails."""
        raise NotImplementedError
        yield  # pylint: disable=unreachable  # makes this an async generator, like its overrides

    @abstractmethod
    def parse(self, raw: str | bytes, *, received_ms: int) -> list[Quote]:
        """Pure: quotes in one frame, ``[]`` for acks/heartbeats, ParseError for bad frames."""

    def set_active(self, active: bool) -> None:
        """Told by the collector whether this source currently serves; a no-op by default."""

    def retry_floor_s(self) -> float:
        """The shortest wait supervise() may take before reconnecting (keeps call budgets)."""
        return 0.0

    def fallback(self) -> Source | None:
        """A second transport for this venue that supervise() runs while this one fails.

        It yields quotes under the same `name` (with its own `transport`); None: no fallback.
        """
        return None

    def refused(self, error: BaseException) -> bool:  # pylint: disable=unused-argument
        """Whether `error` means the venue refused the connection (switch to fallback() now)."""
        return False

    async def retry_wakeup(self) -> None:
        """Returns when supervise() should retry at once instead of waiting out its backoff.

        Never by default; sources that pace their own calls (PollSource) wake it when their
        cadence changes, so a new cadence applies even to a retry wait.
        """
        await asyncio.Event().wait()

    def use_ledger(self, ledger: CallLedger) -> None:
        """Keep call counts that must outlive the process (budgets) in `ledger`; a no-op here."""

    def request_rotation(self, reason: str) -> None:
        """Ask the transport to replace its connection before the venue closes it."""
        self._rotate_reason = reason

    async def quotes(self) -> AsyncIterator[list[Quote]]:
        """Parsed quotes of one connection; a bad frame is logged, counted and skipped."""
        async with aclosing(self.frames()) as frames:
            async for frame in frames:
                if batch := self._parse_or_skip(frame):
                    yield batch

    def _parse_or_skip(self, frame: Frame) -> list[Quote]:
        try:
            return self.parse(frame.raw, received_ms=frame.received_ms)
        except RotateRequested as signal:
            self.request_rotation(str(signal))
        except ParseError as err:
            # one bad frame must not cost the connection (unlike cryptofeed): count and go on
            SOURCE_SKIPPED_FRAMES.labels(source=self.name).inc()
            self.log.warning(
                "skipped frame: {error}; raw={raw}", error=err, raw=truncate(frame.raw)
            )
        return []


class StreamSource(Source):
    """Websocket template: subclasses give `url()`, optionally `subscribe_messages()`/`prepare()`.

    The connection is rotated (new one opened and subscribed before the old one is closed) when
    parse() raises RotateRequested, after `max_connection_age_s`, or when `rotation_due()` says so.
    """

    ping_interval_s: float | None = 20.0
    ping_timeout_s: float | None = 20.0
    open_timeout_s: float = 10.0
    close_timeout_s: float = 2.0  # bounds how long a close (stop, rotation, reconnect) may wait
    max_frame_bytes: int = 1 << 20
    max_connection_age_s: float | None = None

    @abstractmethod
    def url(self) -> str:
        """The websocket URL for the current subscription."""

    def subscribe_messages(self) -> list[str]:
        """Messages sent right after connecting (subscriptions, venue heartbeats)."""
        return []

    def refused(self, error: BaseException) -> bool:
        """The server answered the upgrade with an HTTP error (403, 451, 503...) or no listener."""
        return isinstance(error, InvalidStatus | ConnectionRefusedError)

    async def prepare(self) -> None:
        """Async work before each (re)connect, e.g. symbol discovery; raise SourceError to retry."""

    async def on_close(self) -> None:
        """Async cleanup when the logical connection ends; a no-op by default."""

    async def rotation_due(self, opened_at: float) -> str | None:
        """Why the current connection should be replaced now, or None. Checked before each read."""
        reason, self._rotate_reason = self._rotate_reason, None
        if reason is None and self.max_connection_age_s is not None:
            if time.monotonic() - opened_at >= self.max_connection_age_s:
                reason = f"connection older than {self.max_connection_age_s:.0f}s"
        return reason

    async def frames(self) -> AsyncIterator[Frame]:
        """Frames of one logical connection, handing over to a fresh socket on rotation."""
        await self.prepare()
        ws = await self._open()
        opened_at = time.monotonic()
        try:
            while True:
                if (reason := await self.rotation_due(opened_at)) is not None:
                    ws = await self._handover(ws, reason)
                    opened_at = time.monotonic()
                raw = await ws.recv()
                yield Frame(raw, now_ms())
        finally:
            await ws.close()
            await self.on_close()

    async def _open(self) -> ClientConnection:
        url = self.url()
        ws = await connect(
            url,
            ping_interval=self.ping_interval_s,
            ping_timeout=self.ping_timeout_s,
            open_timeout=self.open_timeout_s,
            close_timeout=self.close_timeout_s,
            max_size=self.max_frame_bytes,
        )
        for message in self.subscribe_messages():
            await ws.send(message)
        self.log.info("connected to {url}", url=url)
        return ws

    async def _handover(self, old: ClientConnection, reason: str) -> ClientConnection:
        self.log.info("rotating connection: {reason}", reason=reason)
        try:
            await self.prepare()
            new = await self._open()
        except BaseException:
            await old.close()
            raise
        await old.close()
        return new


def raise_for_status(response: httpx.Response, *, venue_message: str = "") -> None:
    """Map HTTP errors: 429/418 to RateLimited (Retry-After honoured), others to SourceError."""
    status = response.status_code
    if status < 400:
        return
    detail = f"HTTP {status}" + (f": {venue_message}" if venue_message else "")
    if status in (418, 429):
        raise RateLimited(detail, retry_after_s=retry_after_s(response.headers))
    if status >= 500 or status == 408:
        raise Unavailable(detail)
    raise SourceError(detail)


def retry_after_s(headers: Any) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form only), or None."""
    value = headers.get("retry-after")
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None


async def first_of(*aws: Awaitable[Any]) -> set[asyncio.Future[Any]]:
    """Wait for the first of `aws` to finish; cancel and reap the rest; return the done set."""
    tasks = [asyncio.ensure_future(aw) for aw in aws]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return done
