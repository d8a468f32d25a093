"""Exchanger choice: freshness, immediate failover, hold-down failback, stale fallback."""

# pylint: disable=missing-function-docstring

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import pytest

from ratesvc.api.choice import FreshnessBook, decide, is_blocked, is_fresh, own_leg_ms
from ratesvc.api.mirror import RateMirror
from ratesvc.domain import DIRECTIONS, Leg, RateTick, SourceState
from tests.unit.api.api_helpers import MAX_AGE_MS, T0, FakeClock, full_set, status, tick

PREFERENCE = ("binance", "coingecko")
HOLD_S = 10


def make_mirror(clock: FakeClock) -> RateMirror:
    """Both exchangers fresh at T0."""
    mirror = RateMirror(preference=PREFERENCE, hold_down_s=HOLD_S, clock=clock)
    mirror.load(full_set("binance") + full_set("coingecko"))
    return mirror


def refresh(mirror: RateMirror, clock: FakeClock, *exchangers: str, since_ms: int = 0) -> None:
    """New ticks, stamped now, for every direction of `exchangers`.

    `since_ms` is what the collector stamps (workers/collector.py): when the value last turned
    fresh after it was not (0: fresh for as long as anyone can tell).
    """
    ticks = [t for ex in exchangers for t in full_set(ex, ts_ms=clock())]
    mirror.apply([replace(t, since_ms=since_ms) for t in ticks])


def serving(mirror: RateMirror) -> str | None:
    """Who the default choice serves for all directions."""
    return mirror.decide(None, DIRECTIONS).exchanger


def test_own_leg_ms_prefers_the_exchangers_own_legs() -> None:
    legs = (
        Leg("binance", "BTC/USDT", Decimal(1), T0 + 500, 1000),
        Leg("coingecko", "USDT/RUB", Decimal(90), T0 + 900, 900_000),
    )
    cross = RateTick("binance", "BTC-RUB", Decimal(90), T0 + 500, legs)
    assert own_leg_ms(cross) == T0 + 500


def test_a_value_is_fresh_until_its_leg_ages_out() -> None:
    value = tick("binance", "BTC-USD")
    assert is_fresh(value, None, T0 + MAX_AGE_MS)
    assert not is_fresh(value, None, T0 + MAX_AGE_MS + 1)
    assert not is_fresh(None, None, T0)


def test_down_status_blocks_until_a_newer_tick() -> None:
    value = tick("binance", "BTC-USD")
    down = status("binance", SourceState.DOWN, T0 + 10)
    assert is_blocked(value, down)
    assert not is_fresh(value, down, T0 + 20)
    assert not is_blocked(tick("binance", "BTC-USD", ts_ms=T0 + 11), down)
    assert not is_blocked(value, status("binance", SourceState.UP, T0 + 10))
    assert is_blocked(tick("binance", "BTC-USD", ts_ms=T0 + 10), down)  # ties: status wins


def test_an_up_after_an_outage_leaves_data_from_before_it_blocked() -> None:
    value = tick("binance", "BTC-USD", ts_ms=T0)
    up = replace(status("binance", SourceState.UP, T0 + 20), blocked_ms=T0 + 10)
    assert is_blocked(value, up)  # reported DOWN at T0 + 10, after this data: still out
    assert not is_blocked(tick("binance", "BTC-USD", ts_ms=T0 + 11), up)  # newer data is in


def test_preferred_serves_at_start_without_waiting_for_hold_down(clock: FakeClock) -> None:
    assert serving(make_mirror(clock)) == "binance"


def test_failover_is_immediate_when_the_preferred_goes_stale(clock: FakeClock) -> None:
    mirror = make_mirror(clock)
    clock.advance(MAX_AGE_MS / 1000 - 1)
    refresh(mirror, clock, "coingecko")
    assert serving(mirror) == "binance"
    clock.advance(2)
    version = mirror.version
    assert mirror.evaluate()
    assert mirror.version == version + 1
    assert serving(mirror) == "coingecko"
    assert mirror.decide(None, DIRECTIONS).stale is False


