"""Binance REST fallback (BinanceRestPoller) with a mocked API and a manual clock."""

from __future__ import annotations

import json
from decimal import Decimal

import httpx
import pytest
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus
from websockets.http11 import Response as WsResponse

from ratesvc.domain import Transport
from ratesvc.errors import Banned, ParseError, Unavailable
from ratesvc.sources.backoff import Backoff
from ratesvc.sources.binance import BinanceOptions, BinanceSource
from ratesvc.sources.binance_rest import BinanceRestPoller
from ratesvc.sources.gate import BAN_FLOOR_S, BAN_MARGIN_S, Gate
from tests.unit.sources.source_helpers import NOV_1_2026, ManualClock, Supervised

BOOK = [
    {"symbol": "BTCUSDT", "bidPrice": "100.0", "bidQty": "1", "askPrice": "102.0", "askQty": "1"},
    {"symbol": "ETHUSDT", "bidPrice": "10.0", "bidQty": "1", "askPrice": "11.0", "askQty": "1"},
]


class Api:
    """Mocked Binance REST: exchangeInfo and bookTicker; records bookTicker call times."""

    def __init__(self, clock: ManualClock, *responses: httpx.Response) -> None:
        self.clock = clock
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []
        self.times: list[float] = []
        self.rate_limits: list[dict[str, object]] = []
        self.info_headers: dict[str, str] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v3/exchangeInfo":
            symbols = [{"symbol": s, "status": "TRADING"} for s in ("BTCUSDT", "ETHUSDT")]
            body = {"symbols": symbols, "rateLimits": self.rate_limits}
            return httpx.Response(200, json=body, headers=self.info_headers)
        self.requests.append(request)
        self.times.append(self.clock())
        if len(self.responses) > 1:
            return self.responses.pop(0)
        return self.responses[0] if self.responses else httpx.Response(200, json=BOOK)


class Feed(Supervised):
    """BinanceSource's REST poller supervised on a manual clock (wall time: 30 s into a minute)."""

    def __init__(self, *responses: httpx.Response, **options: object) -> None:
        clock = ManualClock(wall_start=NOV_1_2026 + 30)
        self.api = Api(clock, *responses)
        opts = BinanceOptions(_env_file=None, rest_url="http://binance.test", **options)
        self.gate = Gate("binance", clock=clock, wall_clock=clock.time)
        self.owner = BinanceSource(
            opts, http_transport=httpx.MockTransport(self.api), gate=self.gate
        )
        self.poller = self.owner.rest
        self.poller.clock, self.poller.sleep = clock, clock.sleep
        self.poller.wall_clock = clock.time
        super().__init__(self.poller, backoff=Backoff(random_fraction=lambda: 0.0), clock=clock)
        self.manual = clock


def used(weight: int, status: int = 200, **headers: str) -> httpx.Response:
    """A bookTicker answer reporting the IP's used weight."""
    body = BOOK if status == 200 else {"code": -1003, "msg": "Too much request weight used"}
    return httpx.Response(
        status, json=body, headers={"X-MBX-USED-WEIGHT-1M": str(weight), **headers}
    )


def poller() -> BinanceRestPoller:
    return BinanceSource(BinanceOptions(_env_file=None)).rest


def test_parse_gives_rest_mid_prices() -> None:
    quotes = poller().parse(json.dumps(BOOK), received_ms=5)
    assert [(q.symbol, q.price, q.ts_ms, q.transport) for q in quotes] == [
        ("BTC/USDT", Decimal("101.0"), 5, Transport.REST),
        ("ETH/USDT", Decimal("10.5"), 5, Transport.REST),
    ]
    assert all(q.source == "binance" for q in quotes)


def test_parse_keeps_each_symbols_bid_and_ask_exactly() -> None:
    body = b'[{"symbol":"BTCUSDT","bidPrice":"67000.10000000","bidQty":"1.2",'
    body += b'"askPrice":"67000.30000000","askQty":"0.8"}]'
    quotes = poller().parse(body, received_ms=5)
    assert len(quotes) == 1
    quote = quotes[0]
    assert (str(quote.bid), str(quote.ask)) == ("67000.10000000", "67000.30000000")
    assert quote.price == Decimal("67000.2")


def test_parse_of_an_empty_list_is_no_quotes() -> None:
    assert not poller().parse(b"[]", received_ms=0)  # no wanted symbol is TRADING


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b'{"code": -1121}',
        b'[{"symbol": "BTCRUB", "bidPrice": "1", "askPrice": "2"}]',
        b'[{"symbol": "BTCUSDT", "bidPrice": "0.0", "askPrice": "2"}]',
    ],
)
def test_parse_rejects_junk(raw: bytes) -> None:
    with pytest.raises(ParseError):
        poller().parse(raw, received_ms=0)


