"""Binance wire payloads built from a BinanceSymbol: stream events and REST ticker entries.

Pure functions, no I/O. Prices and quantities are JSON strings with 8 decimals, ids and times are
integers, as the Binance Spot docs (web-socket-streams.md, rest-api.md) show them.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from ratesvc.sim.state import BinanceSymbol, now_ms

STREAM_KINDS = ("bookTicker", "miniTicker", "ticker", "trade", "aggTrade")
DAY_MS = 86_400_000
_EIGHT = Decimal("0.00000001")

Payload = dict[str, Any]


def fmt(value: Decimal) -> str:
    """Binance decimal text: always 8 decimals, never scientific notation."""
    return f"{value.quantize(_EIGHT):f}"


def _qty(rng: random.Random) -> str:
    # Real books change quantity constantly; only the quantity moves, never the price.
    return fmt(Decimal(rng.randint(1, 5_000_000)) / Decimal(100_000))


def book_ticker(s: BinanceSymbol, rng: random.Random) -> Payload:
    """`<sym>@bookTicker`: no event time; `u` grows on every event."""
    s.update_id += 1
    return {
        "u": s.update_id,
        "s": s.symbol,
        "b": fmt(s.bid),
        "B": _qty(rng),
        "a": fmt(s.ask),
        "A": _qty(rng),
    }


def _stats(s: BinanceSymbol) -> Payload:
    return {
        "c": fmt(s.price),
        "o": fmt(s.open),
        "h": fmt(s.high),
        "l": fmt(s.low),
        "v": "12345.67800000",
        "q": fmt(Decimal("12345.678") * s.price),
    }


def mini_ticker(s: BinanceSymbol, _rng: random.Random) -> Payload:
    """`<sym>@miniTicker`: 24 h rolling window stats, `c` is the last price."""
    return {"e": "24hrMiniTicker", "E": now_ms(), "s": s.symbol, **_stats(s)}


def ticker(s: BinanceSymbol, rng: random.Random) -> Payload:
    """`<sym>@ticker`: full 24 h rolling window statistics."""
    now = now_ms()
    change = s.price - s.open
    pct = (change / s.open * 100).quantize(Decimal("0.001"))
    stats = _stats(s)
    return {
        "e": "24hrTicker",
        "E": now,
        "s": s.symbol,
        "p": fmt(change),
        "P": f"{pct:f}",
        "w": fmt((s.open + s.price) / 2),
        "x": fmt(s.open),
        "c": stats["c"],
        "Q": _qty(rng),
        "b": fmt(s.bid),
        "B": _qty(rng),
        "a": fmt(s.ask),
        "A": _qty(rng),
        "o": stats["o"],
        "h": stats["h"],
        "l": stats["l"],
        "v": stats["v"],
        "q": stats["q"],
        "O": now - DAY_MS,
        "C": now,
        "F": s.trade_id - 18_150,
        "L": s.trade_id,
        "n": 18_151,
    }


def trade(s: BinanceSymbol, rng: random.Random) -> Payload:
    """`<sym>@trade`: one trade at the current price."""
    s.trade_id += 1
    now = now_ms()
    return {
        "e": "trade",
        "E": now,
        "s": s.symbol,
        "t": s.trade_id,
        "p": fmt(s.price),
        "q": _qty(rng),
        "T": now,
        "m": rng.random() < 0.5,
        "M": True,
    }


def agg_trade(s: BinanceSymbol, rng: random.Random) -> Payload:
    """`<sym>@aggTrade`: one aggregated trade at the current price."""
    s.trade_id += 1
    now = now_ms()
    return {
        "e": "aggTrade",
        "E": now,
        "s": s.symbol,
        "a": s.trade_id,
        "p": fmt(s.price),
        "q": _qty(rng),
        "f": s.trade_id,
        "l": s.trade_id,
        "T": now,
        "m": rng.random() < 0.5,
        "M": True,
    }


BUILDERS: dict[str, Callable[[BinanceSymbol, random.Random], Payload]] = {
    "bookTicker": book_ticker,
    "miniTicker": mini_ticker,
    "ticker": ticker,
    "trade": trade,
    "aggTrade": agg_trade,
}


def server_shutdown() -> Payload:
    """The raw `serverShutdown` event (added to Binance on 2026-05-08)."""
    return {"e": "serverShutdown", "E": now_ms()}


def rest_price(s: BinanceSymbol) -> Payload:
    """One entry of GET /api/v3/ticker/price."""
    return {"symbol": s.symbol, "price": fmt(s.price)}


def rest_book(s: BinanceSymbol) -> Payload:
    """One entry of GET /api/v3/ticker/bookTicker."""
    return {
        "symbol": s.symbol,
        "bidPrice": fmt(s.bid),
        "bidQty": "1.50000000",
        "askPrice": fmt(s.ask),
        "askQty": "2.25000000",
    }


ORDER_TYPES = [
    "LIMIT",
    "LIMIT_MAKER",
    "MARKET",
    "STOP_LOSS",
    "STOP_LOSS_LIMIT",
    "TAKE_PROFIT",
    "TAKE_PROFIT_LIMIT",
]
STP_MODES = ["NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH", "DECREMENT"]


def _filters(s: BinanceSymbol) -> list[Payload]:
    """The symbol's filters ([BSD] filters.md shapes); prices and quantities as strings."""
    tick = "0.01000000" if s.price >= 1 else "0.00010000"
    return [
        {"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": "1000000.00000000",
         "tickSize": tick},
        {"filterType": "LOT_SIZE", "minQty": "0.00001000", "maxQty": "9000.00000000",
         "stepSize": "0.00001000"},
        {"filterType": "ICEBERG_PARTS", "limit": 10},
        {"filterType": "MARKET_LOT_SIZE", "minQty": "0.00000000", "maxQty": "100.00000000",
         "stepSize": "0.00000000"},
        {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": True,
         "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
        {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
        {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
    ]  # fmt: skip


def symbol_info(s: BinanceSymbol) -> Payload:
    """One entry of exchangeInfo `symbols`, with the fields of the docs' example.

    Newer bodies carry `permissionSets` (a list of lists) beside an empty `permissions`.
    """
    trading = s.status == "TRADING"
    return {
        "symbol": s.symbol,
        "status": s.status,
        "baseAsset": s.base,
        "baseAssetPrecision": 8,
        "quoteAsset": s.quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": ORDER_TYPES,
        "icebergAllowed": True,
        "ocoAllowed": True,
        "otoAllowed": True,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": True,
        "cancelReplaceAllowed": True,
        "amendAllowed": True,
        "pegInstructionsAllowed": True,
        "isSpotTradingAllowed": trading,
        "isMarginTradingAllowed": False,
        "filters": _filters(s),
        "permissions": [],
        "permissionSets": [["SPOT", "MARGIN"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": STP_MODES,
    }