def test_failover_is_immediate_on_a_down_status(clock: FakeClock) -> None:
    mirror = make_mirror(clock)
    clock.advance(1)
    mirror.apply([status("binance", SourceState.DOWN, clock())])
    assert serving(mirror) == "coingecko"


def test_failback_waits_for_the_hold_down(clock: FakeClock) -> None:
    mirror = make_mirror(clock)
    clock.advance(1)
    mirror.apply([status("binance", SourceState.DOWN, clock())])
    clock.advance(1)
    recovered_at = clock()
    refresh(mirror, clock, "binance", since_ms=recovered_at)  # binance fresh again from here
    while clock() - recovered_at < HOLD_S * 1000:
        assert serving(mirror) == "coingecko"
        clock.advance(0.25)
        refresh(mirror, clock, "binance", since_ms=recovered_at)
        refresh(mirror, clock, "coingecko")
        mirror.evaluate()
    assert serving(mirror) == "binance"


def test_a_worker_started_during_the_hold_down_agrees_with_one_that_ran_through_it(
    clock: FakeClock,
) -> None:
    running = make_mirror(clock)
    running.apply([status("binance", SourceState.DOWN, clock())])
    clock.advance(1)
    recovered_at = clock()
    refresh(running, clock, "binance", since_ms=recovered_at)
    clock.advance(4)  # mid hold-down: a new worker loads what Redis holds
    refresh(running, clock, "binance", since_ms=recovered_at)
    refresh(running, clock, "coingecko")
    started = RateMirror(preference=PREFERENCE, hold_down_s=HOLD_S, clock=clock)
    started.load(running.ticks.values(), running.statuses.values())
    for _ in range(40):  # 10 s, past the end of the hold-down
        assert serving(started) == serving(running)
        clock.advance(0.25)
        refresh(running, clock, "binance", since_ms=recovered_at)
        refresh(started, clock, "binance", since_ms=recovered_at)
        running.evaluate()
        started.evaluate()
    assert serving(started) == serving(running) == "binance"


def test_a_flickering_preferred_exchanger_never_serves(clock: FakeClock) -> None:
    mirror = make_mirror(clock)
    mirror.apply([status("binance", SourceState.DOWN, clock())])
    changes = 0
    previous = serving(mirror)
    for _ in range(60):  # 30 s of binance up 1.5 s, down 0.5 s
        clock.advance(1.5)
        refresh(mirror, clock, "binance", since_ms=clock())  # fresh again after the STALE
        refresh(mirror, clock, "coingecko")
        mirror.evaluate()
        changes += serving(mirror) != previous
        previous = serving(mirror)
        clock.advance(0.5)
        mirror.apply([status("binance", SourceState.STALE, clock())])
        changes += serving(mirror) != previous
        previous = serving(mirror)
    assert changes == 0
    assert previous == "coingecko"


def test_the_next_exchanger_serves_at_once_even_during_a_hold_down(clock: FakeClock) -> None:
    mirror = make_mirror(clock)
    mirror.apply([status("binance", SourceState.DOWN, clock())])
    clock.advance(1)
    refresh(mirror, clock, "binance")
    mirror.apply([status("coingecko", SourceState.DOWN, clock())])
    assert serving(mirror) == "binance"
    assert mirror.decide(None, DIRECTIONS).stale is False


def test_nothing_fresh_serves_the_freshest_known_marked_stale(clock: FakeClock) -> None:
    mirror = make_mirror(clock)
    clock.advance(5)
    refresh(mirror, clock, "coingecko")
    clock.advance(MAX_AGE_MS / 1000 + 1)
    mirror.evaluate()
    decision = mirror.decide(None, DIRECTIONS)
    assert (decision.exchanger, decision.stale) == ("coingecko", True)
    assert decision.as_of_ms == T0 + 5000


