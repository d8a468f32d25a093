"""The fast path of `GET /courses`, `/v1/courses`, `/v2/courses` and `/v2/sources`: a pure-ASGI
front of the FastAPI app.

It answers those routes straight from the render caches through `CoursesEndpoint.serve` and
`SourcesEndpoint.serve` (the functions the FastAPI routes call, so answers are byte-identical,
problems included) and hands
every other request, lifespan included, to the app. It sits outside the app's whole middleware
stack: no routing, no middleware layers, no Request object on the hot path. The FastAPI routes
stay registered for OpenAPI and as the slow path. Request metrics are starlette-exporter's own
(same names and labels), bound once per route and status, so /metrics and the dashboards see no
difference.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from time import perf_counter

from loguru import logger
from prometheus_client import Counter, Histogram
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette_exporter import PrometheusMiddleware

from ratesvc.api.courses import CoursesEndpoint
from ratesvc.api.history_query import wants_at
from ratesvc.api.v2_sources import SourcesEndpoint

# Fast-path /courses paths -> the version their route fixes (None: negotiated from Accept-Version).
# Every fast-path path doubles as the metric's `path` label: it is the route template
# starlette-exporter uses.
ROUTES: Mapping[str, str | None] = {"/courses": None, "/v1/courses": "1", "/v2/courses": "2"}
SOURCES_PATH = "/v2/sources"
Handler = Callable[[Scope], Response]


class RequestMetrics:
    """starlette-exporter's request metrics for the fast-path routes, with children bound once.

    The metric objects are the very ones the middleware registers (it keeps them per name on its
    class), so both paths add to the same series.
    """

    def __init__(self, *, app_name: str, prefix: str, method: str = "GET") -> None:
        probe = PrometheusMiddleware(None, app_name=app_name, prefix=prefix)
        self.app_name = app_name
        self.method = method
        self.count: Counter = probe.request_count
        self.duration: Histogram = probe.request_time
        self.in_progress = probe.requests_in_progress.labels(method, app_name)
        self._children: dict[tuple[str, int], tuple[Counter, Histogram]] = {}

    def record(self, path: str, status: int, seconds: float) -> None:
        """Count one answered request and observe its duration."""
        children = self._children.get((path, status))
        if children is None:
            labels = (self.method, path, str(status), self.app_name)
            children = self.count.labels(*labels), self.duration.labels(*labels)
            self._children[(path, status)] = children
        children[0].inc()
        children[1].observe(seconds)


class FastPath:
    """ASGI app: GET on the ROUTES and SOURCES_PATH answered here, everything else by `app`.

    Args:
        app: the FastAPI app (app.with_fast_path builds this front for it).
        endpoint: the app's CoursesEndpoint (its render caches and query memo).
        metrics: where fast-path requests are counted.
        sources: the app's SourcesEndpoint (None: /v2/sources goes to `app`).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        endpoint: CoursesEndpoint,
        metrics: RequestMetrics,
        sources: SourcesEndpoint | None = None,
    ) -> None:
        self.app = app
        self.handlers: dict[str, Handler] = {
            path: partial(endpoint.serve, version=version) for path, version in ROUTES.items()
        }
        if sources is not None:
            self.handlers[SOURCES_PATH] = sources.serve
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self.handlers.get(scope.get("path"))  # type: ignore[arg-type]
        if handler is None or scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        query = scope["query_string"]
        # `at=` (also spelt %61t, a%74): a point-in-time answer from Postgres, by the app's routes
        # (api/pointintime.py). Live queries (directions, exchangers) never hold these bytes.
        if (b"at" in query or b"%6" in query or b"%7" in query) and wants_at(query):
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        begin = perf_counter()
        try:
            response = handler(scope)
        # A bug in serve: the full stack answers the same request as before (its problem+json
        # 500, its log line, its metrics); serve is pure, so calling it again is harmless.
        except Exception:  # pylint: disable=broad-exception-caught
            logger.opt(exception=True).debug("fast path failed on {path}; slow path", path=path)
            await self.app(scope, receive, send)
            return
        status = response.status_code
        in_progress = self.metrics.in_progress
        in_progress.inc()
        try:
            await send(
                {"type": "http.response.start", "status": status, "headers": response.raw_headers}
            )
            end = perf_counter()
            await send({"type": "http.response.body", "body": response.body})
        finally:
            in_progress.dec()
        self.metrics.record(path, status, end - begin)
