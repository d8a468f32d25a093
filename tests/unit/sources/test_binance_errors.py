"""Binance error answers and exchangeInfo read from captured formats (tests/fixtures/binance)."""

from __future__ import annotations

import re

import httpx
import pytest

from ratesvc.errors import Banned, Blocked, ParseError, RateLimited, Restricted, SourceError
from ratesvc.sources.binance import BinanceOptions, BinanceSource
from ratesvc.sources.binance_rest import binance_error, parse_exchange_info
from tests.captured import Captured, captured


def answer(name: str) -> tuple[Captured, SourceError]:
    """A fixture and the error binance_error() makes of it, with its indexed status and headers."""
    fixture = captured("binance", name)
    assert fixture.status is not None
    return fixture, binance_error(fixture.status, httpx.Headers(fixture.headers), fixture.raw)


def test_ban_answer_gives_the_end_its_message_names() -> None:
    fixture, error = answer("rest_418_ban.json")
    assert isinstance(error, Banned) and "retry-after" in fixture.absent_headers
    assert error.until_s == 1_700_000_000.0  # "IP banned until 1700000000000" (ms)
    assert error.retry_after_s is None and (error.status, error.code) == (418, -1003)


@pytest.mark.parametrize(
    ("msg", "until_s"),
    [
        # the wording quoted in issue 11 (bans are also reported with an IP in the text)
        (
            "Way too many requests; IP(203.0.113.7) banned until 1663000000000. "
            "Please use the websocket for live updates to avoid bans.",
            1_663_000_000.0,
        ),
        ("IP banned until 1663000000.", 1_663_000_000.0),  # seconds, should it ever be
        ("Way too much request weight used.", None),
    ],
)
def test_ban_end_is_read_from_either_wording(msg: str, until_s: float | None) -> None:
    error = binance_error(418, httpx.Headers(), f'{{"code":-1003,"msg":"{msg}"}}'.encode())
    assert isinstance(error, Banned) and error.until_s == until_s


def test_ban_answer_that_is_not_json_is_still_a_ban() -> None:
    error = binance_error(418, httpx.Headers({"Retry-After": "120"}), b"I'm a teapot")
    assert isinstance(error, Banned) and error.retry_after_s == 120


def test_429_answer_honours_retry_after() -> None:
    _, error = answer("rest_429_too_many.json")
    assert type(error) is RateLimited  # pylint: disable=unidiomatic-typecheck
    assert error.retry_after_s == 7 and error.code == -1003
    assert "current limit of IP" in str(error)


def test_restricted_location_names_the_market_data_only_endpoints() -> None:
    _, error = answer("rest_451_restricted.json")
    assert isinstance(error, Restricted)
    assert "BINANCE_WS_URL=wss://data-stream.binance.vision" in error.advice
    assert "BINANCE_REST_URL=https://data-api.binance.vision" in error.advice
    assert error.hold_s >= 300  # a slow retry, not a loop


def test_firewall_page_is_a_clear_error_not_html() -> None:
    _, error = answer("rest_403_waf.html")
    assert isinstance(error, Blocked) and error.status == 403
    assert "firewall" in str(error) and "<" not in str(error)
    assert "The request could not be satisfied" in str(error)  # the page's title


def test_a_403_in_json_is_an_api_error_not_a_firewall() -> None:
    error = binance_error(403, httpx.Headers(), b'{"code":-2015,"msg":"Invalid API-key."}')
    assert not isinstance(error, Blocked) and error.code == -2015


def test_invalid_symbol_status_is_an_error_with_its_code() -> None:
    _, error = answer("rest_400_invalid_symbol_status.json")
    assert type(error) is SourceError  # pylint: disable=unidiomatic-typecheck
    assert (error.status, error.code) == (400, -1122) and "Invalid symbolStatus." in str(error)


def test_exchange_info_gives_every_status_and_the_weight_limit() -> None:
    statuses, limit = parse_exchange_info(captured("binance", "exchange_info.json").raw)
    assert statuses == {"BTCUSDT": "TRADING", "ETHUSDT": "END_OF_DAY", "USDCUSDT": "CANCEL_ONLY"}
    assert limit == 6000


@pytest.mark.parametrize("raw", [b"<html></html>", b"{}", b'{"symbols": [{"status": "x"}]}'])
def test_exchange_info_that_is_not_one_is_a_source_error(raw: bytes) -> None:
    with pytest.raises(SourceError, match="unexpected exchangeInfo body"):
        parse_exchange_info(raw)


async def test_only_trading_symbols_are_streamed_end_of_day_and_cancel_only_are_not() -> None:
    body = captured("binance", "exchange_info.json").raw
    transport = httpx.MockTransport(lambda _request: httpx.Response(200, content=body))
    options = BinanceOptions(_env_file=None, rest_url="http://binance.test", usdc_correction=True)
    source = BinanceSource(options, http_transport=transport)
    await source.prepare()
    assert source.symbols == ["BTCUSDT"]


@pytest.mark.parametrize("name", ["error_reply_wrapped.json", "error_reply_invalid_json.json"])
def test_wrapped_websocket_error_replies_are_read_as_errors(name: str) -> None:
    source = BinanceSource(BinanceOptions(_env_file=None))
    inner = captured("binance", name).json()["error"]
    expected = re.escape(f"error reply {inner['code']}: {inner['msg']}")
    with pytest.raises(ParseError, match=expected):
        source.parse(captured("binance", name).raw, received_ms=0)
