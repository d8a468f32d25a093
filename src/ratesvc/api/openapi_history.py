"""OpenAPI documentation of /v2/history and of `at` on /v2/courses and /courses.

As for /courses, the routes read the raw query themselves (strict validation), so parameters
are described here rather than declared in the signatures.
"""

from __future__ import annotations

from typing import Any

from ratesvc.api import problems
from ratesvc.api.history import UNAVAILABLE_RETRY_AFTER_S
from ratesvc.api.history_query import DEFAULT_INTERVAL, INSTANT_EXAMPLE, INSTANT_PATTERN
from ratesvc.api.openapi import (
    IF_NONE_MATCH_PARAMETER,
    _header,
    _problem_response,
    any_case,
)
from ratesvc.api.query import MAX_QUERY_BYTES, MAX_VALUE_CHARS
from ratesvc.api.render import RETRY_AFTER_S
from ratesvc.domain import DIRECTIONS, EXCHANGERS
from ratesvc.store.candles import INTERVALS_S, MAX_CANDLES

_INSTANT_SCHEMA = {
    "type": "string",
    "format": "date-time",
    "pattern": INSTANT_PATTERN,
    "maxLength": MAX_VALUE_CHARS,
    "examples": [INSTANT_EXAMPLE],
}


def _query(name: str, description: str, schema: dict[str, Any], *, required: bool) -> dict:
    return {
        "name": name,
        "in": "query",
        "required": required,
        "description": description,
        "schema": schema,
    }


def _one_of(allowed: tuple[str, ...]) -> dict[str, Any]:
    return {
        "type": "string",
        "pattern": any_case(allowed),
        "maxLength": MAX_VALUE_CHARS,
        "examples": list(allowed),
    }


HISTORY_PARAMETERS: list[dict[str, Any]] = [
    _query(
        "direction",
        f"One direction: {', '.join(DIRECTIONS)} (case-insensitive). Required, once.",
        _one_of(DIRECTIONS),
        required=True,
    ),
    _query(
        "exchanger",
        f"One exchanger: {', '.join(EXCHANGERS)} (case-insensitive). Required, once.",
        _one_of(EXCHANGERS),
        required=True,
    ),
    _query(
        "interval",
        f"Candle width: {', '.join(INTERVALS_S)} (default {DEFAULT_INTERVAL}). Buckets are "
        "aligned to the UTC epoch (a day starts at 00:00Z).",
        {"type": "string", "enum": list(INTERVALS_S), "default": DEFAULT_INTERVAL},
        required=False,
    ),
    _query(
        "from",
        "RFC 3339 instant with an offset: the first candle is the bucket holding it. Required.",
        _INSTANT_SCHEMA,
        required=True,
    ),
    _query(
        "to",
        f"RFC 3339 instant (default: now): candles whose bucket starts before it; not before "
        f"`from`; at most {MAX_CANDLES} buckets from `from` to `to`. Unknown parameters are "
        f"rejected with 400; a query string over {MAX_QUERY_BYTES} bytes with 414.",
        _INSTANT_SCHEMA,
        required=False,
    ),
    IF_NONE_MATCH_PARAMETER,
]

_AT_MEANING = (
    "the values as they were then, from Postgres: per direction the last value stored at or "
    "before it, `stale` judged at it. Without `exchanger`, the first exchanger in the preference "
    "order whose values were all fresh then (else the one with the newest oldest leg, marked "
    "stale). Not in the future, not older than RETENTION_DAYS. At most once."
)
AT_PARAMETER: dict[str, Any] = _query(
    "at",
    f"RFC 3339 instant with an offset (v2 only): {_AT_MEANING}",
    _INSTANT_SCHEMA,
    required=False,
)
# /courses serves both versions: `at` exists only in the v2 shape.
UNVERSIONED_AT_PARAMETER: dict[str, Any] = _query(
    "at",
    "RFC 3339 instant with an offset, only with `Accept-Version: 2` (version 1 knows no `at`: "
    f"a 400 unknown-parameter problem): {_AT_MEANING}",
    _INSTANT_SCHEMA,
    required=False,
)

_HEADERS = {
    "ETag": _header("Strong validator derived from the body bytes"),
    "Cache-Control": _header("no-cache: revalidate with If-None-Match"),
    "API-Version": _header("2"),
}
_UNAVAILABLE = {
    **_problem_response(
        "Postgres cannot answer (unreachable, failing, or DATABASE_URL unset)",
        [problems.HISTORY_UNAVAILABLE],
    ),
    "headers": {"Retry-After": _header(f"Seconds to wait ({UNAVAILABLE_RETRY_AFTER_S})")},
}
_QUERY_KINDS = [
    problems.UNKNOWN_DIRECTION,
    problems.UNKNOWN_EXCHANGER,
    problems.UNKNOWN_PARAMETER,
    problems.EMPTY_VALUE,
    problems.VALUE_TOO_LONG,
    problems.REPEATED_PARAMETER,
    problems.MALFORMED_QUERY,
    problems.INVALID_TIME,
]


def history_responses(model: Any) -> dict[int | str, Any]:
    """The documented responses of /v2/history."""
    kinds = [
        *_QUERY_KINDS,
        problems.MISSING_PARAMETER,
        problems.UNKNOWN_INTERVAL,
        problems.INVALID_RANGE,
        problems.TOO_MANY_CANDLES,
    ]
    return {
        200: {
            "description": "Candles oldest first; buckets without a stored value have none",
            "model": model,
            "headers": _HEADERS,
        },
        304: {"description": "Not modified (If-None-Match matched); no body", "headers": _HEADERS},
        400: _problem_response("Bad query input", kinds),
        414: _problem_response("Query string too long", [problems.QUERY_TOO_LONG]),
        503: _UNAVAILABLE,
    }


def with_at(responses: dict[int | str, Any]) -> dict[int | str, Any]:
    """The responses of a /courses route that also takes `at` (/v2/courses; /courses with
    `Accept-Version: 2`)."""
    out = dict(responses)
    bad = out[400]
    kinds = [problems.INVALID_TIME, problems.TIME_OUT_OF_RANGE]
    examples = bad["content"][problems.PROBLEM_JSON]["examples"]
    out[400] = _problem_response(
        bad["description"] + "; with `at`: a malformed, future or too old instant",
        [*(problems_by_slug[s] for s in examples), *kinds],
    )
    out[404] = _problem_response(
        "With `at`: nothing was stored at or before it for a requested direction",
        [problems.NO_HISTORY],
    )
    live = out[503]
    out[503] = {
        **_problem_response(
            live["description"] + "; with `at`: Postgres cannot answer",
            [problems.NO_DATA, problems.HISTORY_UNAVAILABLE],
        ),
        "headers": {
            "Retry-After": _header(
                f"Seconds to wait ({RETRY_AFTER_S}; {UNAVAILABLE_RETRY_AFTER_S} with `at`)"
            )
        },
    }
    return out


problems_by_slug = {kind.slug: kind for kind in problems.PROBLEM_TYPES}
