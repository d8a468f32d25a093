"""Live push at the ASGI level: `GET /v2/stream` (Server-Sent Events) and `/v2/ws` (WebSocket).

Both take the query of /v2/courses (`exchanger`, `direction`; no `at`) and send its body, first at
once, then on each change (push.PushHub: coalesced, latest state wins). Each connection is one
ASGI task holding a push.Subscriber; the frames it writes are the hub's shared bytes.

Under ratesvc's worker protocol (onewrite.py) an SSE handler, once its first event is out, asks
for a DirectWriter and hands it to the hub: from then on the hub writes the events and heartbeats
itself (push.py: one write per event, slow clients skipped until they drain) and the handler only
waits for the end. Under another server, and for WebSockets, the handler writes each event:

Slow clients: uvicorn's `send` waits while the connection's write buffer is above its high-water
mark (64 KiB). Before each SSE event an empty body chunk waits for that drain (it writes nothing),
and only then is the topic's newest frame taken: a client that cannot keep up gets the newest
state when it drains, never a backlog, and holds at most one frame beyond the mark. If a drain
takes longer than STREAM_SLOW_CLOSE_S the connection is closed (counted). A WebSocket has no
empty message to wait with: the frame a blocked send holds goes out when the client drains, and
the newest follows at once (one older frame at most, never a backlog).

Request metrics: PushFront counts each stream in starlette-exporter's series
(fastpath.RequestMetrics) when its answer starts: 200 with its first event (SSE), 101 when
accepted (WebSocket), or the problem's status. Its duration there is the time to that answer, not
the stream's life (hours would drown every latency quantile of the route). Through the FastAPI
route (no PushFront) the middleware counts it instead, when it ends.

Shutdown: the worker's HTTP protocol (onewrite.py) calls the stream's STREAM_STOP_KEY hook when
uvicorn begins its graceful shutdown, so SSE responses end at once with their last chunk (the
client reconnects elsewhere, with Last-Event-ID); uvicorn itself closes WebSockets with 1012.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import suppress
from time import perf_counter
from urllib.parse import parse_qsl

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ratesvc import metrics
from ratesvc.api import problems
from ratesvc.api.fastpath import RequestMetrics
from ratesvc.api.onewrite import ABORT_MESSAGE, DIRECT_MESSAGE, STREAM_STOP_KEY
from ratesvc.api.problems import Problem, problem_body, problem_response
from ratesvc.api.push import HEARTBEAT, PushHub, Subscriber, Writer
from ratesvc.api.query import PARAMETERS, QueryParser, Selection
from ratesvc.api.render import RETRY_AFTER_S

STREAM_PATH = "/v2/stream"
WS_PATH = "/v2/ws"
API_VERSION = b"2"
SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
    (b"api-version", API_VERSION),
]
WS_POLICY_VIOLATION = 1008  # a refused query where the server cannot answer the handshake in HTTP
WS_GOING_AWAY = 1001
WS_REFUSED_STATUS = 403  # what uvicorn answers a handshake closed before its accept
ABORT_WAIT_S = 1.0
_FLUSH: Message = {"type": "http.response.body", "body": b"", "more_body": True}


def _check_live_only(raw: bytes) -> Problem | None:
    """`at` asks for the past: a stream only has the present."""
    with suppress(ValueError, UnicodeDecodeError):
        names = {name for name, _ in parse_qsl(raw.decode("latin-1"), keep_blank_values=True)}
        if "at" in names:
            return Problem(
                problems.UNKNOWN_PARAMETER,
                "`at` is not supported here: a stream sends the current values and their changes; "
                "use /v2/courses?at= for the past",
                {"parameter": "at", "allowed": list(PARAMETERS)},
            )
    return None


Answered = Callable[[int], None]


def _uncounted(status: int) -> None:
    del status


class StreamEndpoint:
    """Serves /v2/stream and /v2/ws from `hub`."""

    def __init__(self, hub: PushHub) -> None:
        self.hub = hub
        self.parse = QueryParser()

    def select(self, raw: bytes) -> Selection | Problem:
        """The Selection of a stream's query, or the Problem that refuses it (no data included)."""
        selection = _check_live_only(raw) or self.parse(raw)
        if isinstance(selection, Problem):
            return selection
        prepared = self.hub.current(selection)
        if prepared.status != 200:
            missing = ", ".join(prepared.missing) or "the requested directions together"
            return Problem(
                problems.NO_DATA,
                f"no value is known yet for {missing}; retry shortly",
                {"missing": list(prepared.missing)},
                {"Retry-After": str(RETRY_AFTER_S)},
            )
        return selection

    # ------------------------------------------------------------------ SSE
    async def sse(
        self, scope: Scope, receive: Receive, send: Send, answered: Answered = _uncounted
    ) -> None:
        """One Server-Sent Events response, until the client leaves or the worker stops.
        `answered` is told the status once the answer has started."""
        selection = self.select(scope["query_string"])
        if isinstance(selection, Problem):
            response = problem_response(
                selection, instance=scope["path"], headers={"API-Version": "2"}
            )
            await response(scope, receive, send)
            answered(selection.kind.status)
            return
        last_event_id = next(
            (v.decode("latin-1") for k, v in scope["headers"] if k == b"last-event-id"), None
        )
        hub = self.hub
        subscriber = hub.subscribe(selection, "sse")
        scope[STREAM_STOP_KEY] = subscriber.stop
        watcher = asyncio.create_task(_watch_http(receive, subscriber))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            frame = subscriber.topic.frame
            if frame is not None and frame.etag == last_event_id:
                subscriber.sent_seq = frame.seq  # the client holds it: nothing until a change
                frame = None
            await send(_FLUSH if frame is None else _chunk(frame.sse))
            answered(200)
            if frame is not None:
                hub.mark_sent(subscriber, frame)
            writer = await _direct_writer(send)
            if writer is None:
                await self._sse_loop(subscriber, send)
            else:
                await self._sse_direct(subscriber, send, writer)
        finally:
            watcher.cancel()
            hub.unsubscribe(subscriber)

    async def _sse_direct(self, subscriber: Subscriber, send: Send, writer: Writer) -> None:
        """The hub writes this stream; here only its end: the last chunk, or an abort if slow."""
        hub = self.hub
        writer.on_drain = lambda: hub.drained(subscriber)
        hub.attach(subscriber, writer)
        await hub.until_stopped(subscriber)
        if subscriber.slow:
            await _abort(send, "sse")
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _sse_loop(self, subscriber: Subscriber, send: Send) -> None:
        hub = self.hub
        while True:
            await hub.wait(subscriber)
            if subscriber.stopped:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            if not await _drained(send, hub.slow_close_s, _FLUSH):
                await _abort(send, "sse")
                return
            frame = subscriber.topic.frame
            subscriber.beats = hub.beats  # an event keeps the connection alive as well
            if frame is not None and frame.seq != subscriber.sent_seq:
                await send(_chunk(frame.sse))
                hub.mark_sent(subscriber, frame)
            else:
                await send(_chunk(HEARTBEAT))

    # ------------------------------------------------------------------ WebSocket
    async def ws(
        self, scope: Scope, receive: Receive, send: Send, answered: Answered = _uncounted
    ) -> None:
        """One WebSocket: the body as a text frame at once and on each change. `answered` is
        told the handshake's status (101, or the refusal's)."""
        if (await receive())["type"] != "websocket.connect":
            return
        selection = self.select(scope["query_string"])
        if isinstance(selection, Problem):
            answered(await _refuse(scope, send, selection))
            return
        hub = self.hub
        subscriber = hub.subscribe(selection, "ws")
        watcher = asyncio.create_task(_watch_ws(receive, subscriber))
        try:
            await send({"type": "websocket.accept", "headers": [(b"api-version", API_VERSION)]})
            answered(101)
            await self._ws_loop(subscriber, send)
        except OSError:  # uvicorn's ClientDisconnected: the client went away mid-send
            pass
        finally:
            watcher.cancel()
            hub.unsubscribe(subscriber)

    async def _ws_loop(self, subscriber: Subscriber, send: Send) -> None:
        hub = self.hub
        while not subscriber.stopped:
            frame = subscriber.topic.frame
            subscriber.beats = hub.beats  # transport pings keep a WebSocket alive
            if frame is not None and frame.seq != subscriber.sent_seq:
                message = {"type": "websocket.send", "text": frame.text}
                if not await _drained(send, hub.slow_close_s, message):
                    metrics.PUSH_SLOW_CLOSES.labels("ws").inc()
                    return  # uvicorn closes the connection when the handler returns
                hub.mark_sent(subscriber, frame)
            await hub.wait(subscriber)
        if not subscriber.closed_by_peer:  # the hub stopped it: say so
            with suppress(OSError, RuntimeError):
                await send({"type": "websocket.close", "code": WS_GOING_AWAY})


