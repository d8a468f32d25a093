"""Domain values shared by every layer: quotes, legs, rate ticks, source status, and their codecs.

Imports nothing from ratesvc and does no I/O.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum

import orjson

EXCHANGERS: tuple[str, ...] = ("binance", "coingecko")

# The stable order in which directions are listed in every response.
DIRECTIONS: tuple[str, ...] = (
    "BTC-USD",
    "BTC-RUB",
    "ETH-USD",
    "ETH-RUB",
    "USDTTRC-USD",
    "USDTTRC-RUB",
    "USDTERC-USD",
    "USDTERC-RUB",
)
DIRECTION_INDEX: dict[str, int] = {d: i for i, d in enumerate(DIRECTIONS)}

# API v1 renders values rounded to this many decimal places; everything else keeps them exact.
VALUE_PLACES = 8
_QUANT = Decimal(1).scaleb(-VALUE_PLACES)


def now_ms() -> int:
    """Wall-clock milliseconds since the epoch."""
    return time.time_ns() // 1_000_000


def quantize(value: Decimal) -> Decimal:
    """Round a value to VALUE_PLACES decimals and drop trailing zeros.

    str() of a tiny result may still use an exponent (1E-8); render with format(value, "f").
    """
    q = value.quantize(_QUANT).normalize()
    # normalize() turns 100 into 1E+2; put the exponent back to 0 for whole numbers
    return q.quantize(Decimal(1)) if q == q.to_integral() else q


class Transport(StrEnum):
    """How a quote reached the collector."""

    WS = "ws"
    REST = "rest"


class SourceState(StrEnum):
    """A source's health as the collector sees it."""

    UP = "up"
    STALE = "stale"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class Quote:
    """One raw market observation from a source, before any derivation.

    `symbol` is normalised as BASE/QUOTE (``BTC/USDT``, ``USDT/RUB``); `ts_ms` is the exchange's
    time when it sends one, else the local receive time. `bid`/`ask` are the best book prices
    exactly as the venue sent them, where it has a book (Binance bookTicker; `price` is then
    their exact mid); None otherwise.
    """

    source: str
    symbol: str
    price: Decimal
    ts_ms: int
    transport: Transport = Transport.WS
    bid: Decimal | None = None
    ask: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """A metered API call's good answer, kept for the collectors that did not make the call."""

    body: str
    received_ms: int  # epoch ms when the caller received it


@dataclass(frozen=True, slots=True)
class Leg:
    """One input of a derived value, kept so every value can be audited and aged.

    `bid`/`ask`: the quote's book, when its venue has one (both or neither).
    """

    source: str
    symbol: str
    price: Decimal
    ts_ms: int
    max_age_ms: int
    bid: Decimal | None = None
    ask: Decimal | None = None

    def is_stale(self, at_ms: int) -> bool:
        """True when this leg is older than its own freshness limit."""
        return at_ms - self.ts_ms > self.max_age_ms

    def to_json(self) -> list:
        """Compact list form used on the wire and in Postgres.

        ``[source, symbol, "price", ts_ms, max_age_ms]``, plus ``"bid", "ask"`` when the leg has a
        book: readers that know only the first five items (older releases) still decode it.
        """
        raw: list = [self.source, self.symbol, str(self.price), self.ts_ms, self.max_age_ms]
        if self.bid is not None and self.ask is not None:
            raw += [str(self.bid), str(self.ask)]
        return raw

    @classmethod
    def from_json(cls, raw: list) -> Leg:
        """Inverse of to_json; a five-item leg (written before books were kept) has no book."""
        book = (Decimal(raw[5]), Decimal(raw[6])) if len(raw) >= 7 else (None, None)
        return cls(raw[0], raw[1], Decimal(raw[2]), int(raw[3]), int(raw[4]), *book)


