"""Simulated CoinGecko API v3 port: `/api/v3/ping`, `/api/v3/simple/price`,
`/api/v3/simple/supported_vs_currencies`, plus the control API under `/_sim`.

Prices are JSON numbers: integers for round values, floats otherwise, as the live API sends them
(tests/fixtures/coingecko/simple_price_integers.json). Every call is recorded with its headers, so
tests can check the `x-cg-demo-api-key` / `x-cg-pro-api-key` header and the call budget. With the
`coingecko_calls_per_minute` option, calls beyond it in any 60 s get the 429 answer with
`retry-after`; the `wrong_root` fault answers error 10010/10011 in either body shape.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from ratesvc.sim.control import control_routes
from ratesvc.sim.faults import COINGECKO
from ratesvc.sim.rest import json_response, record_call, rest_fault
from ratesvc.sim.state import SUPPORTED_VS, MarketState, now_ms

RATE_LIMITED = {
    "status": {
        "error_code": 429,
        "error_message": "You've exceeded the Rate Limit. Please visit "
        "https://www.coingecko.com/en/api/pricing to subscribe to our API plans for higher "
        "rate limits.",
    }
}
UNAVAILABLE = {"status": {"error_code": 503, "error_message": "Service Unavailable"}}
# [CGD] errors-and-rate-limits; the HTTP status (400) is not documented: a sim choice
WRONG_ROOT = {
    10010: "If you are using Pro API key, please change your root URL from api.coingecko.com to "
    "pro-api.coingecko.com",
    10011: "If you are using Demo API key, please change your root URL from pro-api.coingecko.com "
    "to api.coingecko.com",
}
# Circulating supply per coin, only to make include_market_cap answers plausible.
SUPPLY = {"bitcoin": 19_700_000, "ethereum": 120_000_000, "tether": 110_000_000_000}


class PriceView:
    """What simple/price serves: live prices, or a snapshot up to `coingecko_cache_s` old."""

    def __init__(self, state: MarketState) -> None:
        self.state = state
        self._taken_at = float("-inf")
        self._coins: dict[str, dict[str, Decimal]] = {}
        self._updated: dict[str, int] = {}

    def current(self) -> tuple[dict[str, dict[str, Decimal]], dict[str, int]]:
        """Prices and last_updated_at per coin, refreshing the snapshot when it is too old."""
        cache_s = self.state.options.coingecko_cache_s
        now = time.monotonic()
        if cache_s <= 0 or now - self._taken_at >= cache_s:
            self._coins = {c: dict(t) for c, t in self.state.coins.items()}
            self._updated = dict(self.state.coins_updated_s)
            self._taken_at = now
        return self._coins, self._updated


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "false").lower() == "true"


def _number(value: Decimal, precision: str | None = None) -> int | float:
    """A JSON number as CoinGecko writes it: an integer when the value is round."""
    if precision not in (None, "full"):
        value = round(value, int(precision))
    return int(value) if value == value.to_integral_value() else float(value)


def _coin_entry(request: Request, coin: str, table: dict[str, Decimal], updated_s: int) -> dict:
    state: MarketState = request.app.state.sim
    precision = request.query_params.get("precision")
    entry: dict[str, Any] = {}
    for vs in (v.strip() for v in request.query_params["vs_currencies"].lower().split(",")):
        price = table.get(vs)
        if price is None:
            continue  # an unknown or unpriced vs currency is left out, not an error
        entry[vs] = _number(price, precision)
        if _flag(request, "include_market_cap"):
            entry[f"{vs}_market_cap"] = _number(price * SUPPLY.get(coin, 1_000_000))
        if _flag(request, "include_24hr_vol"):
            entry[f"{vs}_24h_vol"] = _number(price * 12_345)
        if _flag(request, "include_24hr_change"):
            opened = state.coins_open.get(coin, {}).get(vs)
            entry[f"{vs}_24h_change"] = float((price / opened - 1) * 100) if opened else None
    if _flag(request, "include_last_updated_at"):
        entry["last_updated_at"] = updated_s
    return entry


async def _simple_price(request: Request) -> Response:
    """GET /api/v3/simple/price with ids, vs_currencies and the include_* flags."""
    params = request.query_params
    if not params.get("vs_currencies"):
        return json_response({"error": "Missing parameter vs_currencies"}, 400)
    if not params.get("ids"):
        return json_response({"error": "Missing parameter ids"}, 400)
    precision = params.get("precision")
    if precision not in (None, "full") and not (precision.isdigit() and int(precision) <= 18):
        return json_response({"error": "Invalid value for precision"}, 400)
    coins, updated = request.app.state.view.current()
    body = {}
    for coin in dict.fromkeys(c.strip().lower() for c in params["ids"].split(",")):
        if coin in coins:  # unknown ids are silently omitted
            body[coin] = _coin_entry(request, coin, coins[coin], updated.get(coin, 0))
    return json_response(body)


def _over_minute_limit(state: MarketState) -> Response | None:
    """The 429 answer when this call is over `coingecko_calls_per_minute` (0: no limit).

    Served calls of the last 60 s are read from the call log (which keeps the last 1000).
    """
    limit = state.options.coingecko_calls_per_minute
    if not limit:
        return None
    now = now_ms()
    served = [c.ts_ms for c in state.coingecko_calls if c.status == 200 and c.ts_ms > now - 60_000]
    if len(served) < limit:
        return None
    retry_after = max(1, math.ceil((served[-limit] + 60_000 - now) / 1000))
    return json_response(RATE_LIMITED, 429, {"retry-after": str(retry_after)})


def _wrong_root(state: MarketState) -> Response | None:
    fault = state.faults.take(COINGECKO, "wrong_root")
    if fault is None:
        return None
    code = int(fault.params["code"])
    if fault.params["flat"]:
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds")
        body: dict[str, Any] = {
            "error_code": code,
            "status": {"timestamp": stamp, "error_message": WRONG_ROOT[code]},
        }
    else:
        body = {"status": {"error_code": code, "error_message": WRONG_ROOT[code]}}
    return json_response(body, 400)


def _recorded(handler: Any) -> Any:
    async def handle(request: Request) -> Response:
        state: MarketState = request.app.state.sim
        response = (
            _wrong_root(state)
            or await rest_fault(state, COINGECKO, too_many=RATE_LIMITED, down=UNAVAILABLE)
            or _over_minute_limit(state)
            or await handler(request)
        )
        record_call(state, COINGECKO, request, response.status_code)
        return response

    return handle


async def _ping(_request: Request) -> Response:
    return json_response({"gecko_says": "(V3) To the Moon!"})


async def _supported(_request: Request) -> Response:
    return json_response(list(SUPPORTED_VS))


def create_coingecko_app(state: MarketState) -> Starlette:
    """The ASGI app of the CoinGecko port, sharing `state` with the Binance port."""
    app = Starlette(
        routes=[
            Route("/api/v3/ping", _recorded(_ping)),
            Route("/api/v3/simple/price", _recorded(_simple_price)),
            Route("/api/v3/simple/supported_vs_currencies", _recorded(_supported)),
            Mount("/_sim", routes=control_routes()),
        ]
    )
    app.state.sim = state
    app.state.view = PriceView(state)
    return app
