"""BinanceSource.parse on frames shaped as the Binance docs show them (tests/fixtures/binance)."""

# test names say what they check
# pylint: disable=missing-function-docstring,missing-class-docstring

from __future__ import annotations

from decimal import Decimal

import pytest

from ratesvc.domain import Quote, Transport
from ratesvc.errors import ParseError
from ratesvc.sources.base import RotateRequested, truncate
from ratesvc.sources.binance import BinanceOptions, BinanceSource
from tests.unit.sources.source_helpers import read_fixture

RECEIVED_MS = 1_700_000_000_000


@pytest.fixture(name="source")
def source_fixture() -> BinanceSource:
    return BinanceSource(BinanceOptions(_env_file=None))


def parse(source: BinanceSource, name: str) -> list[Quote]:
    return source.parse(read_fixture("binance", name), received_ms=RECEIVED_MS)


def test_parse_combined_book_ticker_gives_exact_mid_at_receive_time(source: BinanceSource) -> None:
    bid, ask = Decimal("67000.1"), Decimal("67000.3")
    assert parse(source, "combined_book_ticker.json") == [
        Quote("binance", "BTC/USDT", Decimal("67000.2"), RECEIVED_MS, Transport.WS, bid, ask)
    ]


def test_book_ticker_bid_and_ask_keep_the_venues_text_exactly(source: BinanceSource) -> None:
    [quote] = parse(source, "raw_book_ticker.json")
    assert (str(quote.bid), str(quote.ask)) == ("3500.01000000", "3500.02000000")
    assert str(quote.price) == "3500.01500000"  # the exact mid: never rounded


@pytest.mark.parametrize(
    "name", ["combined_mini_ticker.json", "raw_trade.json", "combined_agg_trade.json"]
)
def test_streams_without_a_book_give_no_bid_or_ask(source: BinanceSource, name: str) -> None:
    [quote] = parse(source, name)
    assert (quote.bid, quote.ask) == (None, None)


def test_parse_raw_book_ticker(source: BinanceSource) -> None:
    [quote] = parse(source, "raw_book_ticker.json")
    assert (quote.symbol, quote.price, quote.ts_ms) == (
        "ETH/USDT",
        Decimal("3500.015"),
        RECEIVED_MS,
    )


@pytest.mark.parametrize(
    ("name", "symbol", "price", "ts_ms"),
    [
        ("combined_mini_ticker.json", "ETH/USDT", "3501.25", 1672515782136),
        ("raw_ticker.json", "BTC/USDT", "67001.5", 1672515782137),
        ("raw_trade.json", "BTC/USDT", "67002", 1672515782138),
        ("combined_agg_trade.json", "USDC/USDT", "1.0001", 1672515782139),
    ],
)
def test_parse_ticker_and_trade_streams_use_event_time(
    source: BinanceSource, name: str, symbol: str, price: str, ts_ms: int
) -> None:
    [quote] = parse(source, name)
    assert (quote.symbol, quote.price, quote.ts_ms) == (symbol, Decimal(price), ts_ms)


def test_parse_keeps_prices_as_exact_decimals(source: BinanceSource) -> None:
    [quote] = parse(source, "combined_mini_ticker.json")
    assert isinstance(quote.price, Decimal)
    assert str(quote.price) == "3501.25000000"


@pytest.mark.parametrize(
    "name", ["subscribe_ack.json", "list_subscriptions_reply.json", "unknown_event.json"]
)
def test_parse_ignores_acks_and_unused_events(source: BinanceSource, name: str) -> None:
    assert parse(source, name) == []


@pytest.mark.parametrize("name", ["server_shutdown_raw.json", "server_shutdown_combined.json"])
def test_parse_signals_rotation_on_server_shutdown(source: BinanceSource, name: str) -> None:
    with pytest.raises(RotateRequested):
        parse(source, name)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("error_reply.json", "error reply 2"),
        ("junk.txt", "not JSON"),
        ("unknown_shape.json", "unknown message shape"),
        ("book_ticker_missing_ask.json", "unknown message shape"),
        ("trade_price_not_decimal.json", "not a decimal"),
    ],
)
def test_parse_rejects_frames_it_cannot_use(source: BinanceSource, name: str, message: str) -> None:
    with pytest.raises(ParseError, match=message):
        parse(source, name)


@pytest.mark.parametrize(
    "raw",
    [
        b"\x00\x81\xff\xfe binary",
        "[1, 2, 3]",
        '{"stream":"btcusdt@bookTicker","data":[1]}',
        '{"e":"trade","E":1,"s":"BTCUSDT","p":67002.0}',
        '{"e":"trade","E":1,"s":"BTCUSDT","p":"0.00000000"}',
        '{"e":"trade","E":1,"s":"BTCUSDT","p":"NaN"}',
        '{"e":"trade","E":1,"s":"BTCRUB","p":"6150000.0"}',
        '{"e":"trade","E":1,"s":["BTCUSDT"],"p":"67000.0"}',
    ],
)
def test_parse_raises_parse_error_for_malformed_frames(
    source: BinanceSource, raw: str | bytes
) -> None:
    with pytest.raises(ParseError):
        source.parse(raw, received_ms=RECEIVED_MS)


def test_parse_book_ticker_needs_only_the_prices(source: BinanceSource) -> None:
    raw = '{"u":1,"s":"BTCUSDT","b":"1","a":"2"}'
    assert source.parse(raw, received_ms=RECEIVED_MS)[0].price == Decimal("1.5")


def test_parse_accepts_binary_frame_holding_json(source: BinanceSource) -> None:
    raw = read_fixture("binance", "raw_trade.json")
    assert source.parse(bytes(raw), received_ms=RECEIVED_MS)[0].symbol == "BTC/USDT"


def test_url_is_one_lowercase_combined_stream() -> None:
    source = BinanceSource(BinanceOptions(_env_file=None, stream="miniTicker"))
    source.symbols = ["BTCUSDT", "ETHUSDT"]
    assert source.url() == (
        "wss://stream.binance.com:9443/stream?streams=btcusdt@miniTicker/ethusdt@miniTicker"
    )


def test_wanted_symbols_never_include_rub() -> None:
    for correction in (False, True):
        source = BinanceSource(BinanceOptions(_env_file=None, usdc_correction=correction))
        assert not [s for s in source.wanted_symbols() if "RUB" in s]
    assert "USDCUSDT" in source.wanted_symbols()


def test_truncate_keeps_log_lines_short_and_printable() -> None:
    assert truncate("x" * 500).endswith("... (500 chars)")
    assert truncate(b"\x00\x81\xff") == repr(b"\x00\x81\xff")
    assert truncate(b'{"a":1}') == '{"a":1}'
