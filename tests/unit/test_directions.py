"""The derivation table: every direction, its legs, crosses and staleness."""

from decimal import Decimal

import pytest

from ratesvc.decimals import exact_product, plain
from ratesvc.directions import DerivationConfig, derive_all
from ratesvc.domain import DIRECTIONS, Quote, Transport, quantize

T0 = 1_700_000_000_000


def q(source: str, symbol: str, price: str, ts_ms: int = T0, transport=Transport.WS) -> Quote:
    return Quote(source, symbol, Decimal(price), ts_ms, transport)


def book(symbol: str, bid: str, ask: str, ts_ms: int = T0) -> Quote:
    """A Binance bookTicker quote: the exact mid with its bid and ask."""
    mid = (Decimal(bid) + Decimal(ask)) / 2
    return Quote("binance", symbol, mid, ts_ms, Transport.WS, Decimal(bid), Decimal(ask))


def table(*quotes: Quote) -> dict:
    return {(x.source, x.symbol): x for x in quotes}


CONFIG = DerivationConfig(max_age_ms={"binance": 10_000, "coingecko": 900_000})
FULL = table(
    q("binance", "BTC/USDT", "65000.10"),
    q("binance", "ETH/USDT", "3200.5", T0 + 5),
    q("coingecko", "USDT/RUB", "95.5", T0 - 60_000),
    q("coingecko", "USDT/USD", "1.0003", T0 - 60_000),
    q("coingecko", "BTC/USD", "65010", T0 - 60_000),
    q("coingecko", "BTC/RUB", "6208455", T0 - 60_000),
    q("coingecko", "ETH/USD", "3201", T0 - 60_000),
    q("coingecko", "ETH/RUB", "305695.5", T0 - 60_000),
)


def by_key(ticks):
    return {(t.exchanger, t.direction): t for t in ticks}


def test_every_direction_is_derived_for_both_exchangers():
    ticks = by_key(derive_all(FULL, CONFIG))
    for exchanger in ("binance", "coingecko"):
        assert {d for (e, d) in ticks if e == exchanger} == set(DIRECTIONS)


def test_binance_usd_is_the_usdt_market_and_rub_is_a_cross_through_the_fx_leg():
    ticks = by_key(derive_all(FULL, CONFIG))
    assert ticks["binance", "BTC-USD"].value == Decimal("65000.1")
    assert ticks["binance", "BTC-RUB"].value == Decimal("6207509.55")
    assert ticks["binance", "ETH-RUB"].value == Decimal("305647.75")
    assert ticks["binance", "USDTTRC-USD"].value == Decimal(1)
    assert ticks["binance", "USDTERC-RUB"].value == Decimal("95.5")
    legs = ticks["binance", "BTC-RUB"].legs
    assert [(leg.source, leg.symbol) for leg in legs] == [
        ("binance", "BTC/USDT"),
        ("coingecko", "USDT/RUB"),
    ]
    assert legs[1].max_age_ms == CONFIG.fx_max_age_ms


def test_coingecko_values_are_its_own_prices_and_usdt_networks_share_tether():
    ticks = by_key(derive_all(FULL, CONFIG))
    assert ticks["coingecko", "BTC-RUB"].value == Decimal(6208455)
    assert ticks["coingecko", "USDTTRC-USD"].value == ticks["coingecko", "USDTERC-USD"].value
    assert ticks["coingecko", "USDTTRC-RUB"].value == Decimal("95.5")


def test_binance_rub_directions_are_missing_without_an_fx_leg():
    quotes = table(q("binance", "BTC/USDT", "65000"), q("binance", "ETH/USDT", "3200"))
    directions = {t.direction for t in derive_all(quotes, CONFIG)}
    assert directions == {"BTC-USD", "ETH-USD", "USDTTRC-USD", "USDTERC-USD"}


def test_a_value_is_stale_when_any_leg_is():
    tick = by_key(derive_all(FULL, CONFIG))["binance", "BTC-RUB"]
    assert not tick.is_stale(T0 + 9_000)
    assert tick.is_stale(T0 + 10_001)  # the Binance leg is 10 s old
    fx_old = dict(FULL)
    fx_old["coingecko", "USDT/RUB"] = q("coingecko", "USDT/RUB", "95.5", T0 - 900_001)
    assert by_key(derive_all(fx_old, CONFIG))["binance", "BTC-RUB"].is_stale(T0)


def test_binance_usdt_value_goes_stale_with_the_binance_feed():
    tick = by_key(derive_all(FULL, CONFIG))["binance", "USDTTRC-USD"]
    assert tick.ts_ms == T0 + 5  # vouched for by the newest Binance quote
    assert tick.is_stale(T0 + 5 + 10_001)


def test_usdc_correction_turns_usdt_prices_into_usd():
    config = DerivationConfig(max_age_ms=CONFIG.max_age_ms, usdc_correction=True)
    quotes = table(*FULL.values(), q("binance", "USDC/USDT", "1.0002"))
    ticks = by_key(derive_all(quotes, config))
    # a division: the one inexact step, 28 significant digits (v1 shows 8 places of it)
    assert ticks["binance", "BTC-USD"].value == Decimal("64987.10257948410317936412717")
    assert quantize(ticks["binance", "BTC-USD"].value) == Decimal("64987.10257948")
    assert quantize(ticks["binance", "USDTERC-USD"].value) == Decimal("0.99980004")
    assert ("binance", "USDC/USDT") in [
        (l.source, l.symbol) for l in ticks["binance", "BTC-USD"].legs
    ]


