"""Candle arithmetic: folding ticks into every interval, order-free merging, request windows."""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest

from ratesvc.store.candles import INTERVALS_S, Candle, bucket_of, fold, window

D = Decimal
MIN = 60_000
T0 = 1_764_547_200_000  # 2025-12-01T00:00:00Z: a day boundary, so every interval starts here


def ticks(*pairs: tuple[int, str]) -> list[tuple[str, str, int, Decimal]]:
    """(ts_ms, value) pairs as binance BTC-USD ticks."""
    return [("binance", "BTC-USD", ts, D(value)) for ts, value in pairs]


def test_buckets_are_aligned_to_the_utc_epoch() -> None:
    """A tick one millisecond before a boundary belongs to the bucket before it."""
    assert bucket_of(T0 + 59_999, 60) == T0
    assert bucket_of(T0 + 60_000, 60) == T0 + MIN
    assert bucket_of(T0 - 1, 86_400) == T0 - 86_400_000
    assert bucket_of(T0 + 3 * 3_600_000 + 5, 3_600) == T0 + 3 * 3_600_000


def test_fold_gives_open_high_low_close_and_count_per_bucket_and_interval() -> None:
    """Three ticks in minute 0, one in minute 1: two 1m candles, one candle of each wider one."""
    folded = fold(
        ticks((T0 + 1_000, "10"), (T0 + 2_000, "12.5"), (T0 + 3_000, "9"), (T0 + MIN, "11"))
    )

    first = folded[("binance", "BTC-USD", 60, T0)]
    assert first == Candle(T0, D("10"), D("12.5"), D("9"), D("9"), 3, T0 + 1_000, T0 + 3_000)
    assert folded[("binance", "BTC-USD", 60, T0 + MIN)].ticks == 1
    for width in (300, 900, 3_600, 86_400):
        wide = folded[("binance", "BTC-USD", width, T0)]
        assert (wide.open, wide.high, wide.low, wide.close, wide.ticks) == (
            D("10"),
            D("12.5"),
            D("9"),
            D("11"),
            4,
        )
    assert len(folded) == 2 + len(INTERVALS_S) - 1


def test_values_stay_exact() -> None:
    """No rounding anywhere: a value with many places comes back as stored."""
    value = "6207500.123456789012345678"
    folded = fold(ticks((T0, value)), [60])
    assert folded[("binance", "BTC-USD", 60, T0)].close == D(value)


def test_pairs_never_mix() -> None:
    """Each (exchanger, direction) has its own candles."""
    folded = fold([("binance", "BTC-USD", T0, D("1")), ("coingecko", "BTC-USD", T0, D("2"))], [60])
    assert folded[("binance", "BTC-USD", 60, T0)].close == D("1")
    assert folded[("coingecko", "BTC-USD", 60, T0)].close == D("2")


@pytest.mark.parametrize("order", list(itertools.permutations(range(4))))
def test_merging_batches_in_any_order_gives_the_same_candle(order: tuple[int, ...]) -> None:
    """Out-of-order batches: open is the earliest tick, close the latest, whatever came first."""
    batches = [
        ticks((T0 + 5_000, "10")),
        ticks((T0 + 1_000, "8"), (T0 + 2_000, "15")),
        ticks((T0 + 40_000, "7")),
        ticks((T0 + 59_999, "11"), (T0 + 30_000, "9")),
    ]
    key = ("binance", "BTC-USD", 60, T0)
    merged: Candle | None = None
    for index in order:
        part = fold(batches[index], [60])[key]
        merged = part if merged is None else merged.merge(part)
    assert merged == Candle(T0, D("8"), D("15"), D("7"), D("11"), 6, T0 + 1_000, T0 + 59_999)


def test_equal_times_keep_the_first_open_and_take_the_last_close() -> None:
    """Ties are settled by storage order, as the SQL merge does."""
    first = Candle.of(T0, T0 + 10, D("1"))
    second = Candle.of(T0, T0 + 10, D("2"))
    merged = first.merge(second)
    assert (merged.open, merged.close, merged.ticks) == (D("1"), D("2"), 2)


def test_merging_different_buckets_is_refused() -> None:
    """A bug that would mix buckets fails loudly."""
    with pytest.raises(ValueError):
        Candle.of(T0, T0, D("1")).merge(Candle.of(T0 + MIN, T0 + MIN, D("1")))


def test_window_counts_buckets_from_the_one_holding_from_up_to_to() -> None:
    """[bucket_of(from), to): a whole day of minutes is 1,440; a partial last bucket counts."""
    assert window(T0, T0 + 1_440 * MIN, 60) == (T0, 1_440)
    assert window(T0 + 30_000, T0 + 2 * MIN, 60) == (T0, 2)
    assert window(T0, T0 + 2 * MIN + 1, 60) == (T0, 3)
    assert window(T0, T0, 60) == (T0, 0)
    assert window(T0 + 1, T0 + 1, 60) == (T0, 1)
