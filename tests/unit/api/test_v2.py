"""API v2 through the fast path (as workers serve it): exact values, books, legs, as_of, stale.

The market below goes through the real derivation (directions.derive_all), so what is checked is
what a client would see for these exchange messages. v1's bytes for it are pinned to what the
release before v2 served (computed with that release's code, same quotes).
"""

# pylint: disable=missing-function-docstring

from __future__ import annotations

from decimal import Decimal

import httpx
import orjson
import pytest

from ratesvc.api.app import create_app, with_fast_path
from ratesvc.api.choice import Decision
from ratesvc.api.mirror import RateMirror
from ratesvc.api.v2 import render_v2, venue_symbol
from ratesvc.directions import DerivationConfig, derive_all
from ratesvc.domain import Quote, RateTick, SourceState, Transport
from ratesvc.settings import Settings
from tests.unit.api.api_helpers import T0, FakeClock, client_for, status

BINANCE_LIMIT_MS = 10_000
CONFIG = DerivationConfig(max_age_ms={"binance": BINANCE_LIMIT_MS, "coingecko": 900_000})
FX_MS = T0 - 60_000  # CoinGecko polled a minute before Binance's latest
ETH_MS = T0 + 40


def market() -> list[RateTick]:
    """Both exchangers' eight directions from one set of exchange messages."""

    def cg(symbol: str, price: str) -> Quote:
        return Quote("coingecko", symbol, Decimal(price), FX_MS, Transport.REST)

    def book(symbol: str, bid: str, ask: str, ts_ms: int) -> Quote:
        bid_d, ask_d = Decimal(bid), Decimal(ask)
        return Quote("binance", symbol, (bid_d + ask_d) / 2, ts_ms, Transport.WS, bid_d, ask_d)

    quotes = [
        book("BTC/USDT", "65000.10000000", "65000.11000000", T0),
        book("ETH/USDT", "3200.49000000", "3200.50000000", ETH_MS),
        cg("USDT/RUB", "95.51234567890123"),
        cg("USDT/USD", "1.000123456789"),
        cg("BTC/USD", "65010"),
        cg("BTC/RUB", "6208455.5"),
        cg("ETH/USD", "3201.12"),
        cg("ETH/RUB", "305695.123456789"),
    ]
    return derive_all({(q.source, q.symbol): q for q in quotes}, CONFIG)


def serve(settings: Settings, clock: FakeClock, *events: object) -> object:
    mirror = RateMirror(hold_down_s=10, clock=clock)
    mirror.load(market(), events)  # type: ignore[arg-type]
    mirror.set_following(True)
    return with_fast_path(create_app(settings, mirror=mirror))


@pytest.fixture(name="app")
def app_fixture(settings: Settings, clock: FakeClock) -> object:
    clock.now_ms = T0 + 1_000
    return serve(settings, clock)


async def get(app: object, path: str, **headers: str) -> httpx.Response:
    async with client_for(app) as client:  # type: ignore[arg-type]
        return await client.get(path, headers=headers)


V1_BINANCE = (
    b'{"exchanger":"binance","courses":[{"direction":"BTC-USD","value":65000.105},'
    b'{"direction":"BTC-RUB","value":6208312.49792488},{"direction":"ETH-USD","value":3200.495},'
    b'{"direction":"ETH-RUB","value":305686.78478359},{"direction":"USDTTRC-USD","value":1},'
    b'{"direction":"USDTTRC-RUB","value":95.51234568},{"direction":"USDTERC-USD","value":1},'
    b'{"direction":"USDTERC-RUB","value":95.51234568}]}'
)
V1_COINGECKO = (
    b'{"exchanger":"coingecko","courses":[{"direction":"BTC-USD","value":65010},'
    b'{"direction":"BTC-RUB","value":6208455.5},{"direction":"ETH-USD","value":3201.12},'
    b'{"direction":"ETH-RUB","value":305695.12345679},{"direction":"USDTTRC-USD",'
    b'"value":1.00012346},{"direction":"USDTTRC-RUB","value":95.51234568},'
    b'{"direction":"USDTERC-USD","value":1.00012346},{"direction":"USDTERC-RUB",'
    b'"value":95.51234568}]}'
)


