"""API version 1: the wire shape of /v1/courses and its router.

`{"exchanger": "binance", "courses": [{"direction": "BTC-USD", "value": 54000.000123}]}`; values
are JSON numbers written from the Decimal text (never through float, never with an exponent),
rounded to 8 decimal places (domain.VALUE_PLACES; ticks carry exact values, v2 shows them).
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from ratesvc.api.choice import Decision
from ratesvc.api.courses import CoursesEndpoint
from ratesvc.api.openapi import courses_parameters, courses_responses
from ratesvc.domain import quantize

VERSION = "1"


class CourseV1(BaseModel):
    """One direction's value."""

    direction: str = Field(examples=["BTC-USD"])
    value: float = Field(
        description="Exact decimal written as a JSON number (up to 8 decimals, no exponent)",
        examples=[54000.000123],
    )


class CoursesV1(BaseModel):
    """The v1 body of /courses and /v1/courses."""

    exchanger: str = Field(examples=["binance"])
    courses: list[CourseV1]


def render_v1(decision: Decision) -> bytes:
    """The v1 body for a Decision that serves an exchanger."""
    return orjson.dumps(
        {
            "exchanger": decision.exchanger,
            "courses": [
                {"direction": t.direction, "value": orjson.Fragment(format(quantize(t.value), "f"))}
                for t in decision.ticks
            ],
        }
    )


def router(endpoint: CoursesEndpoint) -> APIRouter:
    """The /v1 routes, bound to this app's endpoint."""
    api = APIRouter(prefix="/v1", tags=["v1"])

    @api.get(
        "/courses",
        response_class=Response,
        responses=courses_responses(CoursesV1, versioned=True),
        openapi_extra={"parameters": courses_parameters(versioned=True)},
        summary="Current rates (API v1)",
    )
    async def get_courses_v1(request: Request) -> Response:
        """Current rates of the requested directions from one exchanger (v1 shape)."""
        return endpoint.serve(request.scope, VERSION)

    return api
