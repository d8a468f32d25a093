"""Simulated CoinGecko API v3 port: `/api/v3/ping`, `/api/v3/simple/price`,
`/api/v3/simple/supported_vs_currencies`, plus the control API under `/_sim`.

Prices are JSON numbers. Every call is recorded with its headers, so tests can check the
`x-cg-demo-api-key` / `x-cg-pro-api-key` header and the call budget.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from ratesvc.sim.control import control_routes
from ratesvc.sim.faults import COINGECKO
from ratesvc.sim.rest import json_response, record_call, rest_fault
from ratesvc.sim.state import SUPPORTED_VS, MarketState

RATE_LIMITED = {
    "status": {
        "error_code": 429,
        "error_message": "You've exceeded the Rate Limit. Please visit "
        "https://www.coingecko.com/en/api/pricing to subscribe to our API plans for higher "
        "rate limits.",
    }
}
UNAVAILABLE = {"status": {"error_code": 503, "error_message": "Service Unavailable"}}
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


def _number(value: Decimal, precision: str | None) -> float:
    if precision is None or precision == "full":
        return float(value)
    return round(float(value), int(precision))


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
            entry[f"{vs}_market_cap"] = float(price * SUPPLY.get(coin, 1_000_000))
        if _flag(request, "include_24hr_vol"):
            entry[f"{vs}_24h_vol"] = float(price * 12_345)
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


def _recorded(handler: Any) -> Any:
    async def handle(request: Request) -> Response:
        state: MarketState = request.app.state.sim
        response = await rest_fault(state, COINGECKO, too_many=RATE_LIMITED, down=UNAVAILABLE)
        if response is None:
            response = await handler(request)
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