def test_choice_depends_on_the_requested_directions(clock: FakeClock) -> None:
    mirror = RateMirror(preference=PREFERENCE, hold_down_s=HOLD_S, clock=clock)
    mirror.load(full_set("binance", directions=["BTC-USD"]) + full_set("coingecko"))
    assert mirror.decide(None, ("BTC-USD",)).exchanger == "binance"
    assert mirror.decide(None, ("BTC-USD", "ETH-USD")).exchanger == "coingecko"


def test_no_single_exchanger_with_every_direction_is_nothing_to_serve(clock: FakeClock) -> None:
    mirror = RateMirror(preference=PREFERENCE, clock=clock)
    mirror.load(full_set("binance", directions=["BTC-USD"]))
    decision = mirror.decide(None, ("BTC-USD", "ETH-USD"))
    assert decision.exchanger is None
    assert decision.missing == ("ETH-USD",)


def test_explicit_exchanger_is_served_stale_or_reports_what_is_missing(clock: FakeClock) -> None:
    mirror = make_mirror(clock)
    mirror.apply([status("coingecko", SourceState.DOWN, clock())])
    explicit = mirror.decide("coingecko", DIRECTIONS)
    assert (explicit.exchanger, explicit.stale) == ("coingecko", True)
    empty = RateMirror(clock=clock)
    empty.load(full_set("binance", directions=["BTC-USD"]))
    assert empty.decide("binance", ("BTC-USD", "ETH-RUB")).missing == ("ETH-RUB",)
    assert empty.decide("coingecko", ("BTC-USD",)).missing == ("BTC-USD",)


@pytest.mark.parametrize("hold_down_ms", [0, 10_000])
def test_book_choose_prefers_held_then_longest_fresh(hold_down_ms: int) -> None:
    book = FreshnessBook(hold_down_ms=hold_down_ms)
    ticks = {(t.exchanger, t.direction): t for t in full_set("coingecko", directions=["BTC-USD"])}
    book.evaluate(ticks, {}, T0)
    # Binance fresh for the first time (start-up, CoinGecko was first, since_ms 0): not a
    # comeback, it serves
    ticks[("binance", "BTC-USD")] = tick("binance", "BTC-USD", ts_ms=T0 + 3000)
    book.evaluate(ticks, {}, T0 + 3000)
    assert book.choose(PREFERENCE, ("BTC-USD",)) == "binance"
    assert decide(ticks, book, PREFERENCE, ("BTC-USD",)).exchanger == "binance"
    # it goes stale and comes back: now it waits for the hold-down, CoinGecko serving meanwhile
    stale_at = T0 + 3000 + MAX_AGE_MS + 1
    ticks[("coingecko", "BTC-USD")] = tick("coingecko", "BTC-USD", ts_ms=stale_at)
    book.evaluate(ticks, {}, stale_at)
    assert book.choose(PREFERENCE, ("BTC-USD",)) == "coingecko"
    back = tick("binance", "BTC-USD", ts_ms=stale_at + 1)
    ticks[("binance", "BTC-USD")] = replace(back, since_ms=stale_at + 1)  # as the collector stamps
    book.evaluate(ticks, {}, stale_at + 1)
    expected = "binance" if hold_down_ms == 0 else "coingecko"
    assert book.choose(PREFERENCE, ("BTC-USD",)) == expected
    book.evaluate(ticks, {}, stale_at + 1 + hold_down_ms)
    assert book.choose(PREFERENCE, ("BTC-USD",)) == "binance"


def test_redis_lost_for_too_long_makes_everything_stale(clock: FakeClock) -> None:
    mirror = RateMirror(preference=PREFERENCE, redis_stale_after_s=5, clock=clock)
    mirror.load(full_set("binance", ts_ms=T0) + full_set("coingecko", ts_ms=T0))
    mirror.set_following(True)
    mirror.set_following(False)
    clock.advance(4)
    mirror.evaluate()
    assert mirror.decide(None, DIRECTIONS).stale is False
    clock.advance(1)
    assert mirror.evaluate()
    decision = mirror.decide(None, DIRECTIONS)
    assert (decision.exchanger, decision.stale) == ("binance", True)