async def test_polls_trading_symbols_at_the_cadence() -> None:
    async with Feed() as feed:
        await feed.manual.advance(2.5)
    assert feed.api.times == [0, 1, 2]
    params = feed.api.requests[0].url.params
    assert feed.api.requests[0].url.path == "/api/v3/ticker/bookTicker"
    assert json.loads(params["symbols"]) == ["BTCUSDT", "ETHUSDT"]
    assert params["symbolStatus"] == "TRADING"
    assert len(feed.quotes) == 6


async def test_waits_for_the_next_minute_when_the_weight_budget_is_reached() -> None:
    # half of 6000: at 2997 used another call (weight 4) would pass 3000
    async with Feed(used(2_000), used(2_997), used(4)) as feed:
        await feed.manual.advance(33)
    assert feed.api.times == [0, 1, 30, 31, 32, 33]  # wall time 31 s: the minute ends 29 s later


async def test_429_retry_after_is_honoured() -> None:
    async with Feed(used(100), used(200, status=429, **{"Retry-After": "7"}), used(8)) as feed:
        await feed.manual.advance(10)
    assert feed.api.times == [0, 1, 8, 9, 10]  # no call during the 7 s


async def test_429_beyond_the_limit_waits_for_the_minute_to_end() -> None:
    async with Feed(used(100), used(6_004, status=429, **{"Retry-After": "7"}), used(8)) as feed:
        await feed.manual.advance(31)
    assert feed.api.times == [0, 1, 30, 31]  # the used weight says: not before the next minute


async def test_418_ban_is_honoured() -> None:
    async with Feed(used(100, status=418, **{"Retry-After": "120"}), used(8)) as feed:
        await feed.manual.advance(121)
    assert feed.api.times == [0, 120, 121]


def banned(until_s: float | None, **headers: str) -> httpx.Response:
    """A 418 ban answer shaped as tests/fixtures/binance/rest_418_ban.json."""
    msg = "Way too much request weight used; " + (
        f"IP banned until {int(until_s * 1000)}. " if until_s is not None else ""
    )
    body = {"code": -1003, "msg": msg + "Please use WebSocket Streams for live updates."}
    return httpx.Response(418, json=body, headers={"X-MBX-USED-WEIGHT-1M": "6012", **headers})


async def test_418_ban_end_named_in_the_message_is_honoured_without_retry_after() -> None:
    # the wall clock reads NOV_1_2026 + 30 at the start; the ban ends 60 s later
    async with Feed(banned(NOV_1_2026 + 90), used(8)) as feed:
        await feed.manual.advance(63)
    assert feed.api.times == [0, 60 + BAN_MARGIN_S, 61 + BAN_MARGIN_S]


async def test_418_naming_no_end_waits_a_long_floor() -> None:
    async with Feed(banned(None), used(8)) as feed:
        await feed.manual.advance(BAN_FLOOR_S - 1)
        assert feed.api.times == [0]
        await feed.manual.advance(1)
    assert feed.api.times == [0, BAN_FLOOR_S]


async def test_used_weight_is_read_from_exchange_info_answers_too() -> None:
    # exchangeInfo (read within the first poll) says the IP used 2998 of the minute, and the
    # bookTicker answers say nothing: no further call (4) until the minute ends
    feed = Feed()
    feed.api.info_headers = {"X-MBX-USED-WEIGHT-1M": "2998"}
    async with feed:
        await feed.manual.advance(31)
    assert feed.api.times == [0, 30, 31]  # wall time 30 s into the minute: 30 s to wait


async def test_live_weight_limit_from_exchange_info_is_adopted() -> None:
    async with Feed() as feed:
        feed.api.rate_limits = [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": 1200,
            }
        ]
        await feed.owner.refresh_symbols()
    assert feed.poller.weight_limit_1m == 1200 and feed.poller.weight_budget == 600


def test_fallback_is_the_rest_poller_unless_disabled() -> None:
    assert isinstance(BinanceSource(BinanceOptions(_env_file=None)).fallback(), BinanceRestPoller)
    off = BinanceSource(BinanceOptions(_env_file=None, rest_fallback=False))
    assert off.fallback() is None


def test_refused_or_timed_out_handshakes_switch_at_once() -> None:
    source = BinanceSource(BinanceOptions(_env_file=None))
    denied = InvalidStatus(WsResponse(503, "Service Unavailable", Headers()))
    assert source.refused(denied)
    # _open() raises the venue's error for a denied handshake, caused by the InvalidStatus
    banned = Banned("HTTP 418", status=418)
    banned.__cause__ = denied
    assert source.refused(banned)
    assert not source.refused(Unavailable("exchangeInfo: HTTP 503", status=503))  # not a handshake
    assert source.refused(ConnectionRefusedError()) and source.refused(TimeoutError())
    assert not source.refused(OSError("reset")) and not source.refused(ParseError("x"))
    assert source.fallback_after_failures == 2


async def test_rest_vets_symbols_when_the_websocket_never_did() -> None:
    async with Feed() as feed:
        await feed.manual.advance(0)
    assert feed.owner.symbols == ["BTCUSDT", "ETHUSDT"]
    assert feed.api.times == [0]
