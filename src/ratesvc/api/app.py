"""The FastAPI application: wiring of mirror, routes, error handlers and metrics.

`create_app(settings)` builds the FastAPI app (the tests use it as is); workers serve
`worker_app(app)`: the request edge (X-Request-ID, access log) around the /courses fast path
(`with_fast_path(app)`) around the app; `app_from_env()` builds that for `uvicorn --factory` worker
processes (`ratesvc api --workers N`).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from prometheus_client import multiprocess
from redis.asyncio import Redis
from starlette_exporter import PrometheusMiddleware

from ratesvc.api import (
    courses,
    docs,
    health,
    history,
    problems,
    status_page,
    v1,
    v2,
    v2_sources,
    v2_stream,
)
from ratesvc.api.access import RequestEdge
from ratesvc.api.courses import CoursesEndpoint
from ratesvc.api.fastpath import FastPath, RequestMetrics
from ratesvc.api.mirror import HistoryLoader, RateMirror
from ratesvc.api.openapi_history import HISTORY_PARAMETERS, history_responses
from ratesvc.api.pointintime import PointInTimeEndpoint
from ratesvc.api.push import Pacer, PushHub
from ratesvc.api.render import RenderCache
from ratesvc.api.stream import PushFront, StreamEndpoint
from ratesvc.api.v2_sources import SourcesEndpoint
from ratesvc.bus import RateBus
from ratesvc.connections import redis_client
from ratesvc.domain import RateTick, SourceStatus
from ratesvc.settings import DEFAULT_ENV_FILE, Settings, load_settings, reveal
from ratesvc.store.history import HistoryReader

# Set by `ratesvc api --workers N` for the worker processes (see apiserver.py).
ENV_FILE_VARIABLE = "RATESVC_ENV_FILE"
MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# starlette-exporter's request metrics: ratesvc_http_requests_total{app_name="ratesvc", ...}
METRICS_APP_NAME = "ratesvc"
METRICS_PREFIX = "ratesvc_http"

DESCRIPTION = """Current exchange rates of eight directions from Binance and CoinGecko.

* Versions: `/v1/courses` (values as JSON numbers, 8 places), `/v2/courses` (exact decimal
  strings with bid/ask, legs, `as_of` and `stale` per value), or `/courses` with
  `Accept-Version: 1` or `2` (default 1). Every answer carries `API-Version`; unversioned answers
  `Vary: Accept-Version`.
* Caching: strong `ETag` from the body, `Cache-Control: no-cache`, `If-None-Match` gives 304.
* Staleness in headers on both versions: `X-Rates-Stale`, `X-Rates-As-Of`, `X-Rates-Age`; v2
  also in the body (`stale`, `as_of`; never an age, so the ETag holds while nothing changes).
* `/v2/sources`: each exchanger's state, transport, last data, and whether it serves.
* Live push: `/v2/stream` (Server-Sent Events) and `/v2/ws` (WebSocket) send the `/v2/courses`
  body at once and on each change.
* `/status`: a live page for people (rates of both exchangers, the serving one, staleness,
  source health), fed by `/v2/stream`; it loads nothing from other origins.
* History from Postgres: `/v2/history` (OHLC candles per 1m/5m/15m/1h/1d) and `at=` on
  `/v2/courses` (the values as they were at an instant); 503 while Postgres cannot answer.
