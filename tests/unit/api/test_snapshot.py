"""Snapshot: newer-wins per key, version bumps, junk ignored."""

# pylint: disable=missing-function-docstring

from __future__ import annotations

from decimal import Decimal

from ratesvc.api.snapshot import Snapshot
from ratesvc.domain import Leg, RateTick, SourceState
from tests.unit.api.api_helpers import T0, FakeClock, status, tick


def cross(btc_ms: int, fx_ms: int, value: str) -> RateTick:
    """A binance BTC-RUB cross: its ts_ms is the newer leg (directions.derive)."""
    legs = (
        Leg("binance", "BTC/USDT", Decimal(60000), btc_ms, 30_000),
        Leg("coingecko", "USDT/RUB", Decimal(90), fx_ms, 900_000),
    )
    return RateTick("binance", "BTC-RUB", Decimal(value), max(btc_ms, fx_ms), legs)


def test_newer_wins_and_every_change_bumps_the_version(clock: FakeClock) -> None:
    snapshot = Snapshot(clock=clock)
    snapshot.load([tick("binance", "BTC-USD", "1", ts_ms=T0)])
    version = snapshot.version
    assert not snapshot.apply([tick("binance", "BTC-USD", "0.5", ts_ms=T0 - 1)])
    assert not snapshot.apply([tick("binance", "BTC-USD", "1", ts_ms=T0)])
    assert snapshot.version == version
    assert snapshot.apply([tick("binance", "BTC-USD", "2", ts_ms=T0 + 1)])
    assert snapshot.version == version + 1
    assert snapshot.ticks[("binance", "BTC-USD")].value == Decimal(2)


def test_a_cross_with_the_same_oldest_leg_still_updates(clock: FakeClock) -> None:
    snapshot = Snapshot(clock=clock)
    snapshot.load([cross(T0, T0 - 60_000, "5400000")])
    assert snapshot.apply([cross(T0 + 500, T0 - 60_000, "5400090")])
    assert snapshot.ticks[("binance", "BTC-RUB")].value == Decimal("5400090")


def test_junk_events_are_ignored(clock: FakeClock) -> None:
    snapshot = Snapshot(clock=clock)
    snapshot.load([])
    legless = RateTick("binance", "BTC-USD", Decimal(1), T0, ())
    infinite = tick("binance", "ETH-USD", "Infinity")
    assert not snapshot.apply(
        [tick("kraken", "BTC-USD"), tick("binance", "XRP-USD"), legless, infinite]
    )
    assert not snapshot.ticks


def test_an_older_status_does_not_replace_a_newer_one(clock: FakeClock) -> None:
    snapshot = Snapshot(clock=clock)
    snapshot.load([], [status("binance", SourceState.DOWN, T0 + 10)])
    assert not snapshot.apply([status("binance", SourceState.UP, T0)])
    assert snapshot.statuses["binance"].state is SourceState.DOWN
    assert snapshot.apply([status("binance", SourceState.UP, T0 + 11)])


def test_not_ready_until_loaded_and_following(clock: FakeClock) -> None:
    snapshot = Snapshot(clock=clock)
    assert not snapshot.ready
    snapshot.set_following(True)
    assert not snapshot.ready
    snapshot.load([])
    assert snapshot.ready
