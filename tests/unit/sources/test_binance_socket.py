"""BinanceSource against a local websocket server and a mocked exchangeInfo (no network)."""

# test names say what they check
# pylint: disable=missing-function-docstring,missing-class-docstring

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
from websockets.asyncio.server import ServerConnection, serve

from ratesvc.domain import Quote, SourceState, SourceStatus
from ratesvc.errors import SourceError
from ratesvc.sim.testing import eventually
from ratesvc.sources.backoff import Backoff
from ratesvc.sources.binance import BinanceOptions, BinanceSource
from ratesvc.sources.supervise import supervise
from tests.unit.sources.source_helpers import metric, read_fixture


def book_ticker(symbol: str, bid: str, ask: str) -> str:
    """A combined-stream bookTicker frame as Binance sends it."""
    data = {"u": 1, "s": symbol, "b": bid, "B": "1", "a": ask, "A": "1"}
    return json.dumps({"stream": f"{symbol.lower()}@bookTicker", "data": data})


BTC = book_ticker("BTCUSDT", "100.0", "102.0")
ETH = book_ticker("ETHUSDT", "10.0", "11.0")
USDC = book_ticker("USDCUSDT", "1.0", "1.0002")
SHUTDOWN = read_fixture("binance", "server_shutdown_combined.json").decode()


class ExchangeInfo:
    """A mocked GET /api/v3/exchangeInfo: statuses per symbol, -1121 for unknown ones."""

    def __init__(self, statuses: dict[str, str], *, fail_first: int = 0) -> None:
        self.statuses = statuses
        self.fail_first = fail_first
        self.requested: list[list[str]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v3/exchangeInfo"
        symbols = json.loads(request.url.params["symbols"])
        self.requested.append(symbols)
        if self.fail_first:
            self.fail_first -= 1
            return httpx.Response(503, text="maintenance")
        if any(symbol not in self.statuses for symbol in symbols):
            return httpx.Response(400, json={"code": -1121, "msg": "Invalid symbol."})
        # like Binance, answer with whatever it knows, including a delisted RUB pair
        listed = [{"symbol": s, "status": status} for s, status in self.statuses.items()]
        return httpx.Response(200, json={"timezone": "UTC", "symbols": listed})


@asynccontextmanager
async def binance_server(*connections: list[str]) -> AsyncIterator[tuple[str, list[str]]]:
    """A websocket server playing one list of frames per connection; yields (url, events)."""
    events: list[str] = []
    scripts = list(connections)

    async def handler(ws: ServerConnection) -> None:
        number = len([e for e in events if e.startswith("open")]) + 1
        events.append(f"open {number} {ws.request.path}")
        for frame in scripts.pop(0) if scripts else []:
            await ws.send(frame)
        await ws.wait_closed()
        events.append(f"closed {number}")

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}", events


def make_source(url: str, info: ExchangeInfo, **options: object) -> BinanceSource:
    opts = BinanceOptions(_env_file=None, ws_url=url, rest_url="http://binance.test", **options)
    return BinanceSource(opts, http_transport=httpx.MockTransport(info))


async def run_until(
    source: BinanceSource, done: Callable[[list[Quote]], bool]
) -> tuple[list[Quote], list[SourceStatus]]:
    """Supervise `source` (real clock) until `done(quotes)`; return quotes and statuses."""
    quotes: list[Quote] = []
    statuses: list[SourceStatus] = []
    stop = asyncio.Event()

    async def on_quotes(batch: list[Quote]) -> None:
        quotes.extend(batch)
        if done(quotes):
            stop.set()

    async def on_status(status: SourceStatus) -> None:
        statuses.append(status)

    backoff = Backoff(initial_s=0.01, max_s=0.05)
    runner = supervise(source, on_quotes=on_quotes, on_status=on_status, backoff=backoff, stop=stop)
    await asyncio.wait_for(runner, timeout=10)  # a guard against hangs, not a threshold
    return quotes, statuses


def symbols_seen(quotes: list[Quote]) -> set[str]:
    return {quote.symbol for quote in quotes}


async def test_streams_only_trading_symbols_and_never_rub() -> None:
    info = ExchangeInfo(
        {"BTCUSDT": "TRADING", "ETHUSDT": "BREAK", "USDCUSDT": "TRADING", "BTCRUB": "BREAK"}
    )
    async with binance_server([BTC, USDC]) as (url, events):
        source = make_source(url, info, usdc_correction=True)
        quotes, statuses = await run_until(source, lambda q: len(symbols_seen(q)) == 2)
    assert info.requested == [["BTCUSDT", "ETHUSDT", "USDCUSDT"]]
    assert events[0] == "open 1 /stream?streams=btcusdt@bookTicker/usdcusdt@bookTicker"
    assert "rub" not in events[0].lower()
    assert symbols_seen(quotes) == {"BTC/USDT", "USDC/USDT"}
    assert [status.state for status in statuses] == [SourceState.UP]


