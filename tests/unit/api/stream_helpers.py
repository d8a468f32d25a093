"""Helpers of the push tests: a hand-moved pacer, a real uvicorn worker in the test's loop, an SSE
client and a WebSocket client that records the server's pings."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI
from websockets.asyncio.client import ClientConnection
from websockets.frames import Opcode

from ratesvc.api.app import worker_app
from ratesvc.apiserver import uvicorn_options
from testkit.sse import Comment, SseEvent, SseParser

WAIT_S = 10.0


class FakePacer:
    """The push hub's time, moved by the test: `sleep` returns once `advance` passes its end."""

    def __init__(self) -> None:
        self.t = 0.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []
        self._registered = asyncio.Condition()

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        entry = (self.t + seconds, future)
        self._sleepers.append(entry)
        async with self._registered:
            self._registered.notify_all()
        try:
            await future
        finally:
            self._sleepers.remove(entry)

    async def sleepers_until(self, deadline: float, count: int = 1) -> None:
        """Wait until `count` sleepers wait for exactly `deadline` (or sooner)."""

        def ready() -> bool:
            return sum(1 for end, _f in self._sleepers if end <= deadline) >= count

        async with self._registered:
            await asyncio.wait_for(self._registered.wait_for(ready), WAIT_S)

    def advance(self, seconds: float) -> None:
        """Move time forward; sleepers whose end has come return."""
        self.t += seconds
        for end, future in list(self._sleepers):
            if end <= self.t + 1e-9 and not future.done():
                future.set_result(None)


@dataclass
class Served:
    """A uvicorn server of worker_app(app) on 127.0.0.1, in the test's event loop."""

    app: FastAPI
    server: uvicorn.Server
    port: int
    task: asyncio.Task[None]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def stop(self) -> None:
        """Graceful shutdown, as SIGTERM starts it; waits for the server to finish."""
        self.server.should_exit = True
        await asyncio.wait_for(self.task, WAIT_S)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@asynccontextmanager
async def serve(app: FastAPI, **extra: Any) -> AsyncIterator[Served]:
    """Serve `app` as a worker does (uvicorn with ratesvc's options, lifespan on)."""
    port = free_port()
    settings = app.state.settings
    options = uvicorn_options(
        "127.0.0.1", port, log_level="warning", ws_ping_s=settings.stream_ws_ping_s
    )
    config = uvicorn.Config(worker_app(app), lifespan="on", **{**options, **extra})
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(WAIT_S):
        while not server.started:
            assert not task.done(), "the server did not start"
            await asyncio.sleep(0.01)
    served = Served(app, server, port, task)
    try:
        yield served
    finally:
        if not task.done():
            await served.stop()


class SseClient:
    """Reads one /v2/stream response item by item (events and heartbeat comments)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()
        self._parser = SseParser()

    async def next(self) -> SseEvent | Comment:
        """The next event or comment (waits at most WAIT_S)."""
        async with asyncio.timeout(WAIT_S):
            async for line in self._lines:
                item = self._parser.feed(line)
                if item is not None:
                    return item
        raise EOFError("the stream ended")

    async def event(self) -> SseEvent:
        """The next event, skipping heartbeats."""
        while True:
            item = await self.next()
            if isinstance(item, SseEvent):
                return item

    async def rest(self) -> list[SseEvent | Comment]:
        """Everything up to the end of the response (raises if it does not end cleanly)."""
        items: list[SseEvent | Comment] = []
        async with asyncio.timeout(WAIT_S):
            async for line in self._lines:
                item = self._parser.feed(line)
                if item is not None:
                    items.append(item)
        return items


@asynccontextmanager
async def sse(
    url: str, query: str = "", headers: dict[str, str] | None = None
) -> AsyncIterator[SseClient]:
    """An open /v2/stream response (status 200 asserted by the caller through .response)."""
    async with httpx.AsyncClient(timeout=WAIT_S) as client:
        async with client.stream("GET", f"{url}/v2/stream{query}", headers=headers) as response:
            yield SseClient(response)


class PingRecorder(ClientConnection):
    """A websockets client connection that counts the pings it receives (and answers them)."""

    pings = 0

    def process_event(self, event: Any) -> None:
        if getattr(event, "opcode", None) is Opcode.PING:
            self.pings += 1
        super().process_event(event)
