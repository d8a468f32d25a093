"""Simulated Binance Spot port: REST market data (ping, time, exchangeInfo, ticker/price,
ticker/bookTicker), the websocket streams (`/ws`, `/ws/<streams>`, `/stream?streams=`) and the
control API under `/_sim`. Request weights and error codes follow the Binance Spot REST docs;
the 6000-per-minute weight limit is enforced (429 with Retry-After until the next clock minute);
error answers are built in sim/binance_errors.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route, WebSocketRoute

from ratesvc.sim.binance_errors import (
    INTERNAL_ERROR,
    ip_block,
    too_many_requests,
    weight_headers,
)
from ratesvc.sim.control import control_routes
from ratesvc.sim.faults import BINANCE_REST
from ratesvc.sim.hub import BinanceHub
from ratesvc.sim.payloads import rest_book, rest_price, symbol_info
from ratesvc.sim.rest import json_response, record_call, rest_fault
from ratesvc.sim.session import combined_endpoint, raw_endpoint
from ratesvc.sim.state import SYMBOL_STATUSES, BinanceSymbol, MarketState, now_ms

WEIGHT_LIMIT_1M = 6000
RATE_LIMITS = [
    {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000},
    {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
    {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
    {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 61000},
]


class ApiError(Exception):
    """A Binance error answer: HTTP status plus the `{"code", "msg"}` body."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


def _select(state: MarketState, request: Request) -> tuple[list[BinanceSymbol], bool]:
    """Symbols named by `symbol=` or `symbols=[...]` (all when neither), and whether single."""
    symbol, symbols = request.query_params.get("symbol"), request.query_params.get("symbols")
    if symbol is not None and symbols is not None:
        raise ApiError(400, -1128, "Combination of optional parameters invalid.")
    if symbol is not None:
        names = [symbol]
    elif symbols is not None:
        try:
            names = json.loads(symbols)
        except json.JSONDecodeError:
            names = None
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise ApiError(400, -1100, "Illegal characters found in parameter 'symbols'.")
    else:
        return list(state.symbols.values()), False
    # Binance symbols are upper case; "btcusdt" is as unknown as "NOSUCH".
    if any(n not in state.symbols for n in names):
        raise ApiError(400, -1121, "Invalid symbol.")
    return [state.symbols[n] for n in dict.fromkeys(names)], symbol is not None


def _filter_status(request: Request, entries: list[BinanceSymbol], single: bool) -> list[Any]:
    """Apply `symbolStatus=`: -1220 for one mismatching symbol, silent drop for lists."""
    wanted = request.query_params.get("symbolStatus")
    if wanted is None:
        return entries
    if wanted not in SYMBOL_STATUSES:
        raise ApiError(400, -1122, "Invalid symbolStatus.")
    if single and entries[0].status != wanted:
        raise ApiError(400, -1220, "The symbol's status does not match the requested symbolStatus.")
    return [e for e in entries if e.status == wanted]


def _ticker(render: Callable[[BinanceSymbol], dict[str, Any]]) -> Callable[..., Any]:
    def build(state: MarketState, request: Request) -> Any:
        entries, single = _select(state, request)
        entries = _filter_status(request, entries, single)
        return render(entries[0]) if single else [render(e) for e in entries]

    return build


def _exchange_info(state: MarketState, request: Request) -> Any:
    query = request.query_params
    if "symbolStatus" in query and ("symbol" in query or "symbols" in query):
        # the docs: symbolStatus "cannot be used in combination with symbols or symbol"; the
        # code is a sim choice
        raise ApiError(400, -1128, "Combination of optional parameters invalid.")
    entries, single = _select(state, request)
    entries = _filter_status(request, entries, single)
    return {
        "timezone": "UTC",
        "serverTime": now_ms(),
        "rateLimits": RATE_LIMITS,
        "exchangeFilters": [],
        "symbols": [symbol_info(e) for e in entries],
    }


def _ticker_weight(request: Request) -> int:
    # 2 with one symbol, 4 with symbols=[...] or none (doubled on 2023-08-25).
    return 2 if "symbol" in request.query_params else 4


def _endpoint(weight: Callable[[Request], int], build: Callable[..., Any]) -> Callable[..., Any]:
    async def handle(request: Request) -> Response:
        state: MarketState = request.app.state.sim
        response = ip_block(state) or await _answer(state, request)
        record_call(state, BINANCE_REST, request, response.status_code)
        return response

    async def _answer(state: MarketState, request: Request) -> Response:
        used = state.weight.use(weight(request))
        headers = weight_headers(used)
        too_many = too_many_requests(request.client.host if request.client else "127.0.0.1")
        response = await rest_fault(
            state, BINANCE_REST, too_many=too_many, down=INTERNAL_ERROR, headers=headers
        )
        if response is not None:
            return response
        if used > WEIGHT_LIMIT_1M:
            retry_s = 60 - (now_ms() // 1000) % 60
            return json_response(too_many, 429, {**headers, "Retry-After": str(retry_s)})
        try:
            return json_response(build(state, request), 200, headers)
        except ApiError as exc:
            return json_response({"code": exc.code, "msg": exc.msg}, exc.status, headers)

    return handle


def binance_routes() -> list[Route | WebSocketRoute | Mount]:
    """Every route of the Binance port."""
    return [
        Route("/api/v3/ping", _endpoint(lambda _r: 1, lambda _s, _r: {})),
        Route("/api/v3/time", _endpoint(lambda _r: 1, lambda _s, _r: {"serverTime": now_ms()})),
        Route("/api/v3/exchangeInfo", _endpoint(lambda _r: 20, _exchange_info)),
        Route("/api/v3/ticker/price", _endpoint(_ticker_weight, _ticker(rest_price))),
        Route("/api/v3/ticker/bookTicker", _endpoint(_ticker_weight, _ticker(rest_book))),
        WebSocketRoute("/ws", raw_endpoint),
        WebSocketRoute("/ws/{streams:path}", raw_endpoint),
        WebSocketRoute("/stream", combined_endpoint),
        Mount("/_sim", routes=control_routes()),
    ]


def create_binance_app(state: MarketState, hub: BinanceHub) -> Starlette:
    """The ASGI app of the Binance port, sharing `state` with the other port."""
    app = Starlette(routes=binance_routes())
    app.state.sim = state
    app.state.hub = hub
    return app
