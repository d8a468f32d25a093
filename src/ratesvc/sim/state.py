"""Shared market state of the simulator: prices, symbol statuses, options, counters and call logs.

Owns no sockets: servers read it, the control API writes it, and listeners hear about changes.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ratesvc.sim.faults import Fault, FaultBook
from ratesvc.sim.options import SimOptions

TRADING = "TRADING"
BREAK = "BREAK"
# [BSD] enums.md: symbol statuses (CANCEL_ONLY added 2026-07); only TRADING has live prices
SYMBOL_STATUSES = ("TRADING", "END_OF_DAY", "HALT", "BREAK", "CANCEL_ONLY")

# symbol -> (base, quote, status, default price, half spread). RUB pairs were delisted on
# 2024-01-30 but stay in exchangeInfo with a frozen price, as the real API keeps them.
BINANCE_SYMBOLS: dict[str, tuple[str, str, str, str, str]] = {
    "BTCUSDT": ("BTC", "USDT", TRADING, "65000", "0.01"),
    "ETHUSDT": ("ETH", "USDT", TRADING, "3200", "0.01"),
    "USDCUSDT": ("USDC", "USDT", TRADING, "0.9997", "0.0001"),
    "BTCRUB": ("BTC", "RUB", BREAK, "3950000", "1"),
    "ETHRUB": ("ETH", "RUB", BREAK, "210000", "1"),
    "USDTRUB": ("USDT", "RUB", BREAK, "90.5", "0.01"),
}

# CoinGecko's USDT rates; every other coin is derived from its Binance USDT price so the
# defaults are coherent: coin.rub == coin/USDT * tether.rub and coin.usd == coin/USDT * tether.usd.
TETHER_USD = Decimal("1.0003")
TETHER_RUB = Decimal("95.5")
COINGECKO_COINS: dict[str, str] = {
    "bitcoin": "BTCUSDT",
    "ethereum": "ETHUSDT",
    "usd-coin": "USDCUSDT",
    "tether": "",
}
# Asset code -> (Binance symbol, CoinGecko id), for coherent moves on both exchanges.
ASSETS: dict[str, tuple[str, str]] = {
    "BTC": ("BTCUSDT", "bitcoin"),
    "ETH": ("ETHUSDT", "ethereum"),
    "USDC": ("USDCUSDT", "usd-coin"),
}
SUPPORTED_VS = ("usd", "rub", "eur", "btc", "eth")
CALL_LOG_SIZE = 1000


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


@dataclass
class BinanceSymbol:
    """One Binance market: its listing, current price and the 24 h statistics the streams need."""

    symbol: str
    base: str
    quote: str
    status: str
    price: Decimal
    half_spread: Decimal
    open: Decimal
    high: Decimal
    low: Decimal
    update_id: int = 400_900_000
    trade_id: int = 1_000_000

    @property
    def bid(self) -> Decimal:
        """Best bid: price minus half the spread, so the mid is exactly the price."""
        return self.price - self.half_spread

    @property
    def ask(self) -> Decimal:
        """Best ask: price plus half the spread."""
        return self.price + self.half_spread


@dataclass
class CallRecord:
    """One HTTP request as the simulator saw it."""

    ts_ms: int
    path: str
    query: str
    headers: dict[str, str]
    status: int = 200


@dataclass
class WeightMeter:
    """Binance request weight used in the current clock minute (X-MBX-USED-WEIGHT-1M)."""

    minute: int = 0
    used: int = 0

    def use(self, weight: int) -> int:
        """Add `weight` to the current minute and return the minute's total."""
        minute = now_ms() // 60_000
        if minute != self.minute:
            self.minute, self.used = minute, 0
        self.used += weight
        return self.used


