"""OpenAPI and FastAPI routes of the live push: GET /v2/stream (SSE) and the /v2/ws WebSocket.

Workers answer both in stream.PushFront, in front of the app; these routes document them in
/openapi.json and serve the same handlers when the FastAPI app runs alone.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, WebSocket
from starlette.responses import Response

from ratesvc.api import problems
from ratesvc.api.openapi import COURSES_PARAMETERS, _header, _problem_response
from ratesvc.api.render import RETRY_AFTER_S
from ratesvc.api.stream import STREAM_PATH, WS_PATH, StreamEndpoint, StreamResponse

EXAMPLE_EVENT = (
    'event: rates\nid: "3f0c9a5e0b7d4b1c8e2a6f4d9c1b7e20"\n'
    'data: {"exchanger":"binance","as_of":"2026-12-01T17:59:10.000Z","stale":false,'
    '"courses":[...]}\n\n'
)

STREAM_DESCRIPTION = f"""Server-Sent Events of the `/v2/courses` body for the same query
(`exchanger`, `direction`; `at` is refused: a stream has only the present).

Each event is `event: rates`, `id: <the body's ETag exactly as /v2/courses gives it>`,
`data: <the /v2/courses body on one line>`. The first event comes at once (none when
`Last-Event-ID` equals the current ETag); then one per change of that body, at most one per
STREAM_MIN_INTERVAL_MS (default 250 ms) with the latest state winning: a slow client gets the
newest state, never a backlog. A comment line (`:`) every STREAM_HEARTBEAT_S (15 s) keeps idle
proxies from closing the stream. When the worker stops, the response ends cleanly: reconnect
(EventSource does, with Last-Event-ID). A client that takes no data for STREAM_SLOW_CLOSE_S is
closed.

The same push over a WebSocket: `{WS_PATH}` (same query, the same bodies as text frames, same
coalescing, a server ping every STREAM_WS_PING_S, 20 s). A bad query refuses its handshake with
the HTTP problem+json answer documented here; the server sends no frame of its own.
"""


EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "One event (heartbeat comments carry no event)",
    "required": ["event", "id", "data"],
    "properties": {
        "event": {"type": "string", "enum": ["rates"]},
        "id": {
            "type": "string",
            "pattern": '^"[0-9a-f]{32}"$',
            "description": "The body's ETag, exactly as /v2/courses gives it",
        },
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"$ref": "#/components/schemas/CoursesV2"},
            "description": "The /v2/courses body for the same query, on one line",
        },
    },
}


def stream_responses() -> dict[int | str, Any]:
    """The documented answers of GET /v2/stream."""
    query_kinds = [
        problems.UNKNOWN_DIRECTION,
        problems.UNKNOWN_EXCHANGER,
        problems.UNKNOWN_PARAMETER,
        problems.EMPTY_VALUE,
        problems.VALUE_TOO_LONG,
        problems.TOO_MANY_VALUES,
        problems.REPEATED_PARAMETER,
        problems.MALFORMED_QUERY,
    ]
    return {
        200: {
            "description": "An endless event stream (text/event-stream)",
            "headers": {
                "Cache-Control": _header("no-cache"),
                "X-Accel-Buffering": _header("no: proxies must not buffer the stream"),
                "API-Version": _header("2"),
            },
            "content": {
                # OpenAPI 3.1: for an event stream, `schema` describes each event
                "text/event-stream": {"schema": EVENT_SCHEMA, "example": EXAMPLE_EVENT}
            },
        },
        400: _problem_response("Bad query input", query_kinds),
        414: _problem_response("Query string too long", [problems.QUERY_TOO_LONG]),
        503: {
            **_problem_response("No value known yet", [problems.NO_DATA]),
            "headers": {"Retry-After": _header(f"Seconds to wait ({RETRY_AFTER_S})")},
        },
    }


LAST_EVENT_ID_PARAMETER: dict[str, Any] = {
    "name": "Last-Event-ID",
    "in": "header",
    "required": False,
    "description": "The id (ETag) of the last event received; equal to the current ETag: no "
    "first event.",
    "schema": {"type": "string"},
}
STREAM_PARAMETERS = [
    *(p for p in COURSES_PARAMETERS if p["in"] == "query"),
    LAST_EVENT_ID_PARAMETER,
]


def router(endpoint: StreamEndpoint) -> APIRouter:
    """The /v2/stream and /v2/ws routes, bound to this app's stream endpoint."""
    api = APIRouter(prefix="/v2", tags=["v2"])

    @api.get(
        STREAM_PATH.removeprefix("/v2"),
        response_class=Response,
        responses=stream_responses(),
        openapi_extra={"parameters": STREAM_PARAMETERS},
        summary="Live rates as Server-Sent Events (and /v2/ws as a WebSocket)",
        description=STREAM_DESCRIPTION,
    )
    async def stream_v2(_request: Request) -> Response:
        return StreamResponse(endpoint.sse)

    @api.websocket(WS_PATH.removeprefix("/v2"))
    async def ws_v2(websocket: WebSocket) -> None:
        # pylint: disable=protected-access
        await endpoint.ws(websocket.scope, websocket._receive, websocket._send)

    return api
