"""API version 2: every value with its provenance. The wire shape of /v2/courses and its router.

`render_v2(decision)` is pure (a Decision in, the body bytes out): the live path renders it once
per snapshot version (render.RenderCache), and a point-in-time answer can render a Decision built
from stored ticks (`Decision.judged_at`) with it. Prices are exact decimal strings (`plain`: no
exponent, no insignificant trailing zeros, never rounded), times RFC 3339 UTC with milliseconds.
Nothing in the body is an age, so it changes only with the data or at the precomputed instants a
value turns stale (Snapshot.catch_up): ETag and 304 work as in v1.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from ratesvc.api.choice import Decision
from ratesvc.api.courses import CoursesEndpoint
from ratesvc.api.history_query import wants_at
from ratesvc.api.openapi import courses_parameters, courses_responses
from ratesvc.api.openapi_history import AT_PARAMETER, with_at
from ratesvc.api.render import rfc3339_ms
from ratesvc.decimals import plain
from ratesvc.domain import Leg, RateTick

VERSION = "2"
DECIMAL_PATTERN = r"^[0-9]+(\.[0-9]*[1-9])?$"
TIME_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$"
# The venue's own name of a market: Binance symbols (BTCUSDT), CoinGecko "<coin id>/<vs currency>".
_COINGECKO_IDS = {"BTC": "bitcoin", "ETH": "ethereum", "USDT": "tether", "USDC": "usd-coin"}
_CONVENTIONS = {("binance", "USDT/USD")}  # Binance's USD is USDT: a convention, not a market


def venue_symbol(source: str, symbol: str) -> str:
    """How the leg's venue names its market (`BTC/USDT` on binance -> `BTCUSDT`).

    Binance's USD-is-USDT convention (price 1, no market) keeps the form ``USDT/USD``.
    """
    base, _, quote = symbol.partition("/")
    if (source, symbol) in _CONVENTIONS:
        return symbol
    if source == "binance":
        return base + quote
    if source == "coingecko" and base in _COINGECKO_IDS:
        return f"{_COINGECKO_IDS[base]}/{quote.lower()}"
    return symbol


def _side(value: Any) -> str | None:
    return None if value is None else plain(value)


def _leg(leg: Leg) -> dict[str, Any]:
    return {
        "source": leg.source,
        "symbol": venue_symbol(leg.source, leg.symbol),
        "price": plain(leg.price),
        "bid": _side(leg.bid),
        "ask": _side(leg.ask),
        "as_of": rfc3339_ms(leg.ts_ms),
    }


def _course(tick: RateTick, stale: bool) -> dict[str, Any]:
    return {
        "direction": tick.direction,
        "value": plain(tick.value),
        "bid": _side(tick.bid),
        "ask": _side(tick.ask),
        "as_of": rfc3339_ms(tick.oldest_leg_ms),
        "stale": stale,
        "legs": [_leg(leg) for leg in tick.legs],
    }


def render_v2(decision: Decision) -> bytes:
    """The v2 body for a Decision that serves an exchanger (pure; no clock, no I/O)."""
    courses = [_course(t, decision.is_stale(i)) for i, t in enumerate(decision.ticks)]
    return orjson.dumps(
        {
            "exchanger": decision.exchanger,
            "as_of": rfc3339_ms(decision.as_of_ms),
            "stale": any(c["stale"] for c in courses),
            "courses": courses,
        }
    )


def _decimal(description: str, example: str) -> Any:
    return Field(pattern=DECIMAL_PATTERN, description=description, examples=[example])


def _book_side(description: str, example: str) -> Any:
    return Field(
        pattern=DECIMAL_PATTERN,
        description=f"{description}; null without a book",
        examples=[example],
    )


def time_field(description: str) -> Any:
    """A pydantic Field for an RFC 3339 UTC time with milliseconds."""
    return Field(
        pattern=TIME_PATTERN,
        json_schema_extra={"format": "date-time"},
        description=f"{description} (RFC 3339 UTC, milliseconds)",
        examples=["2026-12-01T17:59:10.000Z"],
    )


class LegV2(BaseModel):
    """One input of a value: where it came from, what it said, when."""

    source: str = Field(description="The venue: binance or coingecko", examples=["binance"])
    symbol: str = Field(
        description="The venue's name of the market (BTCUSDT, tether/rub); USDT/USD is Binance's "
        "USD-is-USDT convention (price 1)",
        examples=["BTCUSDT"],
    )
    price: str = _decimal("Exact decimal (a bookTicker's exact bid/ask mid)", "65000.12")
    bid: str | None = _book_side("Best bid as the venue sent it", "65000.11")
    ask: str | None = _book_side("Best ask as the venue sent it", "65000.13")
    as_of: str = time_field("When the venue quoted it")


class CourseV2(BaseModel):
    """One direction's value with its book and legs."""

    direction: str = Field(examples=["BTC-RUB"])
    value: str = _decimal("Exact decimal string, never rounded", "6207500.12")
    bid: str | None = _book_side("The bid the legs' books imply (crosses: x FX price)", "6207499.1")
    ask: str | None = _book_side("The ask the legs' books imply", "6207501.3")
    as_of: str = time_field("Its oldest leg (a cross is as old as its FX leg)")
    stale: bool = Field(description="Not fresh: a leg past its limit, or an outage since its data")
    legs: list[LegV2]


class CoursesV2(BaseModel):
    """The v2 body of /v2/courses (and /courses with Accept-Version: 2)."""

    exchanger: str = Field(examples=["binance"])
    as_of: str = time_field("The oldest course")
    stale: bool = Field(description="true when any course is stale")
    courses: list[CourseV2]


def router(endpoint: CoursesEndpoint) -> APIRouter:
    """The /v2/courses route, bound to this app's endpoint."""
    api = APIRouter(prefix="/v2", tags=["v2"])

    @api.get(
        "/courses",
        response_class=Response,
        responses=with_at(courses_responses(CoursesV2, versioned=True)),
        openapi_extra={"parameters": [*courses_parameters(versioned=True), AT_PARAMETER]},
        summary="Current rates with their provenance (API v2)",
    )
    async def get_courses_v2(request: Request) -> Response:
        """Current rates as exact decimals with bid/ask, legs, as_of and staleness (v2 shape);
        with `at`, the values as they were then (from Postgres)."""
        if wants_at(request.scope["query_string"]):
            return await request.app.state.point_in_time.serve(request.scope, unversioned=False)
        return endpoint.serve(request.scope, VERSION)

    return api