async def _direct_writer(send: Send) -> Writer | None:
    """The connection's DirectWriter (onewrite.py), or None where the server has none."""
    message: Message = {"type": DIRECT_MESSAGE}
    try:
        await send(message)
    except RuntimeError:  # another server refuses an unknown message
        return None
    return message.get("writer")


def _chunk(data: bytes) -> Message:
    return {"type": "http.response.body", "body": data, "more_body": True}


async def _drained(send: Send, limit_s: float, message: Message) -> bool:
    """Send `message` (it waits while the write buffer is full); False after `limit_s`."""
    try:
        async with asyncio.timeout(limit_s):
            await send(message)
    except TimeoutError:
        return False
    return True


async def _abort(send: Send, transport: str) -> None:
    metrics.PUSH_SLOW_CLOSES.labels(transport).inc()
    # Closes the connection now (onewrite.py, at once); another server refuses the message
    # (stock uvicorn only after waiting for the drain that will not come: hence the bound), and
    # the handler returning leaves it to close the incomplete response.
    with suppress(RuntimeError, TimeoutError):
        async with asyncio.timeout(ABORT_WAIT_S):
            await send({"type": ABORT_MESSAGE})


async def _watch_http(receive: Receive, subscriber: Subscriber) -> None:
    while True:
        if (await receive())["type"] == "http.disconnect":
            subscriber.stop()
            return


