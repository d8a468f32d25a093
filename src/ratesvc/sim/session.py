"""One Binance websocket connection: handshake faults, subscriptions, the incoming-message limit
and a single writer task that drains the session's outbox. Ping/pong frames are uvicorn's job;
sim/wsproto.py reports the client's to the session, since Binance counts them toward the limit.
"""

from __future__ import annotations

import asyncio
from collections import deque
from contextlib import suppress

import orjson
from loguru import logger
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from ratesvc.sim.binance_errors import ip_block
from ratesvc.sim.commands import handle_command
from ratesvc.sim.faults import BINANCE_WS
from ratesvc.sim.hub import BinanceHub
from ratesvc.sim.payloads import Payload, server_shutdown
from ratesvc.sim.rest import record_call
from ratesvc.sim.state import MarketState
from ratesvc.sim.wsproto import CONTROL_FRAMES

# Junk a real feed might send after a bug or a proxy hiccup: broken JSON, JSON of unknown shape,
# an empty array, an unknown event and a binary frame.
GARBAGE: tuple[str | bytes, ...] = (
    "this is not json {",
    '{"unexpected":"shape","n":[1,2,3]}',
    b"\x00\x01\xfe\xffbinary junk",
    "[]",
    '{"e":"unknownEvent","E":0}',
)
POLICY_VIOLATION = 1008
GOING_AWAY = 1001


