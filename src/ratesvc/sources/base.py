"""Source templates: what a venue adapter is (Source) and the websocket transport (StreamSource).

StreamSource owns websocket connect, ping and connection rotation; PollSource (sources/poll.py)
owns the poll cadence. Every request of either (REST calls and websocket handshakes alike) passes
the venue's gate (sources/gate.py) first, and every answer passes `Source.answered()`, which turns
error answers into the adapter's errors (`error_for()`). Neither template reconnects or watches
staleness: that is sources/supervise.py, which also switches to a source's `fallback()` transport.
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
from ratesvc.errors import ParseError, RatesvcError, SourceError
from ratesvc.metrics import SOURCE_SKIPPED_FRAMES
from ratesvc.sources.answers import classify_answer
from ratesvc.sources.gate import Gate

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

    def __init__(
        self,
        *,
        stale_after_s: float,
        gate: Gate | None = None,
        http_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.stale_after_s = stale_after_s
        self.log = logger.bind(source=self.name)
        # one per venue: a fallback transport gets its owner's gate (a ban covers both)
        self.gate = gate or Gate(self.name)
        self._http_transport = http_transport
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

    def set_metered(self, metered: bool) -> None:
        """Told by the collector whether it may spend this venue's metered calls (it holds the
        lease); a no-op by default (only metered sources, CoinGecko, act on it)."""

    def retry_floor_s(self) -> float:
        """The shortest wait supervise() may take before reconnecting: until the gate opens."""
        return self.gate.remaining_s()

    def error_for(self, status: int, headers: Any, body: bytes) -> SourceError:
        """Pure: the error an HTTP error answer (REST call or websocket handshake) means.

        Adapters override it to read their venue's error bodies; see `classify_answer()`.
        """
        return classify_answer(status, headers, body)

    def observe_response(self, status: int, headers: Any) -> None:
        """Sees the status and headers of every answer, errors included; a no-op here."""

    def answered(self, status: int, headers: Any, body: bytes) -> None:
        """Every answer of the venue passes here: the adapter observes it, the gate learns.

        Raises:
            SourceError: `error_for()` of an error answer (status 400 or more).
        """
        self.observe_response(status, headers)
        if status < 400:
            self.gate.passed()
            return
        error = self.error_for(status, headers, bytes(body))
        self.gate.observe(error)
        raise error

    def http_client(self, **kwargs: Any) -> httpx.AsyncClient:
        """An HTTP client whose requests pass the gate and whose answers pass `answered()`."""
        return httpx.AsyncClient(
            transport=self._http_transport,
            event_hooks={"request": [self._before_request], "response": [self._after_response]},
            **kwargs,
        )

    async def _before_request(self, _request: httpx.Request) -> None:
        await self.gate.admit()

    async def _after_response(self, response: httpx.Response) -> None:
        # hooks run before the body is read: read it only for an error answer
        body = await response.aread() if response.status_code >= 400 else b""
        self.answered(response.status_code, response.headers, body)

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
        return isinstance(error, InvalidStatus | ConnectionRefusedError) or isinstance(
            error.__cause__, InvalidStatus
        )

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
        # a handshake is a request like any other: not while the (deployment's) gate is closed
        await self.gate.admit()
        try:
            ws = await connect(
                url,
                ping_interval=self.ping_interval_s,
                ping_timeout=self.ping_timeout_s,
                open_timeout=self.open_timeout_s,
                close_timeout=self.close_timeout_s,
                max_size=self.max_frame_bytes,
            )
        except InvalidStatus as exc:
            answer = exc.response
            try:
                self.answered(answer.status_code, answer.headers, bytes(answer.body or b""))
            except SourceError as error:
                raise error from exc  # refused() recognises a denied handshake by its cause
            raise
        if ws.response is not None:
            self.answered(ws.response.status_code, ws.response.headers, b"")
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
