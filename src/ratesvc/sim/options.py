"""Knobs of the simulator: cadences, limits, keepalive and the CoinGecko cache. No I/O."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass
class SimOptions:
    """Knobs of the simulator; the ping pair is fixed at start, the rest can change live.

    Attributes:
        ping_interval_s: seconds between server ping frames (Binance: 20).
        ping_timeout_s: seconds to wait for the pong before dropping the client (Binance: 60).
        book_interval_s: periodic bookTicker push cadence; 0 turns periodic pushes off.
        ticker_interval_s: periodic miniTicker/ticker/trade/aggTrade cadence; 0 turns them off.
        max_incoming_per_s: incoming websocket messages per second before a disconnect.
        max_streams: streams per connection.
        max_outbox: frames queued for one slow client before it is dropped.
        coingecko_cache_s: server-side cache of simple/price (real Demo: 60); 0 serves live data.
        coingecko_calls_per_minute: calls in any 60 s before a 429 with Retry-After (real Demo:
            100 per the current docs, 30 per older ones); 0 turns the limit off.
    """

    ping_interval_s: float = 20.0
    ping_timeout_s: float = 60.0
    book_interval_s: float = 0.1
    ticker_interval_s: float = 1.0
    max_incoming_per_s: int = 5
    max_streams: int = 1024
    max_outbox: int = 10_000
    coingecko_cache_s: float = 0.0
    coingecko_calls_per_minute: int = 0

    def update(self, changes: dict[str, Any]) -> None:
        """Apply a partial update, rejecting unknown names and non-numbers with ValueError."""
        known = {f.name: f.type for f in fields(self)}
        for name, value in changes.items():
            if name not in known or isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"bad option {name!r}={value!r}")
            setattr(self, name, int(value) if known[name] == "int" else float(value))

    def to_json(self) -> dict[str, Any]:
        """Plain dict for the control API."""
        return {f.name: getattr(self, f.name) for f in fields(self)}
