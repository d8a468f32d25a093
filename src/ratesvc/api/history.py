"""GET /v2/history: OHLC candles of one (exchanger, direction) from Postgres.

The candles are the persister's rollups (store/candles.py), one row per bucket, read with one
index range scan (store/history.py). Prices are exact decimal strings, `t` the bucket's start
(RFC 3339 UTC, milliseconds). Buckets without a tick have no candle. Postgres unreachable or
DATABASE_URL unset: a 503 problem with Retry-After, counted and logged, never a 500.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import APIRouter, Request
from loguru import logger
from pydantic import BaseModel, Field
from starlette.responses import Response
from starlette.types import Scope

from ratesvc.api import problems
from ratesvc.api.etag import etag_for, none_match
from ratesvc.api.history_query import parse_history
from ratesvc.api.problems import Problem, problem_response
from ratesvc.api.render import CACHE_CONTROL_VALUE, PreparedResponse, rfc3339_ms
from ratesvc.decimals import plain
from ratesvc.metrics import API_HISTORY_QUERY_SECONDS, API_HISTORY_UNAVAILABLE
from ratesvc.store.candles import MAX_CANDLES, Candle, window
from ratesvc.store.history import HistoryReader, HistoryUnavailable

PATH = "/v2/history"
VERSION = "2"
UNAVAILABLE_RETRY_AFTER_S = 5


def declare_route_metrics(route: str) -> None:
    """The route's series exist (at zero) from the start, not from its first answer: a
    dashboard shows "none yet", and a rate over them starts at the first one."""
    API_HISTORY_UNAVAILABLE.labels(route)
    API_HISTORY_QUERY_SECONDS.labels(route)


def unavailable(route: str, err: HistoryUnavailable) -> Problem:
    """The 503 problem of a history read that Postgres could not answer (counted and logged)."""
    API_HISTORY_UNAVAILABLE.labels(route).inc()
    logger.warning("history unavailable on {route}: {err}", route=route, err=str(err))
    return Problem(
        problems.HISTORY_UNAVAILABLE,
        f"history cannot be read now ({err}); retry later",
        {},
        {"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)},
    )


def history_body(exchanger: str, direction: str, interval: str, candles_json: bytes) -> bytes:
    """The /v2/history body around the candle array elements Postgres rendered."""
    head = orjson.dumps({"direction": direction, "exchanger": exchanger, "interval": interval})
    return head[:-1] + b',"candles":[' + candles_json + b"]}"


def render_candles(exchanger: str, direction: str, interval: str, candles: list[Candle]) -> bytes:
    """The /v2/history body (pure): the reference the SQL rendering is held to."""
    return orjson.dumps(
        {
            "direction": direction,
            "exchanger": exchanger,
            "interval": interval,
            "candles": [
                {
                    "t": rfc3339_ms(c.bucket_ms),
                    "open": plain(c.open),
                    "high": plain(c.high),
                    "low": plain(c.low),
                    "close": plain(c.close),
                    "ticks": c.ticks,
                }
                for c in candles
            ],
        }
    )


class HistoryEndpoint:
    """Serves /v2/history from `reader`; `clock` gives now in epoch ms (the default `to`)."""

    def __init__(self, reader: HistoryReader, *, clock: Callable[[], int]) -> None:
        self.reader = reader
        self.clock = clock
        declare_route_metrics(PATH)

    async def serve(self, scope: Scope) -> Response:
        """Answer one request from its ASGI scope."""
        path = scope["path"]
        query = parse_history(scope["query_string"])
        if isinstance(query, Problem):
            return self._problem(query, path)
        to_ms = self.clock() if query.to_ms is None else query.to_ms
        if query.from_ms > to_ms:
            return self._problem(
                Problem(
                    problems.INVALID_RANGE,
                    f"`from` ({rfc3339_ms(query.from_ms)}) is after `to` ({rfc3339_ms(to_ms)})",
                    {"parameter": "from"},
                ),
                path,
            )
        first_ms, count = window(query.from_ms, to_ms, query.interval_s)
        if count > MAX_CANDLES:
            return self._problem(
                Problem(
                    problems.TOO_MANY_CANDLES,
                    f"{count} {query.interval} candles asked; at most {MAX_CANDLES} per request: "
                    "narrow from/to or take a wider interval",
                    {"max_candles": MAX_CANDLES, "requested": count},
                ),
                path,
            )
        began = time.perf_counter()
        try:
            candles = await self.reader.candles_json(
                query.exchanger, query.direction, query.interval_s, first_ms, to_ms, limit=count
            )
        except HistoryUnavailable as err:
            return self._problem(unavailable(PATH, err), path)
        API_HISTORY_QUERY_SECONDS.labels(PATH).observe(time.perf_counter() - began)
        body = history_body(query.exchanger, query.direction, query.interval, candles)
        return respond(scope, body)

    @staticmethod
    def _problem(problem: Problem, path: str) -> Response:
        return problem_response(problem, instance=path, headers={"API-Version": VERSION})


def respond(scope: Scope, body: bytes, extra: list[tuple[bytes, bytes]] | None = None) -> Response:
    """200 with `body` and its ETag, or 304 when If-None-Match matches it."""
    etag = etag_for(body)
    common = [
        (b"etag", etag.encode()),
        (b"cache-control", CACHE_CONTROL_VALUE.encode()),
        (b"api-version", VERSION.encode()),
        *(extra or []),
    ]
    tags = [v.decode("latin-1") for k, v in scope["headers"] if k == b"if-none-match"]
    if tags and none_match(tags, etag):
        return PreparedResponse(304, b"", common)
    headers = [
        *common,
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    return PreparedResponse(200, body, headers)


class CandleV2(BaseModel):
    """One bucket's candle."""

    t: str = Field(
        pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$",
        json_schema_extra={"format": "date-time"},
        description="Start of the bucket (RFC 3339 UTC, milliseconds; aligned to the interval "
        "from the UTC epoch: days start at 00:00Z)",
        examples=["2026-12-01T17:00:00.000Z"],
    )
    open: str = Field(pattern=r"^[0-9]+(\.[0-9]*[1-9])?$", description="First value in the bucket")
    high: str = Field(pattern=r"^[0-9]+(\.[0-9]*[1-9])?$", description="Highest value")
    low: str = Field(pattern=r"^[0-9]+(\.[0-9]*[1-9])?$", description="Lowest value")
    close: str = Field(pattern=r"^[0-9]+(\.[0-9]*[1-9])?$", description="Last value")
    ticks: int = Field(ge=1, description="Stored values in the bucket")


class HistoryV2(BaseModel):
    """The /v2/history body."""

    direction: str = Field(examples=["BTC-USD"])
    exchanger: str = Field(examples=["binance"])
    interval: str = Field(examples=["1m"])
    candles: list[CandleV2] = Field(max_length=MAX_CANDLES)


def router(
    endpoint: HistoryEndpoint, *, parameters: list[dict[str, Any]], responses: Any
) -> APIRouter:
    """The /v2/history route, bound to this app's endpoint."""
    api = APIRouter(prefix="/v2", tags=["v2"])

    @api.get(
        "/history",
        response_class=Response,
        responses=responses,
        openapi_extra={"parameters": parameters},
        summary="OHLC candles of one direction from one exchanger (API v2)",
    )
    async def get_history(request: Request) -> Response:
        """Candles (exact decimal strings) per 1m, 5m, 15m, 1h or 1d bucket, from Postgres."""
        return await endpoint.serve(request.scope)

    return api