@dataclass(frozen=True, slots=True)
class RateTick:
    """The value of one direction from one exchanger at one moment, with the legs it came from.

    `ts_ms` is the timestamp of the newest leg (when this value was last confirmed); freshness is
    judged per leg (`is_stale`). `transport` is ``ws`` unless any leg came over REST.
    `since_ms` is when the collector last saw this value turn fresh after it was not (0: fresh
    since before anyone can tell, e.g. the first value ever): the failback hold-down counts from
    it, so every API worker, restarted or not, reaches the same decision from the shared data.
    `value` is exact (never rounded: API v1 rounds when it renders); `bid`/`ask` are derived
    from the legs' books where the exchanger has one (directions.py), else None.
    """

    exchanger: str
    direction: str
    value: Decimal
    ts_ms: int
    legs: tuple[Leg, ...]
    transport: Transport = Transport.WS
    since_ms: int = 0
    tick_id: str = field(default="", compare=False)
    bid: Decimal | None = None
    ask: Decimal | None = None

    def __post_init__(self) -> None:
        if not self.tick_id:
            object.__setattr__(self, "tick_id", tick_id_for(self))

    def is_stale(self, at_ms: int) -> bool:
        """A value is stale when any of its legs is."""
        return any(leg.is_stale(at_ms) for leg in self.legs)

    def stale_at_ms(self) -> int:
        """The first moment at which this value turns stale."""
        return min(leg.ts_ms + leg.max_age_ms for leg in self.legs) + 1

    @property
    def oldest_leg_ms(self) -> int:
        """Its oldest leg's time: what the value is "as of" (a cross is as old as its FX leg)."""
        return min((leg.ts_ms for leg in self.legs), default=self.ts_ms)

    @property
    def key(self) -> str:
        """Key of the latest-value table: ``exchanger:direction``."""
        return f"{self.exchanger}:{self.direction}"

    def to_fields(self) -> dict[str, str]:
        """Stream/hash codec: flat string fields (`bid`/`ask` only when the value has a book)."""
        fields = {
            "kind": "tick",
            "id": self.tick_id,
            "exchanger": self.exchanger,
            "direction": self.direction,
            "value": str(self.value),
            "ts_ms": str(self.ts_ms),
            "transport": str(self.transport),
            "legs": orjson.dumps([leg.to_json() for leg in self.legs]).decode(),
            "since_ms": str(self.since_ms),
        }
        if self.bid is not None and self.ask is not None:
            fields["bid"], fields["ask"] = str(self.bid), str(self.ask)
        return fields

    @classmethod
    def from_fields(cls, fields: dict) -> RateTick:
        """Inverse of to_fields; takes str or bytes keys and values. Raises KeyError/ValueError.

        Entries written before books were kept (no `bid`/`ask`, five-item legs) decode too.
        """
        f = _decode(fields)
        book = (Decimal(f["bid"]), Decimal(f["ask"])) if "bid" in f and "ask" in f else (None, None)
        return cls(
            exchanger=f["exchanger"],
            direction=f["direction"],
            value=Decimal(f["value"]),
            ts_ms=int(f["ts_ms"]),
            legs=tuple(Leg.from_json(raw) for raw in orjson.loads(f["legs"])),
            transport=Transport(f.get("transport", "ws")),
            since_ms=int(f.get("since_ms", 0)),
            tick_id=f.get("id", ""),
            bid=book[0],
            ask=book[1],
        )


def tick_id_for(tick: RateTick) -> str:
    """Deterministic id: the same tick published twice has the same id (idempotency key)."""
    raw = f"{tick.exchanger}|{tick.direction}|{tick.ts_ms}|{tick.value}".encode()
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """A source's health event as published by the collector.

    `blocked_ms` is when the source was last reported DOWN or STALE (this event's own time when it
    is one; 0 if never): data older than that is not fresh even after an UP, only newer data is.
    """

    source: str
    state: SourceState
    ts_ms: int
    transport: Transport = Transport.WS
    reason: str = ""
    blocked_ms: int = 0

    def to_fields(self) -> dict[str, str]:
        """Stream/hash codec: flat string fields."""
        return {
            "kind": "status",
            "source": self.source,
            "state": str(self.state),
            "ts_ms": str(self.ts_ms),
            "transport": str(self.transport),
            "reason": self.reason,
            "blocked_ms": str(self.blocked_ms),
        }

    @property
    def event_id(self) -> str:
        """Deterministic id (the idempotency key of stored events, like RateTick.tick_id)."""
        raw = f"{self.source}|{self.state}|{self.ts_ms}|{self.transport}|{self.reason}".encode()
        return hashlib.blake2b(raw, digest_size=16).hexdigest()

    @classmethod
    def from_fields(cls, fields: dict) -> SourceStatus:
        """Inverse of to_fields. Raises KeyError/ValueError."""
        f = _decode(fields)
        return cls(
            source=f["source"],
            state=SourceState(f["state"]),
            ts_ms=int(f["ts_ms"]),
            transport=Transport(f.get("transport", "ws")),
            reason=f.get("reason", ""),
            blocked_ms=int(f.get("blocked_ms", 0)),
        )


BLOCKING_STATES = frozenset({SourceState.DOWN, SourceState.STALE})


def own_leg_ms(tick: RateTick) -> int:
    """Newest timestamp among the tick's legs from its own exchanger (any leg if none is)."""
    own = [leg.ts_ms for leg in tick.legs if leg.source == tick.exchanger]
    if own:
        return max(own)
    return max((leg.ts_ms for leg in tick.legs), default=tick.ts_ms)


def is_blocked(tick: RateTick, status: SourceStatus | None) -> bool:
    """True when the exchanger was reported DOWN/STALE at or after the tick's own newest data.

    An UP after the outage does not unblock data from before it: only newer data is fresh.
    """
    if status is None:
        return False
    last_block = max(status.blocked_ms, status.ts_ms if status.state in BLOCKING_STATES else 0)
    return last_block > 0 and last_block >= own_leg_ms(tick)


def is_fresh(tick: RateTick | None, status: SourceStatus | None, at_ms: int) -> bool:
    """A value is fresh at `at_ms` when no leg is past its limit and no DOWN/STALE blocks it."""
    return tick is not None and not tick.is_stale(at_ms) and not is_blocked(tick, status)


def event_from_fields(fields: dict) -> RateTick | SourceStatus:
    """Decode one stream entry into the event it carries. Raises KeyError/ValueError on junk."""
    f = _decode(fields)
    kind = f.get("kind")
    if kind == "tick":
        return RateTick.from_fields(f)
    if kind == "status":
        return SourceStatus.from_fields(f)
    raise ValueError(f"unknown event kind {kind!r}")


def _decode(fields: dict) -> dict[str, str]:
    return {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in fields.items()
    }
