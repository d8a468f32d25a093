"""RFC 9457 problem details: the problem types, their rendering, and the app-wide error handlers.

Every error the API returns is `application/problem+json`. Client mistakes are 4xx; the catch-all
500 exists only for bugs. No other module builds error bodies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import iter_route_contexts
from loguru import logger
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ratesvc.api.access import SCOPE_KEY as REQUEST_ID_SCOPE_KEY
from ratesvc.api.access import printable

PROBLEM_JSON = "application/problem+json"
# Relative references (RFC 9457 §3.1.1): resolved against the request URI; documented in README.
PROBLEM_BASE = "/problems/"


@dataclass(frozen=True, slots=True)
class ProblemType:
    """One kind of problem: a stable `type` URI slug, a fixed title and the HTTP status."""

    slug: str
    title: str
    status: int

    @property
    def uri(self) -> str:
        """The `type` member of the problem document."""
        return PROBLEM_BASE + self.slug


UNKNOWN_DIRECTION = ProblemType("unknown-direction", "Unknown direction", 400)
UNKNOWN_EXCHANGER = ProblemType("unknown-exchanger", "Unknown exchanger", 400)
UNKNOWN_PARAMETER = ProblemType("unknown-parameter", "Unknown query parameter", 400)
EMPTY_VALUE = ProblemType("empty-value", "Empty query value", 400)
VALUE_TOO_LONG = ProblemType("value-too-long", "Query value too long", 400)
TOO_MANY_VALUES = ProblemType("too-many-values", "Too many query values", 400)
REPEATED_PARAMETER = ProblemType("repeated-parameter", "Query parameter repeated", 400)
MALFORMED_QUERY = ProblemType("malformed-query", "Malformed query string", 400)
QUERY_TOO_LONG = ProblemType("query-too-long", "Query string too long", 414)
UNSUPPORTED_VERSION = ProblemType("unsupported-version", "Unsupported API version", 406)
NOT_FOUND = ProblemType("not-found", "Not found", 404)
METHOD_NOT_ALLOWED = ProblemType("method-not-allowed", "Method not allowed", 405)
VALIDATION_ERROR = ProblemType("validation-error", "Invalid request", 422)
NO_DATA = ProblemType("no-data", "No rates known yet", 503)
INTERNAL_ERROR = ProblemType("internal-error", "Internal server error", 500)

# History (/v2/history) and point-in-time (`at=`) answers, read from Postgres.
MISSING_PARAMETER = ProblemType("missing-parameter", "Required query parameter missing", 400)
INVALID_TIME = ProblemType("invalid-time", "Malformed instant", 400)
UNKNOWN_INTERVAL = ProblemType("unknown-interval", "Unknown interval", 400)
INVALID_RANGE = ProblemType("invalid-range", "Time range reversed", 400)
TOO_MANY_CANDLES = ProblemType("too-many-candles", "Too many candles", 400)
TIME_OUT_OF_RANGE = ProblemType("time-out-of-range", "Instant outside the stored history", 400)
NO_HISTORY = ProblemType("no-history", "Nothing known at that instant", 404)
HISTORY_UNAVAILABLE = ProblemType("history-unavailable", "History unavailable", 503)
HISTORY_PROBLEM_TYPES: tuple[ProblemType, ...] = (
    MISSING_PARAMETER,
    INVALID_TIME,
    UNKNOWN_INTERVAL,
    INVALID_RANGE,
    TOO_MANY_CANDLES,
    TIME_OUT_OF_RANGE,
    NO_HISTORY,
    HISTORY_UNAVAILABLE,
)

PROBLEM_TYPES: tuple[ProblemType, ...] = (
    UNKNOWN_DIRECTION,
    UNKNOWN_EXCHANGER,
    UNKNOWN_PARAMETER,
    EMPTY_VALUE,
    VALUE_TOO_LONG,
    TOO_MANY_VALUES,
    REPEATED_PARAMETER,
    MALFORMED_QUERY,
    QUERY_TOO_LONG,
    UNSUPPORTED_VERSION,
    NOT_FOUND,
    METHOD_NOT_ALLOWED,
    VALIDATION_ERROR,
    NO_DATA,
    INTERNAL_ERROR,
    *HISTORY_PROBLEM_TYPES,
)

_BY_STATUS = {p.status: p for p in (NOT_FOUND, METHOD_NOT_ALLOWED, VALIDATION_ERROR, NO_DATA)}


@dataclass(frozen=True, slots=True)
class Problem:
    """One occurrence of a problem, without the request-specific `instance`."""

    kind: ProblemType
    detail: str
    extensions: Mapping[str, Any] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)


class ProblemError(Exception):
    """Raise anywhere in a request to answer with `problem`."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.detail)
        self.problem = problem


