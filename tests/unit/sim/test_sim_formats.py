"""The simulator held to the captured formats: its frames and answers against tests/fixtures.

For each fixture a producer makes the simulator send the same kind of message; the test compares
them field by field (names, JSON types, wrappers), the HTTP status and the indexed headers, and
checks that the service's parsers read both alike. So the simulator and the parsers cannot drift
apart together: both are held to the captures.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from ratesvc.errors import Banned, ParseError, SourceError
from ratesvc.sim import SimHandle
from ratesvc.sim.testing import SimControl, recv_until
from ratesvc.sources.answers import is_html
from ratesvc.sources.base import RotateRequested
from ratesvc.sources.binance import BinanceOptions, BinanceSource
from ratesvc.sources.binance_rest import binance_error
from ratesvc.sources.coingecko import CoinGeckoOptions, CoinGeckoSource
from tests.captured import SECTION_G_ROWS, Captured, captured, index, shape_mismatches

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(15)]

SYMBOLS = '["BTCUSDT","ETHUSDT","USDCUSDT"]'


@dataclass
class Answer:
    """What the simulator sent: a websocket frame (status None) or an HTTP answer."""

    body: bytes
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, response: httpx.Response) -> Answer:
        """An HTTP answer."""
        headers = {k.lower(): v for k, v in response.headers.items()}
        return cls(response.content, response.status_code, headers)


@dataclass
class Sim:
    """What a producer may drive."""

    handle: SimHandle
    ctl: SimControl
    http: httpx.AsyncClient

    async def rest(self, path: str, **params: str) -> Answer:
        url = f"{self.handle.binance_rest_url}/api/v3/{path}"
        return Answer.of(await self.http.get(url, params=params))

    async def frame(
        self, path: str, match: Callable[[Any], bool], *, send: str | None = None
    ) -> Answer:
        """The first frame on `path` for which `match` is true (after sending `send`)."""
        async with connect(f"{self.handle.binance_ws_url}{path}", ping_interval=None) as ws:
            if send is not None:
                await ws.send(send)
            return Answer(json.dumps(await recv_until(ws, match, timeout_s=5)).encode())

    async def handshake(self) -> Answer:
        """The answer to a websocket handshake that the simulator refuses."""
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"{self.handle.binance_ws_url}/ws/btcusdt@bookTicker"):
                pass
        response = refused.value.response
        headers = {k.lower(): v for k, v in response.headers.raw_items()}
        return Answer(bytes(response.body or b""), response.status_code, headers)

    async def price(self, **params: str) -> Answer:
        url = f"{self.handle.coingecko_url}/simple/price"
        return Answer.of(await self.http.get(url, params=params))


Producer = Callable[[Sim], Awaitable[Answer]]
FULL = {
    "ids": "bitcoin,ethereum,tether",
    "vs_currencies": "usd,rub",
    "include_last_updated_at": "true",
    "precision": "full",
}


def _has(key: str, value: Any = None) -> Callable[[Any], bool]:
    return lambda frame: isinstance(frame, dict) and key in frame and value in (None, frame[key])


async def _soon(sim: Sim, path: str, match: Callable[[Any], bool]) -> Answer:
    """A frame of a 1 s stream, pushed every 0.2 s instead."""
    await sim.ctl.options(book_interval_s=0.2, ticker_interval_s=0.2)
    return await sim.frame(path, match)


async def _shutdown(sim: Sim, path: str) -> Answer:
    async with connect(f"{sim.handle.binance_ws_url}{path}", ping_interval=None) as ws:
        await sim.ctl.fault("binance_ws", "shutdown", delay_s=1)
        frame = await recv_until(ws, lambda f: "serverShutdown" in json.dumps(f), timeout_s=5)
    return Answer(json.dumps(frame).encode())


async def _ban(sim: Sim, via_handshake: bool) -> Answer:
    await sim.ctl.fault("binance", "ban", duration_s=30)
    return await sim.handshake() if via_handshake else await sim.rest("ticker/bookTicker")


async def _exchange_info(sim: Sim) -> Answer:
    await sim.ctl.set_prices(binance_status={"ETHUSDT": "END_OF_DAY", "USDCUSDT": "CANCEL_ONLY"})
    return await sim.rest("exchangeInfo", symbols=SYMBOLS)


async def _coingecko_prices(sim: Sim, fixture: str) -> Answer:
    body = captured("coingecko", fixture).json()
    await sim.ctl.set_prices(
        coingecko={coin: {vs: str(body[coin][vs]) for vs in ("usd", "rub")} for coin in body}
    )
    for coin, entry in body.items():
        sim.handle.state.coins_updated_s[coin] = entry["last_updated_at"]
    return await sim.price(**FULL)


async def _rate_limited_by_the_minute_cap(sim: Sim) -> Answer:
    await sim.ctl.options(coingecko_calls_per_minute=1)
    await sim.price(**FULL)
    return await sim.price(**FULL)


async def _injected_429(sim: Sim) -> Answer:
    await sim.ctl.fault("coingecko", "429", count=1)
    return await sim.price(**FULL)


async def _wrong_root(sim: Sim, code: int, flat: int) -> Answer:
    await sim.ctl.fault("coingecko", "wrong_root", code=code, flat=flat, count=1)
    return await sim.price(**FULL)


async def _rest_fault(sim: Sim, target: str, kind: str, **params: Any) -> Answer:
    await sim.ctl.fault(target, kind, count=1, **params)
    return await sim.rest("ticker/bookTicker", symbols=SYMBOLS)


async def _blocked_handshake(sim: Sim, kind: str) -> Answer:
    await sim.ctl.fault("binance", kind, count=1)
    return await sim.handshake()


# (venue, fixture) -> producers: how to make the simulator send that kind of message
PRODUCERS: dict[tuple[str, str], dict[str, Producer]] = {
    ("binance", "raw_book_ticker.json"): {
        "stream": lambda s: s.frame("/ws/ethusdt@bookTicker", _has("u")),
    },
    ("binance", "combined_book_ticker.json"): {
        "stream": lambda s: s.frame("/stream?streams=btcusdt@bookTicker", _has("stream")),
    },
    ("binance", "combined_mini_ticker.json"): {
        "stream": lambda s: _soon(s, "/stream?streams=ethusdt@miniTicker", _has("data"))
    },
    ("binance", "raw_ticker.json"): {
        "stream": lambda s: _soon(s, "/ws/btcusdt@ticker", _has("e", "24hrTicker")),
    },
    ("binance", "raw_trade.json"): {
        "stream": lambda s: _soon(s, "/ws/btcusdt@trade", _has("e", "trade")),
    },
    ("binance", "combined_agg_trade.json"): {
        "stream": lambda s: _soon(s, "/stream?streams=usdcusdt@aggTrade", _has("data"))
    },
    ("binance", "server_shutdown_raw.json"): {"event": lambda s: _shutdown(s, "/ws")},
    ("binance", "server_shutdown_combined.json"): {"event": lambda s: _shutdown(s, "/stream")},
    ("binance", "subscribe_ack.json"): {
        "reply": lambda s: s.frame(
            "/ws", _has("id"), send='{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1}'
        ),
    },
    ("binance", "list_subscriptions_reply.json"): {
        "reply": lambda s: s.frame(
            "/ws/btcusdt@bookTicker", _has("id"), send='{"method":"LIST_SUBSCRIPTIONS","id":3}'
        ),
    },
    ("binance", "error_reply_wrapped.json"): {
        "reply": lambda s: s.frame("/ws", _has("error"), send='{"method":"SUBSCRIB","id":3}'),
    },
    ("binance", "error_reply_invalid_json.json"): {
        "reply": lambda s: s.frame("/ws", _has("error"), send="{not json"),
    },
    ("binance", "rest_book_ticker.json"): {
        "rest": lambda s: s.rest("ticker/bookTicker", symbols='["BTCUSDT","ETHUSDT"]'),
    },
    ("binance", "exchange_info.json"): {"rest": _exchange_info},
    ("binance", "rest_400_invalid_symbol_status.json"): {
        "rest": lambda s: s.rest("ticker/bookTicker", symbol="BTCUSDT", symbolStatus="OPEN"),
    },
    ("binance", "rest_418_ban.json"): {
        "rest": lambda s: _ban(s, via_handshake=False),
        "handshake": lambda s: _ban(s, via_handshake=True),
    },
    ("binance", "rest_429_too_many.json"): {
        "rest": lambda s: _rest_fault(s, "binance_rest", "429", retry_after_s=7),
    },
    ("binance", "rest_451_restricted.json"): {
        "rest": lambda s: _rest_fault(s, "binance", "restricted"),
        "handshake": lambda s: _blocked_handshake(s, "restricted"),
    },
    ("binance", "rest_403_waf.html"): {
        "rest": lambda s: _rest_fault(s, "binance", "waf"),
        "handshake": lambda s: _blocked_handshake(s, "waf"),
    },
    ("coingecko", "simple_price.json"): {
        "rest": lambda s: _coingecko_prices(s, "simple_price.json")
    },
    ("coingecko", "simple_price_integers.json"): {
        "rest": lambda s: _coingecko_prices(s, "simple_price_integers.json"),
    },
    ("coingecko", "error_rate_limited.json"): {
        "fault": _injected_429,
        "minute cap": _rate_limited_by_the_minute_cap,
    },
    ("coingecko", "error_wrong_root.json"): {"fault": lambda s: _wrong_root(s, 10011, 0)},
    ("coingecko", "error_wrong_root_flat.json"): {"fault": lambda s: _wrong_root(s, 10010, 1)},
}
CASES = [
    pytest.param(venue, name, how, id=f"{name} ({how})")
    for (venue, name), producers in PRODUCERS.items()
    for how in producers
]


async def test_every_section_g_fixture_has_a_simulator_producer() -> None:
    with_rows = {(v, n) for v in ("binance", "coingecko") for n, e in index(v).items() if e.rows}
    assert with_rows <= set(PRODUCERS)
    held = {row for key in PRODUCERS for row in captured(*key).rows}
    assert held == set(SECTION_G_ROWS)


@pytest.mark.parametrize(("venue", "name", "how"), CASES)
async def test_simulator_matches_the_capture(
    sim: SimHandle, ctl: SimControl, http: httpx.AsyncClient, venue: str, name: str, how: str
) -> None:
    fixture = captured(venue, name)
    answer = await PRODUCERS[(venue, name)][how](Sim(sim, ctl, http))
    if fixture.status is not None:
        assert answer.status == fixture.status
    for header, value in fixture.headers.items():
        if header == "content-type":
            assert value in answer.headers.get(header, ""), header
        else:
            assert header in answer.headers, header
            assert answer.headers[header].isdigit() == value.isdigit(), header
    for header in fixture.absent_headers:
        assert header not in answer.headers, header
    if is_html(fixture.headers, fixture.raw):
        assert is_html(answer.headers, answer.body)
    else:
        assert not shape_mismatches(fixture.json(), json.loads(answer.body))
        if name == "simple_price_integers.json":
            assert json.loads(answer.body) == fixture.json()  # values and int/float types
    assert read_alike(fixture, answer) == read_alike(fixture, Answer(fixture.raw, fixture.status))


def read_alike(fixture: Captured, answer: Answer) -> tuple[Any, ...]:
    """What the service's parser makes of a message: the same for the capture and the sim."""
    headers = httpx.Headers(answer.headers)
    if fixture.venue == "binance" and answer.status is not None and answer.status >= 400:
        error = binance_error(answer.status, headers, answer.body)
        return type(error), error.code, isinstance(error, Banned) and error.until_s is not None
    if fixture.venue == "coingecko" and answer.status is not None and answer.status >= 400:
        source = CoinGeckoSource(CoinGeckoOptions(_env_file=None))
        error = source.error_for(answer.status, headers, answer.body)
        return type(error), error.code
    if fixture.venue == "coingecko":
        quotes = CoinGeckoSource(CoinGeckoOptions(_env_file=None)).parse(answer.body, received_ms=0)
        return ("quotes", sorted(q.symbol for q in quotes))
    if name_is_rest(fixture.name):
        return ("rest",)  # exchangeInfo and bookTicker bodies: see the parser tests
    try:
        parsed = BinanceSource(BinanceOptions(_env_file=None)).parse(answer.body, received_ms=0)
    except (ParseError, RotateRequested, SourceError) as err:
        return (type(err).__name__,)
    return ("quotes", len(parsed))


def name_is_rest(name: str) -> bool:
    return name in ("rest_book_ticker.json", "exchange_info.json")
