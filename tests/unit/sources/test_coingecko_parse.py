"""CoinGeckoSource.parse on simple/price bodies (tests/fixtures/coingecko), numbers kept exact."""

# test names say what they check
# pylint: disable=missing-function-docstring,missing-class-docstring

from __future__ import annotations

from decimal import Decimal

import pytest

from ratesvc.domain import Quote, Transport
from ratesvc.errors import ParseError
from ratesvc.sources.coingecko import CoinGeckoOptions, CoinGeckoSource
from tests.unit.sources.source_helpers import read_fixture

RECEIVED_MS = 1_711_356_400_000


@pytest.fixture(name="source")
def source_fixture() -> CoinGeckoSource:
    return CoinGeckoSource(CoinGeckoOptions(_env_file=None))


def parse(source: CoinGeckoSource, name: str) -> dict[str, Quote]:
    quotes = source.parse(read_fixture("coingecko", name), received_ms=RECEIVED_MS)
    return {quote.symbol: quote for quote in quotes}


def test_parse_gives_every_coin_in_usd_and_rub(source: CoinGeckoSource) -> None:
    quotes = parse(source, "simple_price.json")
    assert list(quotes) == ["BTC/USD", "BTC/RUB", "ETH/USD", "ETH/RUB", "USDT/USD", "USDT/RUB"]
    assert quotes["USDT/RUB"] == Quote(
        "coingecko", "USDT/RUB", Decimal("91.52"), 1_711_356_290_000, Transport.REST
    )


def test_parse_keeps_json_numbers_exact(source: CoinGeckoSource) -> None:
    # a float would turn this into 67187.34123456789
    assert str(parse(source, "simple_price.json")["BTC/USD"].price) == "67187.341234567891234"


def test_parse_reads_round_prices_sent_as_json_integers(source: CoinGeckoSource) -> None:
    quotes = parse(source, "simple_price_integers.json")
    assert {symbol: str(q.price) for symbol, q in quotes.items()} == {
        "BTC/USD": "111813",
        "BTC/RUB": "9023457.12",
        "ETH/USD": "4301.57",
        "ETH/RUB": "347112",
        "USDT/USD": "1",
        "USDT/RUB": "80.7",
    }
    assert quotes["USDT/USD"].ts_ms == 1_757_347_190_000


def test_parse_uses_last_updated_at_per_coin(source: CoinGeckoSource) -> None:
    quotes = parse(source, "simple_price.json")
    assert quotes["BTC/RUB"].ts_ms == 1_711_356_300_000
    assert quotes["ETH/USD"].ts_ms == 1_711_356_295_000


def test_parse_skips_a_missing_coin(source: CoinGeckoSource) -> None:
    assert set(parse(source, "missing_coin.json")) == {"BTC/USD", "BTC/RUB", "USDT/USD", "USDT/RUB"}


def test_parse_skips_a_missing_currency(source: CoinGeckoSource) -> None:
    assert set(parse(source, "missing_currency.json")) == {
        "BTC/USD",
        "ETH/USD",
        "ETH/RUB",
        "USDT/USD",
    }


def test_parse_skips_null_prices_and_falls_back_to_receive_time(source: CoinGeckoSource) -> None:
    quotes = parse(source, "null_values.json")
    assert set(quotes) == {"BTC/RUB", "ETH/USD"}
    assert quotes["BTC/RUB"].ts_ms == RECEIVED_MS


@pytest.mark.parametrize(
    "raw",
    [
        b"<html>502 Bad Gateway</html>",
        b"[]",
        b"{}",
        read_fixture("coingecko", "error_wrong_root.json"),
        b'{"bitcoin":{"usd":"67187.34"}}',
        b'{"bitcoin":{"usd":-1}}',
        b'{"bitcoin":{"usd":NaN}}',
        b'{"bitcoin":{"usd":true}}',
    ],
)
def test_parse_raises_parse_error_for_unusable_bodies(source: CoinGeckoSource, raw: bytes) -> None:
    with pytest.raises(ParseError):
        source.parse(raw, received_ms=RECEIVED_MS)
