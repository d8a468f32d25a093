"""Market state, options and the fault book, without servers."""

# pylint: disable=missing-function-docstring,missing-class-docstring

from __future__ import annotations

from decimal import Decimal

import pytest

from ratesvc.sim.faults import FaultBook, parse_fault
from ratesvc.sim.options import SimOptions
from ratesvc.sim.state import MarketState


def test_fault_bodies_get_defaults_and_aliases() -> None:
    fault = parse_fault({"target": "binance_rest", "kind": "rest_429", "count": 2})
    assert (fault.kind, fault.params, fault.remaining) == (
        "429",
        {"status": 429, "retry_after_s": 5},
        2,
    )
    cg = parse_fault({"target": "coingecko", "kind": "429"})
    assert cg.params["retry_after_s"] == 60  # undocumented, but captured 429s carry retry-after
    ban = parse_fault({"target": "binance", "kind": "418", "duration_s": 60})
    assert ban.kind == "ban" and ban.params["retry_after"] == 0  # real bans: end in the message
    assert ban.expires_at == ban.set_at + 60
    garbage = parse_fault({"target": "binance_ws", "kind": "garbage"})
    assert garbage.params == {"count": 3} and garbage.remaining is None


@pytest.mark.parametrize(
    "body",
    [
        {"target": "binance_ws", "kind": "stall", "delay_s": 1},
        {"target": "coingecko", "kind": "slow", "delay_s": -1},
        {"target": "coingecko", "kind": "slow", "delay_s": True},
        {"kind": "slow"},
        {"target": "binance_ws", "kind": "disconnect", "code": 1006},
        {"target": "coingecko", "kind": "wrong_root", "code": 10012},
        {"target": "binance", "kind": "ban", "duration_s": -1},
    ],
)
def test_bad_fault_bodies_raise_value_error(body: dict) -> None:
    with pytest.raises(ValueError):
        parse_fault(body)


def test_counted_faults_expire_after_their_count() -> None:
    book = FaultBook()
    book.add(parse_fault({"target": "coingecko", "kind": "5xx", "count": 2}))
    assert book.take("coingecko", "5xx") is not None
    assert book.take("coingecko", "5xx") is not None
    assert book.take("coingecko", "5xx") is None
    assert not book.active


def test_immediate_faults_are_not_kept() -> None:
    book = FaultBook()
    book.add(parse_fault({"target": "binance_ws", "kind": "disconnect"}))
    assert not book.active


def test_binance_mid_equals_the_set_price_and_listeners_hear_it() -> None:
    state = MarketState()
    heard: list[str] = []
    state.price_listeners.append(heard.append)
    state.set_binance_price("USDCUSDT", Decimal("1.0001"))
    usdc = state.symbols["USDCUSDT"]
    assert (usdc.bid + usdc.ask) / 2 == Decimal("1.0001")
    assert heard == ["USDCUSDT"]
    assert (usdc.high, usdc.low) == (Decimal("1.0001"), Decimal("0.9997"))


def test_options_update_checks_names_and_types() -> None:
    options = SimOptions()
    options.update({"book_interval_s": 1, "max_streams": 10})
    assert options.book_interval_s == 1.0 and options.max_streams == 10
    with pytest.raises(ValueError):
        options.update({"book_interval_s": "fast"})
    with pytest.raises(ValueError):
        options.update({"nope": 1})


def test_reset_keeps_the_ping_settings_fixed_at_start() -> None:
    state = MarketState(options=SimOptions(ping_interval_s=0.5, ping_timeout_s=1.0))
    state.options.book_interval_s = 5
    state.counters["x"] = 1
    state.reset()
    assert (state.options.ping_interval_s, state.options.book_interval_s) == (0.5, 0.1)
    assert not state.counters