* Errors are `application/problem+json` (RFC 9457) naming the allowed values.
"""


def history_loader(database_url: str) -> HistoryLoader:
    """Cold-start loader: the latest tick per (exchanger, direction) and status per source."""

    async def load() -> tuple[list[RateTick], list[SourceStatus]]:
        # Imported lazily: the API touches Postgres only for this one cold-start read.
        # pylint: disable=import-outside-toplevel
        from ratesvc.store.db import open_db
        from ratesvc.store.repository import RateRepository

        async with open_db(database_url) as db:
            repository = RateRepository(db)
            return await repository.latest_ticks(), await repository.latest_statuses()

    return load


def build_mirror(settings: Settings, redis: Redis) -> RateMirror:
    """A RateMirror following `redis`, with the history loader when DATABASE_URL is set."""
    url = reveal(settings.database_url)
    return RateMirror(
        RateBus(redis, maxlen=settings.stream_maxlen),
        preference=settings.exchanger_preference,
        hold_down_s=settings.failback_hold_down_s,
        redis_stale_after_s=settings.redis_stale_after_s,
        history=history_loader(url) if url else None,
    )


def create_app(
    settings: Settings,
    *,
    mirror: RateMirror | None = None,
    redis: Redis | None = None,
    push_pacer: Pacer | None = None,
) -> FastAPI:
    """Build the app. A given `mirror` is used as is (not started or stopped: tests own it).

    Without one, the lifespan starts a mirror on `redis` (or a client for REDIS_URL) and stops
    it, closing the client if it created it. The push hub (/v2/stream, /v2/ws) runs with the
    lifespan; `push_pacer` replaces its clock (tests).
    """
    owns_mirror = mirror is None
    owned_redis: Redis | None = None
    if mirror is None:
        if redis is None:
            url = reveal(settings.redis_url)
            if url is None:
                raise ValueError("REDIS_URL must be set for the API")
            redis = owned_redis = redis_client(
                url, sentinel_password=reveal(settings.redis_sentinel_password)
            )
        mirror = build_mirror(settings, redis)
    running = mirror
    reader = HistoryReader(reveal(settings.database_url))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if owns_mirror:
            await running.start()
        hub.start()
        try:
            yield
        finally:
            await hub.stop()
            if owns_mirror:
                await running.stop()
            await reader.close()
            if owned_redis is not None:
                await owned_redis.aclose()
            if MULTIPROC_VARIABLE in os.environ:
                multiprocess.mark_process_dead(os.getpid())

    app = FastAPI(
        title="ratesvc",
        version=v1.VERSION,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # docs.install serves /docs and /redoc without a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.mirror = mirror
    caches = {
        v1.VERSION: RenderCache(mirror, render_body=v1.render_v1, api_version=v1.VERSION),
        v2.VERSION: RenderCache(mirror, render_body=v2.render_v2, api_version=v2.VERSION),
    }
    endpoint = CoursesEndpoint(caches, clock=mirror.clock)
    app.state.courses = endpoint
    app.state.sources = SourcesEndpoint(mirror, clock=mirror.clock)
    hub = PushHub(
        caches[v2.VERSION],
        min_interval_s=settings.stream_min_interval_ms / 1000,
        heartbeat_s=settings.stream_heartbeat_s,
        slow_close_s=settings.stream_slow_close_s,
        pacer=push_pacer,
    )
    app.state.push = hub
    app.state.stream = StreamEndpoint(hub)
    app.include_router(courses.router(endpoint, default_model=v1.CoursesV1 | v2.CoursesV2))
    app.include_router(v1.router(endpoint))
    app.include_router(v2.router(endpoint))
    app.include_router(v2_sources.router(app.state.sources))
    app.include_router(v2_stream.router(app.state.stream))
    # history and `at=` answers: from Postgres, on a pool opened by the first such request
    app.state.point_in_time = PointInTimeEndpoint(
        reader,
        preference=settings.exchanger_preference,
        retention_days=settings.retention_days,
        clock=mirror.clock,
    )
    app.state.history = history.HistoryEndpoint(reader, clock=mirror.clock)
    app.include_router(
        history.router(
            app.state.history,
            parameters=HISTORY_PARAMETERS,
            responses=history_responses(history.HistoryV2),
        )
    )
    app.include_router(health.router)
    page = status_page.build_page(settings.exchanger_preference)
    app.include_router(status_page.router(status_page.StatusEndpoint(page)))
    docs.install(app)
    problems.install(app)
    # Outermost, so it also counts the 500s of CatchAllMiddleware. Paths are grouped by route
    # template and unknown paths go to one "__unknown__" label: cardinality stays fixed.
    app.add_middleware(
        PrometheusMiddleware,
        app_name=METRICS_APP_NAME,
        prefix=METRICS_PREFIX,
        group_paths=True,
        filter_unhandled_paths=False,
        group_unhandled_paths=True,
        skip_paths=["/metrics"],
    )
    return app


def with_fast_path(app: FastAPI) -> FastPath:
    """`app` behind the pure-ASGI fast path of GET /courses, /v1/courses, /v2/courses and
    /v2/sources."""
    return FastPath(
        app, endpoint=app.state.courses, metrics=request_metrics(), sources=app.state.sources
    )


def request_metrics() -> RequestMetrics:
    """The series of the PrometheusMiddleware in create_app (same app_name and prefix), for the
    routes answered in front of it (the fast path, the live push)."""
    return RequestMetrics(app_name=METRICS_APP_NAME, prefix=METRICS_PREFIX)


def worker_app(app: FastAPI) -> RequestEdge:
    """What an API worker serves: the request edge, the live push (/v2/stream, /v2/ws), the fast
    path, then `app`."""
    settings: Settings = app.state.settings
    pushed = PushFront(
        with_fast_path(app), endpoint=app.state.stream, request_metrics=request_metrics()
    )
    return RequestEdge(pushed, access_log=settings.api_access_log)


def app_from_env() -> RequestEdge:
    """`uvicorn --factory` entry: settings from the environment and RATESVC_ENV_FILE (or .env)."""
    # pylint: disable=import-outside-toplevel
    from ratesvc.logs import configure_logging

    raw = os.environ.get(ENV_FILE_VARIABLE)
    settings = load_settings(Path(raw) if raw else DEFAULT_ENV_FILE)
    configure_logging(settings.log_level, role="api")
    return worker_app(create_app(settings))
