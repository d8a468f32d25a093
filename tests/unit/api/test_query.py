"""Query-string validation and Accept-Version negotiation (pure functions)."""

# pylint: disable=missing-function-docstring

from __future__ import annotations

import pytest

from ratesvc.api import problems
from ratesvc.api.problems import Problem
from ratesvc.api.query import ALL, QueryParser, Selection, negotiate, parse_query
from ratesvc.domain import DIRECTIONS


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"", ALL),
        (b"exchanger=BINANCE", Selection("binance", DIRECTIONS)),
        (b"exchanger=%20coingecko%20", Selection("coingecko", DIRECTIONS)),
        (b"direction=eth-rub&direction=btc-usd", Selection(None, ("BTC-USD", "ETH-RUB"))),
        (b"direction=ETH-RUB,btc-usd,BTC-USD", Selection(None, ("BTC-USD", "ETH-RUB"))),
        (
            b"direction=usdterc-rub%2C%20usdttrc-usd",
            Selection(None, ("USDTTRC-USD", "USDTERC-RUB")),
        ),
        (b"direction=BTC-USD&exchanger=coingecko", Selection("coingecko", ("BTC-USD",))),
        (b"&".join([b"direction=" + ",".join(DIRECTIONS).lower().encode()] * 2), ALL),
    ],
)
def test_valid_queries(raw: bytes, expected: Selection) -> None:
    assert parse_query(raw) == expected


def test_parser_memoises_and_stays_bounded() -> None:
    parse = QueryParser(size=2)
    first = parse(b"direction=BTC-USD")
    assert parse(b"direction=BTC-USD") is first
    parse(b"direction=ETH-USD")
    parse(b"direction=ETH-RUB")
    assert len(parse._memo) <= 2  # pylint: disable=protected-access


@pytest.mark.parametrize("values", [[], ["1"], ["v1"], [" V1 "], ["1", "v1"]])
def test_supported_versions(values: list[str]) -> None:
    assert negotiate(values) == "1"


@pytest.mark.parametrize("values", [["2"], ["v2"], [" V2 "], ["2", "v2"]])
def test_version_2_is_supported(values: list[str]) -> None:
    assert negotiate(values) == "2"


@pytest.mark.parametrize("values", [[""], ["3"], ["v3"], ["1.0"], ["vv1"], ["1", "2"], ["01"]])
def test_unsupported_versions(values: list[str]) -> None:
    problem = negotiate(values)
    assert isinstance(problem, Problem)
    assert problem.kind is problems.UNSUPPORTED_VERSION
    assert problem.extensions["allowed"] == ["1", "v1", "2", "v2"]