def problem_body(problem: Problem, *, instance: str | None) -> bytes:
    """The JSON document: type, title, status, detail, instance, then the extensions."""
    doc: dict[str, Any] = {
        "type": problem.kind.uri,
        "title": problem.kind.title,
        "status": problem.kind.status,
        "detail": problem.detail,
    }
    if instance is not None:
        doc["instance"] = instance
    doc.update(problem.extensions)
    return orjson.dumps(doc, default=str)


def problem_response(
    problem: Problem, *, instance: str | None, headers: Mapping[str, str] | None = None
) -> Response:
    """A problem+json response; `headers` add to the problem's own (Retry-After, Allow, ...)."""
    merged = {**problem.headers, **(headers or {})}
    return Response(
        problem_body(problem, instance=instance),
        status_code=problem.kind.status,
        headers=merged,
        media_type=PROBLEM_JSON,
    )


def shorten(value: str, limit: int = 64) -> str:
    """Echo user input safely bounded in error details."""
    return value if len(value) <= limit else value[:limit] + "..."


def public_paths(app: Any) -> list[str]:
    """Paths of the routes users may call (the `allowed` list of a 404)."""
    paths = {getattr(r, "path", None) for r in iter_route_contexts(app.routes)}
    return sorted(p for p in paths if p and not p.endswith("oauth2-redirect"))


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    kind = _BY_STATUS.get(exc.status_code)
    headers = dict(exc.headers or {})
    if exc.status_code == 404:
        problem = Problem(
            NOT_FOUND,
            f"no route for {shorten(request.url.path)}",
            {"allowed": public_paths(request.app)},
        )
    elif exc.status_code == 405:
        allowed = [m.strip() for m in headers.get("Allow", "GET").split(",") if m.strip()]
        problem = Problem(
            METHOD_NOT_ALLOWED,
            f"{request.method} is not allowed on {shorten(request.url.path)}",
            {"allowed": allowed},
        )
    else:
        generic = kind or ProblemType("http-error", "HTTP error", exc.status_code)
        problem = Problem(generic, str(exc.detail))
    return problem_response(problem, instance=request.url.path, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in exc.errors()]
    problem = Problem(VALIDATION_ERROR, "the request is not valid", {"errors": errors})
    return problem_response(problem, instance=request.url.path)


async def _problem_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProblemError)
    return problem_response(exc.problem, instance=request.url.path)


class CatchAllMiddleware:
    """Turn an unhandled exception into a problem+json 500 and one ERROR log line.

    Starlette's own 500 handler re-raises after answering (so servers log twice); this one answers
    and stops, unless the response already started (then there is nothing left to send).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        # The one broad except of the request path: a bug must answer 500, never drop the socket.
        try:
            await self.app(scope, receive, tracking_send)
        except Exception:  # pylint: disable=broad-exception-caught
            logger.exception(
                "unhandled error on {path} (request_id={request_id})",
                path=printable(scope.get("path", "")),  # decoded: may hold a line break
                request_id=scope.get(REQUEST_ID_SCOPE_KEY, "-"),
            )
            if started:
                raise
            problem = Problem(INTERNAL_ERROR, "an unexpected error occurred; it was logged")
            await problem_response(problem, instance=scope.get("path"))(scope, receive, send)


def install(app: FastAPI) -> None:
    """Register the handlers that make every error problem+json (call before adding metrics)."""
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ProblemError, _problem_error)
    app.add_middleware(CatchAllMiddleware)


def problem_examples(kinds: Iterable[ProblemType]) -> dict[str, Any]:
    """OpenAPI `examples` for a problem response, one per kind."""
    return {
        k.slug: {
            "summary": k.title,
            "value": {"type": k.uri, "title": k.title, "status": k.status, "detail": "..."},
        }
        for k in kinds
    }
