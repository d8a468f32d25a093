"""OpenAPI documentation of the /courses routes: parameters, headers and responses.

The routes read the raw query themselves (strict validation, memoised), so parameters are
described here rather than declared in the signatures.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from ratesvc.api import problems
from ratesvc.api.problems import PROBLEM_JSON, problem_examples
from ratesvc.api.query import MAX_DIRECTIONS, MAX_QUERY_BYTES, MAX_VALUE_CHARS, SUPPORTED_VERSIONS
from ratesvc.api.render import RETRY_AFTER_S
from ratesvc.domain import DIRECTIONS, EXCHANGERS


class ProblemDetails(BaseModel):
    """RFC 9457 problem details, with the allowed values where an input was rejected."""

    type: str = Field(examples=["/problems/unknown-direction"])
    title: str
    status: int
    detail: str
    instance: str | None = None
    parameter: str | None = None
    allowed: list[str] | None = None
    invalid: list[str] | None = None


def any_case(words: tuple[str, ...]) -> str:
    """A regular expression matching one of `words` in any letter case, with the surrounding
    whitespace the parser strips (JSON Schema patterns have no case-insensitive flag)."""

    def letters(word: str) -> str:
        return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in word)

    return r"^\s*(" + "|".join(letters(w) for w in words) + r")\s*$"


def _query(name: str, description: str, allowed: tuple[str, ...], *, many: bool) -> dict:
    # What the parser accepts: a known value in any case, surrounding whitespace stripped. The
    # comma-separated form of `direction` is accepted too but not expressed here (the 16-value
    # limit counts across commas, which a schema cannot say).
    item = {
        "type": "string",
        "pattern": any_case(allowed),
        "maxLength": MAX_VALUE_CHARS,
        "examples": list(allowed),
    }
    schema = {"type": "array", "items": item, "maxItems": MAX_DIRECTIONS} if many else item
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
        "style": "form",
        "explode": True,
    }


IF_NONE_MATCH_PARAMETER: dict[str, Any] = {
    "name": "If-None-Match",
    "in": "header",
    "required": False,
    "description": "ETags (list, W/ forms, or *); a match answers 304 with no body.",
    "schema": {"type": "string"},
}

COURSES_PARAMETERS: list[dict[str, Any]] = [
    _query(
        "exchanger",
        f"Serve this exchanger's values: {', '.join(EXCHANGERS)} (case-insensitive); omitted: "
        "the first fresh exchanger in the preference order, with hold-down failback. At most "
        "once.",
        EXCHANGERS,
        many=False,
    ),
    _query(
        "direction",
        f"Directions to return: {', '.join(DIRECTIONS)} (case-insensitive), repeatable "
        f"and/or comma-separated; duplicates collapse; at most {MAX_DIRECTIONS} values. Omitted: "
        f"all eight. Unknown query parameters are rejected with 400; a query string over "
        f"{MAX_QUERY_BYTES} bytes with 414.",
        DIRECTIONS,
        many=True,
    ),
    IF_NONE_MATCH_PARAMETER,
]

ACCEPT_VERSION_PARAMETER: dict[str, Any] = {
    "name": "Accept-Version",
    "in": "header",
    "required": False,
    "description": "API version for the unversioned path: "
    + ", ".join(f"{v} or v{v}" for v in SUPPORTED_VERSIONS)
    + " (case-insensitive); default 1. Ignored under /vN/. Anything else is a 406 problem.",
    "schema": {
        "type": "string",
        "default": "1",
        "pattern": "^[ \\t]*[vV]?(" + "|".join(SUPPORTED_VERSIONS) + ")[ \\t]*$",
    },
}


def _header(description: str) -> dict[str, Any]:
    return {"description": description, "schema": {"type": "string"}}


RATE_HEADERS: dict[str, Any] = {
    "ETag": _header("Strong validator derived from the body bytes"),
    "Cache-Control": _header("no-cache: revalidate with If-None-Match"),
    "API-Version": _header("The API version that served the response"),
    "X-Rates-Stale": _header("true when the values are not fresh (body unchanged in shape)"),
    "X-Rates-As-Of": _header(
        "RFC 3339 time of the oldest leg of the values served (a cross is as old as its FX leg)"
    ),
    "X-Rates-Age": _header("Only when stale: seconds since X-Rates-As-Of"),
}


def _problem_response(description: str, kinds: list[problems.ProblemType]) -> dict[str, Any]:
    return {
        "description": description,
        "model": ProblemDetails,
        "content": {PROBLEM_JSON: {"examples": problem_examples(kinds)}},
    }


def courses_responses(model: Any, *, versioned: bool) -> dict[int | str, Any]:
    """The documented responses of a /courses route."""
    headers = dict(RATE_HEADERS)
    if not versioned:
        headers["Vary"] = _header("Accept-Version")
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
    responses: dict[int | str, Any] = {
        200: {
            "description": "Rates, in the stable direction order",
            "model": model,
            "headers": headers,
        },
        304: {"description": "Not modified (If-None-Match matched); no body", "headers": headers},
        400: _problem_response("Bad query input", query_kinds),
        414: _problem_response("Query string too long", [problems.QUERY_TOO_LONG]),
        503: {
            **_problem_response("No value known yet", [problems.NO_DATA]),
            "headers": {"Retry-After": _header(f"Seconds to wait ({RETRY_AFTER_S})")},
        },
    }
    if not versioned:
        responses[406] = _problem_response(
            "Unsupported Accept-Version", [problems.UNSUPPORTED_VERSION]
        )
    return responses


def courses_parameters(*, versioned: bool) -> list[dict[str, Any]]:
    """Query and header parameters of a /courses route."""
    return COURSES_PARAMETERS if versioned else [*COURSES_PARAMETERS, ACCEPT_VERSION_PARAMETER]
