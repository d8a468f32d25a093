"""OHLC candles: the rollup arithmetic the persister applies as it writes, and its read side.

Pure, no I/O. The persister folds the ticks an insert actually stored (`fold`) and upserts the
result; Postgres merges it into a stored candle with the SQL twin of `Candle.merge`
(store/repository.py ``_UPSERT_CANDLES``). Because a candle remembers the times of the ticks
behind its open and close, merging is order-free: a batch that arrives late or out of order moves
the open only when it holds an earlier tick and the close only when it holds a later one (equal
times: the open stays with the candle stored first, the close goes to the one stored last).

Every interval of INTERVALS_S is stored, each bucket aligned to the UTC epoch (a day runs from
00:00Z), so any history request is one index range scan of at most MAX_CANDLES rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

# The intervals of /v2/history, all stored: the write costs five upserts per batch (a few rows
# each at the collector's ~18 ticks/s), and no read aggregates.
INTERVALS_S: dict[str, int] = {"1m": 60, "5m": 300, "15m": 900, "1h": 3_600, "1d": 86_400}
MAX_CANDLES = 1_500

CandleKey = tuple[str, str, int, int]  # (exchanger, direction, interval_s, bucket_ms)


def bucket_of(ts_ms: int, interval_s: int) -> int:
    """Start (epoch ms) of the `interval_s` bucket holding `ts_ms`."""
    return ts_ms - ts_ms % (interval_s * 1000)


@dataclass(frozen=True, slots=True)
class Candle:
    """One bucket's open/high/low/close (exact), its tick count, and its open and close ticks'
    times."""

    bucket_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    ticks: int
    open_ms: int
    close_ms: int

    @classmethod
    def of(cls, bucket_ms: int, ts_ms: int, value: Decimal) -> Candle:
        """The candle of one tick."""
        return cls(bucket_ms, value, value, value, value, 1, ts_ms, ts_ms)

    def merge(self, later: Candle) -> Candle:
        """This candle with `later` (stored after it) added: same bucket, any tick times."""
        if later.bucket_ms != self.bucket_ms:
            raise ValueError(f"cannot merge bucket {later.bucket_ms} into {self.bucket_ms}")
        first = later if later.open_ms < self.open_ms else self
        last = later if later.close_ms >= self.close_ms else self
        return Candle(
            bucket_ms=self.bucket_ms,
            open=first.open,
            high=max(self.high, later.high),
            low=min(self.low, later.low),
            close=last.close,
            ticks=self.ticks + later.ticks,
            open_ms=first.open_ms,
            close_ms=last.close_ms,
        )


def fold(
    ticks: Iterable[tuple[str, str, int, Decimal]], intervals_s: Iterable[int] | None = None
) -> dict[CandleKey, Candle]:
    """Candles of (exchanger, direction, ts_ms, value) ticks, in the order they were stored,
    for every interval (default: all of INTERVALS_S)."""
    widths = tuple(INTERVALS_S.values() if intervals_s is None else intervals_s)
    out: dict[CandleKey, Candle] = {}
    for exchanger, direction, ts_ms, value in ticks:
        for width in widths:
            bucket = bucket_of(ts_ms, width)
            key = (exchanger, direction, width, bucket)
            candle = Candle.of(bucket, ts_ms, value)
            known = out.get(key)
            out[key] = candle if known is None else known.merge(candle)
    return out


def window(from_ms: int, to_ms: int, interval_s: int) -> tuple[int, int]:
    """The buckets of a history request: starts in [bucket_of(from_ms), to_ms), and their count.

    Returns (first bucket start, number of buckets); the bucket holding `to_ms` is included when
    `to_ms` is past its start (a partial, still open bucket).
    """
    first = bucket_of(from_ms, interval_s)
    width_ms = interval_s * 1000
    count = max(0, -(-(to_ms - first) // width_ms))
    return first, count