@pytest.mark.parametrize(
    ("path", "body", "etag"),
    [
        ("/courses", V1_BINANCE, '"964495580c8535d87fede58c320eaa44"'),
        ("/v1/courses?exchanger=coingecko", V1_COINGECKO, '"67c7ef3f8a8728a6751b7a5fc5d389b7"'),
    ],
)
async def test_v1_bytes_and_etags_are_those_served_before_v2(
    app: object, path: str, body: bytes, etag: str
) -> None:
    answer = await get(app, path)
    assert (answer.content, answer.headers["etag"]) == (body, etag)
    assert answer.headers["api-version"] == "1"


async def test_a_binance_cross_carries_exact_values_its_book_and_both_legs(app: object) -> None:
    answer = await get(app, "/v2/courses?direction=BTC-RUB")
    assert answer.status_code == 200 and answer.headers["api-version"] == "2"
    assert answer.content == (
        b'{"exchanger":"binance","as_of":"2023-11-14T22:12:20.000Z","stale":false,"courses":['
        b'{"direction":"BTC-RUB","value":"6208312.49792487623462915",'
        b'"bid":"6208312.020363147840123","ask":"6208312.9754866046291353",'
        b'"as_of":"2023-11-14T22:12:20.000Z","stale":false,"legs":['
        b'{"source":"binance","symbol":"BTCUSDT","price":"65000.105","bid":"65000.1",'
        b'"ask":"65000.11","as_of":"2023-11-14T22:13:20.000Z"},'
        b'{"source":"coingecko","symbol":"tether/rub","price":"95.51234567890123","bid":null,'
        b'"ask":null,"as_of":"2023-11-14T22:12:20.000Z"}]}]}'
    )
    course = answer.json()["courses"][0]
    # the bid is the market leg's bid x the FX price, exactly (v1 shows 6208312.49792488)
    assert Decimal(course["bid"]) == Decimal("65000.1") * Decimal("95.51234567890123")
    assert Decimal(course["ask"]) == Decimal("65000.11") * Decimal("95.51234567890123")


async def test_every_binance_direction_and_the_usdt_convention(app: object) -> None:
    body = (await get(app, "/v2/courses?exchanger=binance")).json()
    courses = {c["direction"]: c for c in body["courses"]}
    assert list(courses) == [
        "BTC-USD",
        "BTC-RUB",
        "ETH-USD",
        "ETH-RUB",
        "USDTTRC-USD",
        "USDTTRC-RUB",
        "USDTERC-USD",
        "USDTERC-RUB",
    ]
    assert (courses["BTC-USD"]["value"], courses["BTC-USD"]["bid"]) == ("65000.105", "65000.1")
    assert courses["ETH-USD"]["ask"] == "3200.5"
    usdt = courses["USDTTRC-USD"]
    assert (usdt["value"], usdt["bid"], usdt["ask"]) == ("1", None, None)  # a convention
    assert usdt["legs"] == [
        {
            "source": "binance",
            "symbol": "USDT/USD",
            "price": "1",
            "bid": None,
            "ask": None,
            "as_of": "2023-11-14T22:13:20.040Z",  # vouched for by the newest Binance quote
        }
    ]
    assert courses["USDTERC-RUB"]["value"] == "95.51234567890123"  # the FX price, not rounded


async def test_coingecko_values_are_its_exact_prices_without_a_book(app: object) -> None:
    body = (await get(app, "/v2/courses?exchanger=coingecko")).json()
    assert body["exchanger"] == "coingecko" and body["stale"] is False
    for course in body["courses"]:
        assert (course["bid"], course["ask"]) == (None, None)
        assert [leg["source"] for leg in course["legs"]] == ["coingecko"]
    courses = {c["direction"]: c for c in body["courses"]}
    assert courses["ETH-RUB"]["value"] == "305695.123456789"  # v1: 305695.12345679
    assert courses["ETH-RUB"]["legs"][0]["symbol"] == "ethereum/rub"
    assert courses["USDTERC-USD"]["legs"][0]["symbol"] == "tether/usd"


async def test_a_cross_is_as_of_its_fx_leg_and_the_answer_as_of_its_oldest_course(
    app: object,
) -> None:
    answer = await get(app, "/v2/courses?exchanger=binance&direction=ETH-USD,ETH-RUB")
    body = answer.json()
    eth_usd, eth_rub = body["courses"]
    assert eth_usd["as_of"] == "2023-11-14T22:13:20.040Z"  # its only leg, ETHUSDT
    assert eth_rub["as_of"] == "2023-11-14T22:12:20.000Z" == eth_rub["legs"][1]["as_of"]
    assert body["as_of"] == eth_rub["as_of"] == answer.headers["x-rates-as-of"]


