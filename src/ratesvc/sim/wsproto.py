"""uvicorn's websocket protocol, telling the app about the client's ping and pong frames.

Binance counts ping frames, pong frames and JSON messages alike toward its limit of 5 incoming
messages per second per connection ([BSD] web-socket-streams.md, "WebSocket Limits"). uvicorn
answers pings itself and never shows control frames to the app, so this protocol hands each one
to a FrameTap that the session finds in ``scope["extensions"][CONTROL_FRAMES]``.
"""

from __future__ import annotations

from collections.abc import Callable

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame
from websockets.http11 import Request

CONTROL_FRAMES = "ratesvc.control_frames"


class FrameTap:
    """Where the protocol reports control frames; the session sets `listener` once accepted."""

    def __init__(self) -> None:
        self.listener: Callable[[], None] | None = None

    def hit(self) -> None:
        """One ping or pong arrived from the client."""
        if self.listener is not None:
            self.listener()


class CountingWSProtocol(WebSocketsSansIOProtocol):
    """WebSocketsSansIOProtocol that reports every client ping and pong to the connection's tap."""

    tap: FrameTap | None = None

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)  # absent when the handshake was rejected
        if scope is not None:
            self.tap = FrameTap()
            scope["extensions"][CONTROL_FRAMES] = self.tap  # type: ignore[index]

    def handle_ping(self) -> None:
        if self.tap is not None:
            self.tap.hit()
        super().handle_ping()

    def handle_pong(self, event: Frame) -> None:
        if self.tap is not None:
            self.tap.hit()
        super().handle_pong(event)