class WsSession:
    """An accepted connection; the hub queues frames here and one writer task sends them."""

    def __init__(
        self, ws: WebSocket, hub: BinanceHub, *, streams: list[str], combined: bool
    ) -> None:
        self.ws = ws
        self.hub = hub
        self.combined = combined
        self.max_streams = hub.state.options.max_streams
        self._streams: dict[str, None] = {}
        self._outbox: deque[str | bytes] = deque()
        self._wake = asyncio.Event()
        self._close: tuple[int, str] | None = None
        self._incoming: deque[float] = deque()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self.opened_at = asyncio.get_running_loop().time()
        peer = f"{ws.client.host}:{ws.client.port}" if ws.client else "?"
        self.log = logger.bind(source="sim.binance", peer=peer)
        self.subscribe(streams)
        tap = ws.scope.get("extensions", {}).get(CONTROL_FRAMES)
        if tap is not None:
            tap.listener = self._control_frame

    @property
    def state(self) -> MarketState:
        """The shared market state."""
        return self.hub.state

    @property
    def stream_names(self) -> list[str]:
        """Subscriptions in the order they were made."""
        return list(self._streams)

    def subscribe(self, names: list[str]) -> None:
        """Add streams; the hub starts routing their events here."""
        for name in names:
            if name not in self._streams:
                self._streams[name] = None
                self.hub.index(self, name)

    def unsubscribe(self, names: list[str]) -> None:
        """Remove streams."""
        for name in names:
            if name in self._streams:
                del self._streams[name]
                self.hub.unindex(self, name)

    def send_event(self, stream: str, payload: Payload) -> None:
        """Queue one event, wrapped as {"stream", "data"} while the connection is combined."""
        body = {"stream": stream, "data": payload} if self.combined else payload
        self._queue(orjson.dumps(body).decode())

    def send_garbage(self, count: int) -> None:
        """Queue `count` junk frames, cycling through GARBAGE."""
        for i in range(count):
            self._queue(GARBAGE[i % len(GARBAGE)])

    def send_shutdown(self, delay_s: float) -> None:
        """Queue a serverShutdown event, then close after `delay_s`."""
        self.send_event("!serverShutdown", server_shutdown())
        self._timer("shutdown", delay_s, "sim: server shutdown")

    def schedule_cut(self, max_age_s: float) -> None:
        """Close this connection once it is `max_age_s` old (now, if it already is)."""
        age_s = asyncio.get_running_loop().time() - self.opened_at
        self._timer("cut", max(0.0, max_age_s - age_s), "sim: connection lifetime reached")

    def cancel_cut(self) -> None:
        """Forget a pending lifetime cut."""
        handle = self._timers.pop("cut", None)
        if handle is not None:
            handle.cancel()

    def close(self, code: int, reason: str) -> None:
        """Ask the writer to drop queued frames and send a close frame now."""
        if self._close is None:
            self._close = (code, reason)
            self._wake.set()

    async def run(self) -> None:
        """Serve until the client goes away or a close completes."""
        self.hub.add(self)
        self.state.counters["binance_ws_accepted"] += 1
        self.log.info("ws open streams={n} combined={c}", n=len(self._streams), c=self.combined)
        writer = asyncio.create_task(self._write())
        try:
            await self._read()
        finally:
            writer.cancel()
            with suppress(asyncio.CancelledError):
                await writer
            for handle in self._timers.values():
                handle.cancel()
            self.hub.discard(self)
            self.log.info("ws closed by {side}", side="server" if self._close else "client")

    def _timer(self, name: str, delay_s: float, reason: str) -> None:
        old = self._timers.pop(name, None)
        if old is not None:
            old.cancel()
        self._timers[name] = asyncio.get_running_loop().call_later(
            delay_s, self.close, GOING_AWAY, reason
        )

    def _queue(self, frame: str | bytes) -> None:
        if self._close is not None:
            return
        if len(self._outbox) >= self.state.options.max_outbox:
            # The real server drops clients that cannot keep up rather than buffer forever.
            self.close(POLICY_VIOLATION, "sim: client too slow")
            return
        self._outbox.append(frame)
        self._wake.set()

    def _control_frame(self) -> None:
        """A ping or pong from the client: it counts toward the incoming limit like a message."""
        self.state.counters["binance_ws_control_frames_received"] += 1
        self._count_incoming()

    def _count_incoming(self) -> None:
        if self._over_limit() and self._close is None:
            self.state.counters["binance_ws_rate_limited"] += 1
            self.close(POLICY_VIOLATION, "sim: too many requests")

    def _over_limit(self) -> bool:
        now = asyncio.get_running_loop().time()
        self._incoming.append(now)
        while self._incoming and self._incoming[0] <= now - 1.0:
            self._incoming.popleft()
        return len(self._incoming) > self.state.options.max_incoming_per_s

    async def _read(self) -> None:
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("text")
            data = message.get("bytes", b"") if data is None else data
            self.state.counters["binance_ws_messages_received"] += 1
            self.log.debug("ws recv {data!r}", data=data[:200])
            self._count_incoming()
            if self._close is not None or self.hub.stalled:
                continue
            self._queue(orjson.dumps(handle_command(data, self)).decode())

    async def _write(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._close is None and self._outbox:
                    frame = self._outbox.popleft()
                    if isinstance(frame, bytes):
                        await self.ws.send_bytes(frame)
                    else:
                        await self.ws.send_text(frame)
                    self.state.counters["binance_ws_frames_sent"] += 1
                    self.log.debug("ws sent {frame!r}", frame=frame[:200])
                if self._close is not None:
                    self._outbox.clear()
                    await self.ws.close(*self._close)
                    return
        except (WebSocketDisconnect, RuntimeError, OSError):
            return  # the client is gone; the reader sees the disconnect and ends the session


def _denial(status: int, msg: str, retry_after_s: float | None = None) -> Response:
    headers = {} if retry_after_s is None else {"Retry-After": str(int(retry_after_s))}
    body = orjson.dumps({"code": -1, "msg": msg})
    return Response(body, status, headers=headers, media_type="application/json")


def _denial_for(state: MarketState, streams: list[str]) -> Response | None:
    """The HTTP answer refusing this handshake, or None to accept it."""
    blocked = ip_block(state)  # a ban, a restricted location or a firewall: as for REST calls
    if blocked is not None:
        return blocked
    refuse = state.faults.take(BINANCE_WS, "refuse")
    if refuse is not None:
        status, retry_after_s = int(refuse.params["status"]), refuse.params["retry_after_s"]
        return _denial(status, "sim: refused", retry_after_s)
    if len(streams) > state.options.max_streams:
        return _denial(400, f"at most {state.options.max_streams} streams")
    return None


async def _serve(ws: WebSocket, streams: list[str], *, combined: bool) -> None:
    hub: BinanceHub = ws.app.state.hub
    state = hub.state
    state.counters["binance_ws_attempts"] += 1
    denial = _denial_for(state, streams)
    record_call(state, BINANCE_WS, ws, 101 if denial is None else denial.status_code)
    if denial is not None:
        state.counters["binance_ws_refused"] += 1
        await ws.send_denial_response(denial)
        return
    await ws.accept()
    if state.faults.take(BINANCE_WS, "accept_and_drop") is not None:
        state.counters["binance_ws_dropped_on_accept"] += 1
        await ws.close(1011, "sim: accept and drop")
        return
    await WsSession(ws, hub, streams=streams, combined=combined).run()


async def raw_endpoint(ws: WebSocket) -> None:
    """`/ws` and `/ws/<s1>/<s2>`: bare payloads."""
    streams = [s for s in ws.path_params.get("streams", "").split("/") if s]
    await _serve(ws, streams, combined=False)


async def combined_endpoint(ws: WebSocket) -> None:
    """`/stream?streams=<s1>/<s2>`: payloads wrapped as {"stream", "data"}."""
    streams = [s for s in ws.query_params.get("streams", "").split("/") if s]
    await _serve(ws, streams, combined=True)