async def test_accept_version_2_on_courses_is_the_v2_answer(app: object) -> None:
    versioned = await get(app, "/v2/courses?direction=BTC-USD")
    for version in ("2", "v2", " V2 "):
        negotiated = await get(app, "/courses?direction=BTC-USD", **{"Accept-Version": version})
        assert negotiated.content == versioned.content
        assert negotiated.headers["etag"] == versioned.headers["etag"]
        assert negotiated.headers["api-version"] == "2"
        assert negotiated.headers["vary"] == "Accept-Version"
    assert "vary" not in versioned.headers


async def test_etag_revalidation_gives_304_with_the_stale_headers(app: object) -> None:
    first = await get(app, "/v2/courses")
    etag = first.headers["etag"]
    assert first.headers["cache-control"] == "no-cache"
    again = await get(app, "/v2/courses", **{"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag and again.headers["x-rates-stale"] == "false"
    v1 = await get(app, "/v1/courses", **{"If-None-Match": etag})
    assert v1.status_code == 200  # a v2 tag is not a v1 representation


async def test_staleness_turns_at_the_exact_limit_and_only_then_changes_the_body(
    settings: Settings, clock: FakeClock
) -> None:
    app = serve(settings, clock)
    path = "/v2/courses?exchanger=binance&direction=BTC-USD,ETH-USD"
    clock.now_ms = T0 + 1
    early = await get(app, path)
    clock.now_ms = T0 + BINANCE_LIMIT_MS  # BTCUSDT's last fresh instant (age == limit)
    at_limit = await get(app, path)
    clock.now_ms += 1
    past = await get(app, path)

    assert at_limit.content == early.content  # the clock alone changed nothing
    assert at_limit.headers["etag"] == early.headers["etag"]
    body = past.json()
    assert [c["stale"] for c in body["courses"]] == [True, False]  # ETH quoted 40 ms later
    assert body["stale"] is True and past.headers["x-rates-stale"] == "true"
    assert past.headers["etag"] != at_limit.headers["etag"]
    assert past.headers["x-rates-age"] == "10"  # headers may age; the body never does
    revalidated = await get(app, path, **{"If-None-Match": at_limit.headers["etag"]})
    assert revalidated.status_code == 200


async def test_an_outage_report_marks_its_values_stale_in_the_body(
    settings: Settings, clock: FakeClock
) -> None:
    clock.now_ms = T0 + 1_000
    app = serve(settings, clock, status("binance", SourceState.DOWN, T0 + 500))
    body = (await get(app, "/v2/courses?exchanger=binance&direction=BTC-USD")).json()
    assert body["stale"] is True and body["courses"][0]["stale"] is True
    served = (await get(app, "/v2/courses?direction=BTC-USD")).json()
    assert served["exchanger"] == "coingecko" and served["stale"] is False


def test_render_v2_renders_stored_ticks_judged_at_a_past_instant() -> None:
    ticks = [t for t in market() if t.exchanger == "binance" and t.direction.startswith("BTC")]
    fresh = orjson.loads(render_v2(Decision.judged_at("binance", ticks, T0 + BINANCE_LIMIT_MS)))
    later = orjson.loads(render_v2(Decision.judged_at("binance", ticks, T0 + BINANCE_LIMIT_MS + 1)))
    assert [c["stale"] for c in fresh["courses"]] == [False, False] and not fresh["stale"]
    assert [c["stale"] for c in later["courses"]] == [True, True] and later["stale"]
    assert fresh["courses"][1]["value"] == "6208312.49792487623462915"


@pytest.mark.parametrize(
    ("source", "symbol", "expected"),
    [
        ("binance", "BTC/USDT", "BTCUSDT"),
        ("binance", "USDC/USDT", "USDCUSDT"),
        ("binance", "USDT/USD", "USDT/USD"),
        ("coingecko", "USDT/RUB", "tether/rub"),
        ("coingecko", "BTC/USD", "bitcoin/usd"),
        ("elsewhere", "X/Y", "X/Y"),
    ],
)
def test_legs_name_markets_as_their_venue_does(source: str, symbol: str, expected: str) -> None:
    assert venue_symbol(source, symbol) == expected
