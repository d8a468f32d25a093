"""A stand-in API for the /status page's own logic: the real page bytes, scripted data.

It serves GET /status exactly as the API builds it (status_page.build_page, same headers), its
icon (the documentation's assets), and /v2/stream and /v2/sources as DESIGN 5b fixes them
(`event: rates`, `id: <ETag>`, `data: <the /v2/courses body, one line>`; first event at once,
one per change), with bodies the test sets.
So a test can put the page in states a live stack reaches only by chance (a value stale on one
exchanger, a failover at a chosen moment) and check what a person sees. The real route is tested
against `ratesvc run --sim` in test_status_browser.py.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ratesvc.api.docs import ASSETS_PATH, assets_dir
from ratesvc.api.etag import etag_for
from ratesvc.api.status_page import StatusEndpoint
from ratesvc.embedded import free_port

CHECK_S = 0.02  # how often an open stream looks for a newer body (the fake's own loop)


class FakeApi:
    """Bodies per stream key ('' = no exchanger) and the /v2/sources entries, set by the test."""

    def __init__(self) -> None:
        self.bodies: dict[str, dict[str, Any]] = {}
        self.sources: list[dict[str, Any]] = []
        self.versions: dict[str, int] = {}
        self.connections: dict[str, int] = {}
        self.page = StatusEndpoint()
        self.port = free_port()
        self.closing = False

    @property
    def url(self) -> str:
        """The page's URL."""
        return f"http://127.0.0.1:{self.port}/status"

    def set_body(self, key: str, body: dict[str, Any]) -> None:
        """What /v2/stream (exchanger=`key`, '' for none) sends next."""
        self.bodies[key] = body
        self.versions[key] = self.versions.get(key, 0) + 1

    async def _status(self, request: Request) -> Response:
        return self.page.serve(request)

    async def _sources(self, _request: Request) -> Response:
        body = orjson.dumps({"sources": self.sources})
        return Response(body, media_type="application/json", headers={"ETag": etag_for(body)})

    async def _stream(self, request: Request) -> Response:
        key = request.query_params.get("exchanger", "")
        self.connections[key] = self.connections.get(key, 0) + 1

        async def events() -> AsyncIterator[bytes]:
            sent = -1
            while not self.closing and not await request.is_disconnected():
                version = self.versions.get(key, 0)
                if version != sent and key in self.bodies:
                    data = orjson.dumps(self.bodies[key])
                    yield b"event: rates\nid: %s\ndata: %s\n\n" % (etag_for(data).encode(), data)
                    sent = version
                await asyncio.sleep(CHECK_S)

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"}
        )

    @contextmanager
    def running(self) -> Iterator[FakeApi]:
        """Serve on 127.0.0.1:port in a thread until the context ends."""
        app = Starlette(
            routes=[
                Route("/status", self._status),
                Route("/v2/sources", self._sources),
                Route("/v2/stream", self._stream),
                Mount(ASSETS_PATH, StaticFiles(directory=assets_dir())),  # the page's icon
            ]
        )
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            ready = threading.Event()
            while not server.started and thread.is_alive():
                ready.wait(0.02)
            if not server.started:
                raise RuntimeError("the fake API did not start")
            yield self
        finally:
            self.closing = True  # ends the open event streams, so the server stops gracefully
            server.should_exit = True
            thread.join(timeout=10)


def course(direction: str, value: str, as_of: str, *, stale: bool = False) -> dict[str, Any]:
    """One /v2/courses entry (legs trimmed to one: the page reads value, as_of, stale)."""
    return {
        "direction": direction,
        "value": value,
        "bid": None,
        "ask": None,
        "as_of": as_of,
        "stale": stale,
        "legs": [{"source": "x", "symbol": "x", "price": value, "as_of": as_of}],
    }


def body(exchanger: str, values: dict[str, str], as_of: str, stale: tuple[str, ...] = ()):
    """A /v2/courses body of `exchanger` with `values`; directions in `stale` marked stale."""
    courses = [course(d, v, as_of, stale=d in stale) for d, v in values.items()]
    return {"exchanger": exchanger, "as_of": as_of, "stale": bool(stale), "courses": courses}
