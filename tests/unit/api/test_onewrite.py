"""One write per small answer: the same bytes as stock uvicorn, head and body together."""

# pylint: disable=missing-function-docstring

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from ratesvc.api.onewrite import OneWriteCycle, OneWriteHttpToolsProtocol


class FakeTransport:
    """Records every write and the close, as the socket would see them."""

    def __init__(self) -> None:
        self.events: list[bytes | str] = []

    def write(self, data: bytes) -> None:
        assert "close" not in self.events, "write after close"
        self.events.append(bytes(data))

    def close(self) -> None:
        self.events.append("close")

    def wire(self) -> bytes:
        return b"".join(e for e in self.events if isinstance(e, bytes))


class FakeFlow:
    write_paused = False


def make(cls: type[RequestResponseCycle], method: str, keep_alive: bool) -> Any:
    transport = FakeTransport()
    cycle = cls(
        scope={"type": "http", "method": method, "http_version": "1.1", "path": "/"},
        transport=transport,  # type: ignore[arg-type]
        flow=FakeFlow(),  # type: ignore[arg-type]
        logger=logging.getLogger("test"),
        access_logger=logging.getLogger("test.access"),
        access_log=False,
        default_headers=[(b"date", b"Mon, 23 Nov 2026 00:00:00 GMT")],
        message_event=asyncio.Event(),
        expect_100_continue=False,
        keep_alive=keep_alive,
        on_response=lambda: None,
    )
    return cycle, transport


BODY = b'{"exchanger":"binance","courses":[]}'
ANSWERS = {
    "200": [
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"36")]},
        {"type": "http.response.body", "body": BODY},
    ],
    "304": [
        {"type": "http.response.start", "status": 304, "headers": [(b"etag", b'"abc"')]},
        {"type": "http.response.body", "body": b""},
    ],
    "streamed": [
        {"type": "http.response.start", "status": 200, "headers": []},
        {"type": "http.response.body", "body": b"part one", "more_body": True},
        {"type": "http.response.body", "body": b"part two", "more_body": True},
        {"type": "http.response.body", "body": b""},
    ],
}


async def play(cls: type[RequestResponseCycle], name: str, method: str, keep_alive: bool):
    cycle, transport = make(cls, method, keep_alive)
    for message in ANSWERS[name]:
        await cycle.send(message)
    return transport


@pytest.mark.parametrize("keep_alive", [True, False])
@pytest.mark.parametrize(
    ("name", "method"), [("200", "GET"), ("304", "GET"), ("streamed", "GET"), ("200", "HEAD")]
)
async def test_the_wire_bytes_and_the_close_are_stock_uvicorns(
    name: str, method: str, keep_alive: bool
) -> None:
    stock = await play(RequestResponseCycle, name, method, keep_alive)
    ours = await play(OneWriteCycle, name, method, keep_alive)
    assert ours.wire() == stock.wire()
    assert ("close" in ours.events) == ("close" in stock.events) == (not keep_alive)


@pytest.mark.parametrize("name", ["200", "304"])
async def test_a_small_answer_is_one_write(name: str) -> None:
    stock = await play(RequestResponseCycle, name, "GET", True)
    ours = await play(OneWriteCycle, name, "GET", True)
    assert ours.events == [stock.wire()]
    if name == "200":  # what this module exists to avoid: head and body in two writes
        assert [len(e) for e in stock.events] == [len(stock.wire()) - len(BODY), len(BODY)]


async def test_a_streamed_answer_sends_its_head_with_the_first_chunk() -> None:
    ours = await play(OneWriteCycle, "streamed", "GET", True)
    first = ours.events[0]
    assert isinstance(first, bytes)
    assert first.startswith(b"HTTP/1.1 200 OK\r\n") and first.endswith(b"part one\r\n")
    assert len(ours.events) == 3


def test_a_server_with_the_protocol_answers_through_one_write_cycles() -> None:
    seen: list[type] = []

    async def app(scope: dict, _receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        seen.append(type(send.__self__))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, http=OneWriteHttpToolsProtocol, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while data.count(b"\r\n0\r\n\r\n") < 2:
                chunk = conn.recv(65536)
                assert chunk, data
                data += chunk
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert data.count(b"HTTP/1.1 200 OK\r\n") == 2  # pipelined: both answered, in order
    assert seen == [OneWriteCycle, OneWriteCycle]