async def test_quotes_flow_over_one_combined_connection() -> None:
    info = ExchangeInfo({"BTCUSDT": "TRADING", "ETHUSDT": "TRADING"})
    junk = read_fixture("binance", "junk.txt").decode()
    ack = read_fixture("binance", "subscribe_ack.json").decode()
    async with binance_server([ack, BTC, junk, ETH]) as (url, events):
        quotes, _ = await run_until(make_source(url, info), lambda q: len(symbols_seen(q)) == 2)
    assert events[0] == "open 1 /stream?streams=btcusdt@bookTicker/ethusdt@bookTicker"
    assert [(q.symbol, str(q.price)) for q in quotes] == [
        ("BTC/USDT", "101.0"),
        ("ETH/USDT", "10.5"),
    ]


async def test_unknown_symbol_in_exchange_info_is_asked_one_by_one() -> None:
    info = ExchangeInfo({"BTCUSDT": "TRADING", "ETHUSDT": "TRADING"})  # USDCUSDT unknown: -1121
    source = make_source("ws://unused", info, usdc_correction=True)
    await source.prepare()
    assert source.symbols == ["BTCUSDT", "ETHUSDT"]
    assert info.requested[1:] == [["BTCUSDT"], ["ETHUSDT"], ["USDCUSDT"]]


async def test_exchange_info_failure_backs_off_then_recovers() -> None:
    info = ExchangeInfo({"BTCUSDT": "TRADING", "ETHUSDT": "TRADING"}, fail_first=1)
    errors_before = metric("ratesvc_source_errors_total", source="binance", kind="source")
    async with binance_server([BTC]) as (url, _):
        quotes, statuses = await run_until(make_source(url, info), bool)
    assert quotes
    assert metric("ratesvc_source_errors_total", source="binance", kind="source") > errors_before
    # the retry delivered within the grace the REST fallback allows: never reported DOWN
    assert [status.state for status in statuses] == [SourceState.UP]


async def test_nothing_trading_is_a_source_error() -> None:
    info = ExchangeInfo({"BTCUSDT": "BREAK", "ETHUSDT": "HALT"})
    source = make_source("ws://unused", info)
    try:
        await source.prepare()
    except SourceError as err:
        assert "TRADING" in str(err)
    else:
        raise AssertionError("expected SourceError")


async def test_server_shutdown_rotates_without_a_gap() -> None:
    info = ExchangeInfo({"BTCUSDT": "TRADING", "ETHUSDT": "TRADING"})
    async with binance_server([BTC, SHUTDOWN], [ETH]) as (url, events):
        quotes, statuses = await run_until(make_source(url, info), lambda q: len(q) == 2)
        await eventually(lambda: "closed 1" in events, 5)  # the server saw the old socket close
    opened_second = events.index(next(e for e in events if e.startswith("open 2")))
    assert opened_second < events.index("closed 1")  # new connection first, then the old closed
    assert symbols_seen(quotes) == {"BTC/USDT", "ETH/USDT"}
    assert [status.state for status in statuses] == [SourceState.UP]  # never DOWN


async def test_connection_is_rotated_before_the_24h_cut() -> None:
    source = make_source("ws://unused", ExchangeInfo({}))
    source._refresh_at = time.monotonic() + 3600  # pylint: disable=protected-access
    assert await source.rotation_due(time.monotonic()) is None
    assert "older than" in (await source.rotation_due(time.monotonic() - 86_000) or "")


async def test_hourly_check_rotates_when_the_tradable_set_changes() -> None:
    info = ExchangeInfo({"BTCUSDT": "TRADING", "ETHUSDT": "TRADING"})
    source = make_source("ws://unused", info)
    await source.prepare()
    info.statuses["ETHUSDT"] = "BREAK"
    source._refresh_at = 0.0  # pylint: disable=protected-access  # the hour is up
    opened_at = time.monotonic()
    assert await source.rotation_due(opened_at) is None  # the check runs in the background
    await source._refresh_task  # pylint: disable=protected-access
    assert "tradable symbols changed" in (await source.rotation_due(opened_at) or "")
    assert source.url().endswith("/stream?streams=btcusdt@bookTicker")
    await source.on_close()
