"""GET /v2/sources: each exchanger's health as this worker sees it, from its snapshot alone.

Pure over the Snapshot (statuses, ticks, the freshness book): no I/O on the answer path. The body
is rendered once per snapshot version, and the version moves at the instants time alone changes
an answer (Snapshot.catch_up), so ETag/304 work as on /courses. Definitions (README mirrors them):

- `state`: ``down`` when the collector's last report for it is DOWN, or nothing was ever heard
  from it; ``stale`` when the last report is STALE, or none of its values is fresh now (legs past
  their limits, an outage reported since its newest data, or this worker has lost the Redis
  stream for longer than REDIS_STALE_AFTER_S); ``up`` otherwise: at least one fresh value.
- `transport`: ``poll`` for an exchanger that is only ever polled (CoinGecko); otherwise how its
  data comes now, ``ws`` or ``rest`` (Binance's REST fallback), from its last report (or its
  newest value); null when nothing was heard.
- `last_tick`: the newest data of its own (the newest leg from that venue among its values).
- `serving`: it is the exchanger a request without `exchanger` gets now (all eight directions).
- `reason`: why it is not up (null when up).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.responses import Response
from starlette.types import Scope

from ratesvc.api import problems
from ratesvc.api.etag import etag_for, none_match
from ratesvc.api.openapi import IF_NONE_MATCH_PARAMETER, RATE_HEADERS, ProblemDetails
from ratesvc.api.problems import PROBLEM_JSON, problem_examples, problem_response
from ratesvc.api.query import reject_query
from ratesvc.api.render import CACHE_CONTROL_VALUE, Headers, PreparedResponse, rfc3339_ms
from ratesvc.api.snapshot import Snapshot
from ratesvc.api.v2 import VERSION, time_field
from ratesvc.domain import DIRECTIONS, EXCHANGERS, SourceState, is_blocked, own_leg_ms

POLLED = frozenset({"coingecko"})  # exchangers that are only ever polled over REST


def report(snapshot: Snapshot) -> list[dict[str, Any]]:
    """Each exchanger's entry, from the snapshot as last evaluated (see the module docstring)."""
    serving = snapshot.decide(None, DIRECTIONS).exchanger
    return [_entry(snapshot, name, serving == name) for name in EXCHANGERS]


def _entry(snapshot: Snapshot, name: str, serving: bool) -> dict[str, Any]:
    status = snapshot.statuses.get(name)
    ticks = [t for (exchanger, _d), t in snapshot.ticks.items() if exchanger == name]
    fresh = any(key[0] == name for key in snapshot.book.fresh_since)
    state, reason = "up", None
    if status is not None and status.state is SourceState.DOWN:
        state, reason = "down", status.reason or "reported down by the collector"
    elif status is not None and status.state is SourceState.STALE:
        state, reason = "stale", status.reason or "reported stale by the collector"
    elif status is None and not ticks:
        state, reason = "down", "nothing heard from it yet"
    elif not fresh:
        state, reason = "stale", _why_not_fresh(snapshot, name, ticks)
    newest = max(ticks, key=own_leg_ms, default=None)
    transport = None
    if name in POLLED and (status is not None or ticks):
        transport = "poll"
    elif status is not None:
        transport = str(status.transport)
    elif newest is not None:
        transport = str(newest.transport)
    return {
        "exchanger": name,
        "state": state,
        "transport": transport,
        "last_tick": rfc3339_ms(own_leg_ms(newest)) if newest is not None else None,
        "serving": serving,
        "reason": reason,
    }


def _why_not_fresh(snapshot: Snapshot, name: str, ticks: list[Any]) -> str:
    # From the data and the evaluation only (not the clock): every worker words it alike.
    if snapshot.book.blind:
        return "this worker has lost the Redis stream: its values cannot be vouched for"
    if not ticks:
        return "no value known yet"
    if any(is_blocked(t, snapshot.statuses.get(name)) for t in ticks):
        return "no data since its last reported outage"
    return "every value is past its freshness limit"