async def _watch_ws(receive: Receive, subscriber: Subscriber) -> None:
    while True:  # messages from the client are ignored: this socket only pushes
        if (await receive())["type"] == "websocket.disconnect":
            subscriber.closed_by_peer = True
            subscriber.stop()
            return


async def _refuse(scope: Scope, send: Send, problem: Problem) -> int:
    """Refuse a WebSocket handshake: an HTTP problem+json where the server can send one. Returns
    the HTTP status the client gets."""
    if "websocket.http.response" in scope.get("extensions", {}):
        body = problem_body(problem, instance=scope["path"])
        headers = [
            (b"content-type", problems.PROBLEM_JSON.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"api-version", API_VERSION),
            *((k.lower().encode(), v.encode()) for k, v in problem.headers.items()),
        ]
        status = problem.kind.status
        await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
        return status
    await send({"type": "websocket.close", "code": WS_POLICY_VIOLATION, "reason": problem.detail})
    return WS_REFUSED_STATUS


class StreamResponse(Response):
    """A Response whose call runs the SSE handler: the FastAPI route's slow path."""

    def __init__(  # pylint: disable=super-init-not-called
        self, handler: Callable[[Scope, Receive, Send], Awaitable[None]]
    ) -> None:
        self.handler = handler
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handler(scope, receive, send)


class PushFront:
    """ASGI app: GET /v2/stream and the /v2/ws WebSocket answered here, the rest by `app`."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        endpoint: StreamEndpoint,
        request_metrics: RequestMetrics | None = None,
    ) -> None:
        self.app = app
        self.endpoint = endpoint
        self.request_metrics = request_metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path")
        if path == STREAM_PATH and scope["type"] == "http" and scope["method"] == "GET":
            await self.endpoint.sse(scope, receive, send, self._counter(STREAM_PATH))
        elif path == WS_PATH and scope["type"] == "websocket":
            await self.endpoint.ws(scope, receive, send, self._counter(WS_PATH))
        else:
            await self.app(scope, receive, send)

    def _counter(self, path: str) -> Answered:
        """Counts the answer of one stream of `path` in the request metrics (module docstring)."""
        counts = self.request_metrics
        if counts is None:
            return _uncounted
        started = perf_counter()
        return lambda status: counts.record(path, status, perf_counter() - started)
