"""Control API of `ratesvc sim`: move prices, inject faults, read counters.

Served on BOTH ports under ``/_sim`` (same shared state); bodies and answers are JSON. Every POST
answers with the new state (as ``GET /_sim/state``) or ``400 {"error": "..."}``.

``GET /_sim/state``
    Prices (Binance as strings with bid/ask/status, CoinGecko as numbers with last_updated_at),
    active faults per target, options, counters and the last 20 CoinGecko calls. Counters include
    ``binance_ws_open``, ``binance_ws_attempts`` (every handshake, refused ones too),
    ``binance_ws_accepted``, ``binance_ws_refused``, ``binance_ws_dropped_on_accept``,
    ``binance_ws_frames_sent``, ``binance_ws_messages_received``,
    ``binance_ws_control_frames_received`` (client pings and pongs), ``binance_ws_rate_limited``,
    ``binance_rest_calls``, ``coingecko_calls``, ``<target>_status_<code>``,
    ``binance_rest_refused``/``coingecko_refused`` (aborted connections),
    ``binance_requests_while_banned`` (REST calls and handshakes answered 418 by a ban) and
    ``faults_<target>_<kind>``.
``GET /_sim/calls?target=coingecko|binance_rest|binance_ws``
    The last 1000 calls of that REST server (or websocket handshakes): ``ts_ms``, ``path``,
    ``query``, ``headers`` (lower case names, e.g. ``x-cg-demo-api-key``), ``status`` (101 for
    an accepted handshake).
``POST /_sim/prices``
    ``{"binance": {"BTCUSDT": "70000"}, "binance_status": {"ETHUSDT": "HALT"},
    "coingecko": {"bitcoin": {"usd": 70000, "rub": 6700000}}, "assets": {"BTC": "71000"}}``;
    every key is optional; statuses are TRADING, END_OF_DAY, HALT, BREAK and CANCEL_ONLY (only
    TRADING symbols stream). ``assets`` moves both exchanges coherently: ``<A>USDT`` on Binance and,
    on CoinGecko, ``usd``/``rub`` = price x tether's ``usd``/``rub``. A Binance change is pushed to
    subscribed websocket clients at once. The body is validated whole before anything changes.
``POST /_sim/fault``
    ``{"target": T, "kind": K, ...params}``; ``count`` limits a persistent fault to that many
    requests (or handshakes), default until cleared. Targets and kinds:

    - ``binance`` (IP-level: REST calls and websocket handshakes alike, answered as the live API
      does, see sim/binance_errors.py): ``ban`` {duration_s=120, retry_after=0, disconnect=1}
      answers 418 with the ban's end (epoch ms) in the message until it ends, a Retry-After only
      with retry_after=1, and closes open streams (1008) unless disconnect=0; ``restricted``
      {count} answers 451 (restricted location); ``waf`` {count} answers a CloudFront 403 page.
      Aliases: ``418``, ``451``, ``403``.
    - ``binance_ws``: ``disconnect`` {code=1001} closes every open connection now;
      ``refuse`` {status=503, retry_after_s, count} answers new handshakes with that HTTP status
      (and a Retry-After when given);
      ``stall`` silences data frames and request replies (ping/pong still flow);
      ``garbage`` {count=3} sends junk frames (broken JSON, unknown shapes, binary) now;
      ``shutdown`` {delay_s=1.0} sends ``serverShutdown`` (``!serverShutdown`` when combined),
      closes after delay_s; ``cut`` {max_age_s=86400} closes every connection when it reaches
      that age (older ones at once), until cleared; ``accept_and_drop`` {count} accepts the
      handshake, then closes with 1011.
    - ``binance_rest`` and ``coingecko``: ``429`` {status=429, retry_after_s (Binance 5,
      CoinGecko 60; null sends none), count}; ``5xx`` {status=503, count}; ``slow`` {delay_s=1.0,
      count}; ``refuse`` {count} aborts the TCP connection of ``/api/...`` requests (no HTTP
      answer). Binance answers carry the used-weight headers, errors included.
      Aliases: ``rest_429``, ``rest_down``/``down``/``503``, ``slowness``.
    - ``coingecko`` also: ``wrong_root`` {code=10010 (pro key on the demo root) or 10011,
      flat=0 (``{"status":{"error_code":..}}``) or 1 (``{"error_code":..,"status":{..}}``), count}
      answers 400 with that error.
``POST /_sim/clear``
    ``{}`` clears every fault, ``{"target": T}`` only that target's (also ends a pending ``cut``).
``POST /_sim/options``
    Live knobs: ``book_interval_s`` (0.1), ``ticker_interval_s`` (1.0; miniTicker, ticker, trade,
    aggTrade), 0 turns a cadence off; ``max_incoming_per_s`` (5; messages, pings and pongs all
    count), ``max_streams`` (1024, new connections), ``max_outbox`` (10000),
    ``coingecko_cache_s`` (0; the real Demo plan caches 60), ``coingecko_calls_per_minute`` (0 =
    no limit; the real Demo plan: 100 per the current docs, 30 per older ones).
    ``ping_interval_s``/``ping_timeout_s`` are fixed when the server starts (SimOptions).
``POST /_sim/reset``
    Default prices, options and no faults; counters and call logs zeroed.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ratesvc.sim.faults import BINANCE_REST, BINANCE_WS, COINGECKO, FAULT_KINDS, parse_fault
from ratesvc.sim.rest import json_response
from ratesvc.sim.state import ASSETS, SUPPORTED_VS, SYMBOL_STATUSES, MarketState

Change = Callable[[], None]


def _decimal(value: Any, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise ValueError(f"{where}: price must be a number or a decimal string")
    try:
        price = Decimal(value)
    except InvalidOperation as exc:
        raise ValueError(f"{where}: not a number: {value!r}") from exc
    if not price.is_finite() or price <= 0:
        raise ValueError(f"{where}: price must be positive")
    return price


def _binance_changes(state: MarketState, body: dict[str, Any]) -> list[Change]:
    changes: list[Change] = []
    for symbol, value in (body.get("binance") or {}).items():
        if symbol not in state.symbols:
            raise ValueError(f"binance: unknown symbol {symbol!r}; known: {sorted(state.symbols)}")
        price = _decimal(value, f"binance.{symbol}")
        changes.append(lambda s=symbol, p=price: state.set_binance_price(s, p))
    for symbol, status in (body.get("binance_status") or {}).items():
        if symbol not in state.symbols:
            raise ValueError(f"binance_status: unknown symbol {symbol!r}")
        if status not in SYMBOL_STATUSES:
            raise ValueError(f"binance_status.{symbol}: must be one of {SYMBOL_STATUSES}")
        changes.append(lambda s=symbol, v=status: state.set_binance_status(s, v))
    return changes


def _coingecko_changes(state: MarketState, body: dict[str, Any]) -> list[Change]:
    changes: list[Change] = []
    for coin, table in (body.get("coingecko") or {}).items():
        if not isinstance(table, dict):
            raise ValueError(f"coingecko.{coin}: expected an object of vs currency -> price")
        for vs, value in table.items():
            if vs not in SUPPORTED_VS:
                raise ValueError(f"coingecko.{coin}: vs currency must be one of {SUPPORTED_VS}")
            price = _decimal(value, f"coingecko.{coin}.{vs}")
            changes.append(lambda c=coin, v=vs, p=price: state.set_coingecko_price(c, v, p))
    for asset, value in (body.get("assets") or {}).items():
        if asset not in ASSETS:
            raise ValueError(f"assets: unknown asset {asset!r}; known: {sorted(ASSETS)}")
        price, (symbol, coin) = _decimal(value, f"assets.{asset}"), ASSETS[asset]
        changes.append(lambda s=symbol, p=price: state.set_binance_price(s, p))
        for vs in ("usd", "rub"):
            changes.append(
                lambda c=coin, v=vs, p=price: state.set_coingecko_price(
                    c, v, p * state.coins["tether"][v]
                )
            )
    return changes


async def _body(request: Request, *, decimals: bool = False) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw or b"{}", parse_float=Decimal if decimals else float)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    return body


def _handler(apply: Callable[[MarketState, Request], Awaitable[Any]]) -> Callable[..., Any]:
    async def handle(request: Request) -> Response:
        state: MarketState = request.app.state.sim
        try:
            answer = await apply(state, request)
        except (ValueError, KeyError) as exc:
            return json_response({"error": str(exc)}, 400)
        return json_response(state.to_json() if answer is None else answer)

    return handle


async def _state(_state_: MarketState, _request: Request) -> None:
    return None


async def _calls(state: MarketState, request: Request) -> Any:
    target = request.query_params.get("target", COINGECKO)
    if target not in (COINGECKO, BINANCE_REST, BINANCE_WS):
        raise ValueError(f"target must be {COINGECKO}, {BINANCE_REST} or {BINANCE_WS}")
    return [vars(c) for c in state.call_log(target)]


async def _prices(state: MarketState, request: Request) -> None:
    body = await _body(request, decimals=True)
    unknown = set(body) - {"binance", "binance_status", "coingecko", "assets"}
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)}")
    # Validate everything first so a bad body changes nothing.
    changes = _binance_changes(state, body) + _coingecko_changes(state, body)
    for change in changes:
        change()


async def _fault(state: MarketState, request: Request) -> None:
    state.apply_fault(parse_fault(await _body(request)))


async def _clear(state: MarketState, request: Request) -> None:
    target = (await _body(request)).get("target")
    if target is not None and target not in FAULT_KINDS:
        raise ValueError(f"target must be one of {sorted(FAULT_KINDS)}")
    state.clear_faults(target)


async def _options(state: MarketState, request: Request) -> None:
    body = await _body(request)
    if {"ping_interval_s", "ping_timeout_s"} & set(body):
        raise ValueError("ping_interval_s and ping_timeout_s are fixed at start")
    state.options.update(body)


async def _reset(state: MarketState, _request: Request) -> None:
    state.reset()


def control_routes() -> list[Route]:
    """The /_sim routes; mount them on each port's app (which holds `state.sim`)."""
    return [
        Route("/state", _handler(_state)),
        Route("/calls", _handler(_calls)),
        Route("/prices", _handler(_prices), methods=["POST"]),
        Route("/fault", _handler(_fault), methods=["POST"]),
        Route("/clear", _handler(_clear), methods=["POST"]),
        Route("/options", _handler(_options), methods=["POST"]),
        Route("/reset", _handler(_reset), methods=["POST"]),
    ]