def render_sources(entries: list[dict[str, Any]]) -> bytes:
    """The body: ``{"sources": [...]}`` in EXCHANGERS order."""
    return orjson.dumps({"sources": entries})


@dataclass(frozen=True, slots=True)
class _Prepared:
    version: int
    body: bytes
    etag: str
    full: Headers
    not_modified: Headers


class SourcesEndpoint:
    """Serves /v2/sources from a body rendered once per snapshot version."""

    def __init__(self, snapshot: Snapshot, *, clock: Callable[[], int]) -> None:
        self.snapshot = snapshot
        self.clock = clock
        self._prepared = _Prepared(-1, b"", "", [], [])

    def serve(self, scope: Scope) -> Response:
        """Answer one request from its ASGI scope (the fast path calls this too)."""
        problem = reject_query(scope["query_string"])
        if problem is not None:
            return problem_response(problem, instance=scope["path"], headers={"API-Version": "2"})
        self.snapshot.catch_up(self.clock())
        prepared = self._current()
        for name, value in scope["headers"]:
            if name == b"if-none-match" and none_match([value.decode("latin-1")], prepared.etag):
                return PreparedResponse(304, b"", list(prepared.not_modified))
        return PreparedResponse(200, prepared.body, list(prepared.full))

    def _current(self) -> _Prepared:
        version = self.snapshot.version
        if self._prepared.version != version:
            body = render_sources(report(self.snapshot))
            etag = etag_for(body)
            common: Headers = [
                (b"etag", etag.encode()),
                (b"cache-control", CACHE_CONTROL_VALUE.encode()),
                (b"api-version", VERSION.encode()),
            ]
            full = [
                *common,
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ]
            self._prepared = _Prepared(version, body, etag, full, common)
        return self._prepared


class SourceV2(BaseModel):
    """One exchanger's health as this worker sees it."""

    exchanger: str = Field(examples=["binance"])
    state: Literal["up", "down", "stale"]
    transport: Literal["ws", "rest", "poll"] | None = Field(
        description="How its data comes: ws or rest (Binance's fallback), poll (CoinGecko); "
        "null when nothing was heard from it"
    )
    last_tick: str | None = time_field("Its newest own data; null when none")
    serving: bool = Field(description="Requests without `exchanger` get this exchanger now")
    reason: str | None = Field(description="Why it is not up; null when up")


class SourcesV2(BaseModel):
    """The body of /v2/sources: one entry per exchanger."""

    sources: list[SourceV2]


def router(endpoint: SourcesEndpoint) -> APIRouter:
    """The /v2/sources route, bound to this app's endpoint."""
    api = APIRouter(prefix="/v2", tags=["v2"])
    headers = {k: RATE_HEADERS[k] for k in ("ETag", "Cache-Control", "API-Version")}
    problem = {
        "description": "A query parameter was given (this route takes none), or a bad query",
        "model": ProblemDetails,
        "content": {
            PROBLEM_JSON: {
                "examples": problem_examples([problems.UNKNOWN_PARAMETER, problems.MALFORMED_QUERY])
            }
        },
    }
    too_long = {"description": "Query string too long", "model": ProblemDetails}

    @api.get(
        "/sources",
        response_class=Response,
        responses={
            200: {"description": "Each exchanger's health", "model": SourcesV2, "headers": headers},
            304: {"description": "Not modified (If-None-Match matched)", "headers": headers},
            400: problem,
            414: too_long,
        },
        openapi_extra={"parameters": [IF_NONE_MATCH_PARAMETER]},
        summary="Health of each exchanger (API v2)",
    )
    async def get_sources(request: Request) -> Response:
        """Per exchanger: state, transport, last data, whether it serves, and why not up."""
        return endpoint.serve(request.scope)

    return api
