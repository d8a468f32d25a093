"""uvicorn's httptools protocol with a response's head and first body chunk in one write.

Stock uvicorn writes the status line and headers to the socket on `http.response.start` and the
body on `http.response.body`: two `send()` syscalls per answer, 37 % of a worker's CPU in the
profile of docs/performance.md. Worse, a worker killed between the two leaves HAProxy with a
response it has begun to forward and cannot replay: the client gets a truncated body. Here the
head is held back and written together with the first body chunk (or alone, for a HEAD answer),
so a small answer leaves the process in one write: all of it or nothing, which HAProxy retries.

Only `RequestResponseCycle.send` changes, and only which `transport.write` calls happen: every
byte, header validation, Content-Length check and keep-alive decision stays uvicorn's own.

Three hooks serve long-lived responses (the /v2/stream SSE handler, api/stream.py): a handler that
puts a callable under STREAM_STOP_KEY in its scope is called when uvicorn begins its graceful
shutdown (stock uvicorn only waits for such a response, up to its timeout); the message
``{"type": ABORT_MESSAGE}`` closes the connection at once without an error log (a client that
stopped reading); and the message ``{"type": DIRECT_MESSAGE}`` puts a DirectWriter under its
"writer" key: the push hub's fan-out writes each event to the connection with it, one
`transport.write` per event instead of an ASGI `send` (and a task switch) per subscriber.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

STREAM_STOP_KEY = "ratesvc.stream_stop"
ABORT_MESSAGE = "ratesvc.abort"
DIRECT_MESSAGE = "ratesvc.direct"


class DirectWriter:
    """Writes body chunks of a started chunked response straight to its connection.

    What it writes is framed by http_chunk, exactly as uvicorn frames a body message; the
    response still ends through ASGI `send` (uvicorn writes the last chunk and decides on
    keep-alive). `paused` is uvicorn's own flow control: true while the connection's write buffer
    is above its high-water mark; `on_drain` (if set) is called when it falls below the low one.
    """

    __slots__ = ("_transport", "_flow", "on_drain")

    def __init__(self, transport: asyncio.Transport, flow: FlowControl) -> None:
        self._transport, self._flow = transport, flow
        self.on_drain: Callable[[], None] | None = None

    @property
    def paused(self) -> bool:
        """The write buffer is above its high-water mark (what is written now waits in it)."""
        return self._flow.write_paused

    def write(self, chunk: bytes) -> None:
        """Send `chunk` (framed by http_chunk: framed once, written to many); nothing once the
        connection is closing."""
        if not self._transport.is_closing():
            self._transport.write(chunk)


def http_chunk(data: bytes) -> bytes:
    """`data` (not empty) framed as one chunk of a chunked HTTP/1.1 body, as uvicorn frames it."""
    return b"%x\r\n%b\r\n" % (len(data), data)


class _Capture:
    """Stands in for the transport while uvicorn writes a response head: keeps the bytes."""

    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        """Keep `data` instead of sending it."""
        self.data += data


class _Prefixed:
    """Stands in for the transport during one body message: its first write carries the head."""

    __slots__ = ("transport", "head")

    def __init__(self, transport: asyncio.Transport, head: bytes) -> None:
        self.transport, self.head = transport, head

    def write(self, data: bytes) -> None:
        """Send the held head (if still held) and `data` in one write."""
        head, self.head = self.head, b""
        self.transport.write(head + data)

    def close(self) -> None:
        """Close after sending the head if nothing carried it (a HEAD answer, say)."""
        self.flush()
        self.transport.close()

    def flush(self) -> None:
        """Send the head now if no write has carried it."""
        if self.head:
            head, self.head = self.head, b""
            self.transport.write(head)


class OneWriteCycle(RequestResponseCycle):
    """A RequestResponseCycle whose head goes out with the first body write."""

    _head: bytes = b""
    direct: DirectWriter | None = None

    async def send(self, message: Any) -> None:
        transport = self.transport
        if message["type"] == DIRECT_MESSAGE:
            # Only for a chunked response whose head is out, on an open connection.
            if self.response_started and self.chunked_encoding and not self._head:
                if not self.disconnected and self.direct is None:
                    self.direct = DirectWriter(transport, self.flow)
                message["writer"] = self.direct
            return
        if message["type"] == ABORT_MESSAGE:
            # Marked disconnected first: uvicorn then neither writes nor logs the unfinished
            # response; the buffered bytes are dropped with the connection.
            self.disconnected = True
            self.keep_alive = False
            transport.abort()
            self.message_event.set()
            return
        if message["type"] == "http.response.start" and not self.response_started:
            capture = _Capture()
            self.transport = capture  # type: ignore[assignment]
            try:
                await super().send(message)
            finally:
                self.transport = transport
            self._head += capture.data
            return
        if not self._head:
            await super().send(message)
            return
        prefixed = _Prefixed(transport, self._head)
        self._head = b""
        self.transport = prefixed  # type: ignore[assignment]
        try:
            await super().send(message)
        finally:
            self.transport = transport
            prefixed.flush()  # no body write happened (HEAD, or an error before it)


class OneWriteHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol serving every request with a OneWriteCycle."""

    def shutdown(self) -> None:
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            stop = cycle.scope.get(STREAM_STOP_KEY)  # type: ignore[misc]
            if stop is not None:
                stop()  # the stream finishes its response; keep-alive off closes it then
        super().shutdown()

    def resume_writing(self) -> None:
        super().resume_writing()
        direct = getattr(self.cycle, "direct", None)
        if direct is not None and direct.on_drain is not None:
            direct.on_drain()

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if type(self.cycle) is RequestResponseCycle:  # pylint: disable=unidiomatic-typecheck
            # Same object and state; only send() changes. Its ASGI task has not run yet (it was
            # just created, or queued behind a pipelined request).
            self.cycle.__class__ = OneWriteCycle