@pytest.mark.parametrize(
    "network,pct,expected", [("USDTTRC", "0.5", "95.9775"), ("USDTERC", "-1", "94.545")]
)
def test_per_network_adjustment_applies_only_to_its_network(network, pct, expected):
    config = DerivationConfig(max_age_ms=CONFIG.max_age_ms, adjust_pct={network: Decimal(pct)})
    ticks = by_key(derive_all(FULL, config))
    assert ticks["coingecko", f"{network}-RUB"].value == Decimal(expected)
    other = "USDTERC" if network == "USDTTRC" else "USDTTRC"
    assert ticks["coingecko", f"{other}-RUB"].value == Decimal("95.5")


def test_rest_transport_is_recorded_on_binance_values():
    quotes = table(*FULL.values(), q("binance", "BTC/USDT", "65000", T0, Transport.REST))
    ticks = by_key(derive_all(quotes, CONFIG))
    assert ticks["binance", "BTC-USD"].transport is Transport.REST
    assert ticks["binance", "ETH-USD"].transport is Transport.WS


def test_coingecko_values_carry_the_transport_of_their_quote():
    quotes = table(*FULL.values(), q("coingecko", "BTC/USD", "65010", T0, Transport.REST))
    ticks = by_key(derive_all(quotes, CONFIG))
    assert ticks["coingecko", "BTC-USD"].transport is Transport.REST
    assert ticks["coingecko", "ETH-USD"].transport is Transport.WS


BOOKS = table(
    *FULL.values(),
    book("BTC/USDT", "65000.10000000", "65000.11000000"),
    book("ETH/USDT", "3200.49000000", "3200.51000000"),
)


def test_binance_usd_values_carry_the_usdt_book_exactly():
    ticks = by_key(derive_all(BOOKS, CONFIG))
    btc = ticks["binance", "BTC-USD"]
    assert (btc.bid, btc.ask, btc.value) == (
        Decimal("65000.1"),
        Decimal("65000.11"),
        Decimal("65000.105"),  # the mid, not rounded
    )
    assert (btc.legs[0].bid, btc.legs[0].ask) == (Decimal("65000.1"), Decimal("65000.11"))


def test_a_cross_multiplies_each_side_of_the_market_leg_by_the_fx_price_exactly():
    # CoinGecko's FX price: no book, and more digits than Decimal's default 28-digit context keeps
    fx = q("coingecko", "USDT/RUB", "95.51234567890123456789012")
    ticks = by_key(derive_all(table(*BOOKS.values(), fx), CONFIG))
    cross = ticks["binance", "BTC-RUB"]
    assert plain(cross.bid) == "6208312.020363148137036314589012"
    assert plain(cross.ask) == "6208312.9754866049260486602679132"
    assert plain(cross.value) == "6208312.4979248765315424874284626"  # mid x FX, 32 digits
    assert cross.bid < cross.value < cross.ask
    assert (cross.legs[1].bid, cross.legs[1].ask) == (None, None)


def test_values_without_a_book_behind_them_have_no_bid_or_ask():
    ticks = by_key(derive_all(BOOKS, CONFIG))
    for key in [
        ("binance", "USDTTRC-USD"),  # 1 by convention
        ("binance", "USDTERC-RUB"),  # the FX price
        ("coingecko", "BTC-USD"),
        ("coingecko", "USDTTRC-RUB"),
    ]:
        assert (ticks[key].bid, ticks[key].ask) == (None, None), key


def test_usdc_correction_divides_each_side_by_the_opposite_side_of_usdcusdt():
    config = DerivationConfig(max_age_ms=CONFIG.max_age_ms, usdc_correction=True)
    quotes = table(*BOOKS.values(), book("USDC/USDT", "0.9999", "1.0001"))
    ticks = by_key(derive_all(quotes, config))
    btc, usdt = ticks["binance", "BTC-USD"], ticks["binance", "USDTTRC-USD"]
    assert btc.bid == Decimal("65000.1") / Decimal("1.0001")
    assert btc.ask == Decimal("65000.11") / Decimal("0.9999")
    assert (usdt.bid, usdt.ask) == (1 / Decimal("1.0001"), 1 / Decimal("0.9999"))


def test_adjustments_scale_value_and_book_alike():
    config = DerivationConfig(max_age_ms=CONFIG.max_age_ms, adjust_pct={"USDTTRC": Decimal("0.5")})
    quotes = table(*BOOKS.values(), book("USDC/USDT", "0.9999", "1.0001"))
    config = DerivationConfig(
        max_age_ms=CONFIG.max_age_ms, usdc_correction=True, adjust_pct=config.adjust_pct
    )
    usdt = by_key(derive_all(quotes, config))["binance", "USDTTRC-USD"]
    assert usdt.bid == exact_product(1 / Decimal("1.0001"), Decimal("1.005"))
    assert usdt.ask == exact_product(1 / Decimal("0.9999"), Decimal("1.005"))