@dataclass
class MarketState:
    """Everything the three servers share; listeners are called synchronously on change."""

    options: SimOptions = field(default_factory=SimOptions)
    symbols: dict[str, BinanceSymbol] = field(default_factory=dict)
    coins: dict[str, dict[str, Decimal]] = field(default_factory=dict)
    coins_open: dict[str, dict[str, Decimal]] = field(default_factory=dict)
    coins_updated_s: dict[str, int] = field(default_factory=dict)
    faults: FaultBook = field(default_factory=FaultBook)
    counters: Counter[str] = field(default_factory=Counter)
    calls: dict[str, deque[CallRecord]] = field(default_factory=dict)
    weight: WeightMeter = field(default_factory=WeightMeter)
    ws_open: int = 0
    price_listeners: list[Callable[[str], None]] = field(default_factory=list)
    fault_listeners: list[Callable[[Fault], None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.symbols:
            self.reset_market()

    def reset_market(self) -> None:
        """Put every price and status back to the defaults."""
        self.symbols.clear()
        for sym, (base, quote, status, price, half) in BINANCE_SYMBOLS.items():
            p = Decimal(price)
            self.symbols[sym] = BinanceSymbol(sym, base, quote, status, p, Decimal(half), p, p, p)
        now_s = now_ms() // 1000
        self.coins.clear()
        for coin, sym in COINGECKO_COINS.items():
            in_usdt = self.symbols[sym].price if sym else Decimal(1)
            self.coins[coin] = {"usd": in_usdt * TETHER_USD, "rub": in_usdt * TETHER_RUB}
            self.coins_updated_s[coin] = now_s
        self.coins_open = {c: dict(v) for c, v in self.coins.items()}

    def reset(self) -> None:
        """Defaults for prices, options and faults; zero counters and call logs."""
        self.reset_market()
        ping = (self.options.ping_interval_s, self.options.ping_timeout_s)
        self.options = SimOptions(ping_interval_s=ping[0], ping_timeout_s=ping[1])
        self.clear_faults()
        self.counters.clear()
        self.weight = WeightMeter()
        self.calls.clear()

    def call_log(self, target: str) -> deque[CallRecord]:
        """Recorded calls of one REST target (`binance_rest` or `coingecko`), oldest first."""
        return self.calls.setdefault(target, deque(maxlen=CALL_LOG_SIZE))

    @property
    def coingecko_calls(self) -> deque[CallRecord]:
        """Recorded CoinGecko calls, oldest first."""
        return self.call_log("coingecko")

    def set_binance_price(self, symbol: str, price: Decimal) -> None:
        """Move one Binance market and tell the listeners at once."""
        if symbol not in self.symbols:
            raise KeyError(symbol)
        if price <= 0:
            raise ValueError(f"price must be positive: {price}")
        entry = self.symbols[symbol]
        entry.price = price.quantize(Decimal("0.00000001"))
        entry.high, entry.low = max(entry.high, entry.price), min(entry.low, entry.price)
        for listener in list(self.price_listeners):
            listener(symbol)

    def set_binance_status(self, symbol: str, status: str) -> None:
        """Change a symbol's trading status (one of SYMBOL_STATUSES)."""
        if status not in SYMBOL_STATUSES:
            raise ValueError(f"status must be one of {SYMBOL_STATUSES}")
        self.symbols[symbol].status = status

    def set_coingecko_price(self, coin: str, vs: str, price: Decimal) -> None:
        """Set one CoinGecko price; last_updated_at moves only when the value changes."""
        if vs not in SUPPORTED_VS:
            raise ValueError(f"vs currency must be one of {SUPPORTED_VS}")
        table = self.coins.setdefault(coin, {})
        self.coins_open.setdefault(coin, {}).setdefault(vs, price)
        if table.get(vs) != price:
            table[vs] = price
            self.coins_updated_s[coin] = now_ms() // 1000

    def apply_fault(self, fault: Fault) -> None:
        """Record a fault (persistent kinds) and tell the listeners (immediate kinds act there)."""
        self.faults.add(fault)
        self.counters[f"faults_{fault.target}_{fault.kind}"] += 1
        for listener in list(self.fault_listeners):
            listener(fault)

    def clear_faults(self, target: str | None = None) -> None:
        """Clear the faults of one target, or of all targets."""
        self.faults.clear(target)
        for listener in list(self.fault_listeners):
            listener(Fault(target or "*", "clear"))

    def to_json(self) -> dict[str, Any]:
        """Snapshot for GET /_sim/state: prices, faults, options and counters."""
        return {
            "binance": {
                s.symbol: {
                    "price": str(s.price),
                    "bid": str(s.bid),
                    "ask": str(s.ask),
                    "status": s.status,
                }
                for s in self.symbols.values()
            },
            "coingecko": {
                coin: {
                    **{vs: float(v) for vs, v in table.items()},
                    "last_updated_at": self.coins_updated_s[coin],
                }
                for coin, table in self.coins.items()
            },
            "faults": self.faults.to_json(),
            "options": self.options.to_json(),
            "counters": {**self.counters, "binance_ws_open": self.ws_open},
            "coingecko_calls": [vars(c) for c in list(self.coingecko_calls)[-20:]],
        }
