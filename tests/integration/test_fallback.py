"""Binance websocket blocked, REST fine: values keep coming over REST (in-process simulator).

No Redis or Postgres: BinanceSource runs under supervise() against `running_sim()`, and the tests
read quotes, statuses and the simulator's call log. Waits are bounded by `eventually` (a guard
against hangs); assertions are about calls and values, never about how long something took.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from urllib.parse import parse_qs

import pytest
from prometheus_client import REGISTRY

from ratesvc.domain import Quote, SourceState, Transport
from ratesvc.sim import SimHandle, running_sim
from ratesvc.sim.state import CallRecord
from ratesvc.sim.testing import SimControl, eventually
from ratesvc.sources.backoff import Backoff
from ratesvc.sources.binance import BinanceOptions, BinanceSource
from tests.unit.sources.source_helpers import Supervised

BOOK_TICKER = "/api/v3/ticker/bookTicker"
WAIT_S = 10.0  # upper bound for `eventually`: only hangs reach it


@pytest.fixture(name="sim")
async def sim_fixture() -> AsyncIterator[SimHandle]:
    async with running_sim() as handle:
        yield handle


@pytest.fixture(name="ctl")
async def ctl_fixture(sim: SimHandle) -> AsyncIterator[SimControl]:
    async with SimControl(sim.control_url) as ctl:
        yield ctl


class Feed(Supervised):
    """BinanceSource against the simulator, supervised in the background."""

    def __init__(self, sim: SimHandle, **options: object) -> None:
        fields = {
            "ws_url": sim.binance_ws_url,
            "rest_url": sim.binance_rest_url,
            "rest_poll_interval_s": 0.1,
            "stale_after_s": 5.0,
            **options,
        }
        source = BinanceSource(BinanceOptions(_env_file=None, **fields))
        super().__init__(source, backoff=Backoff(initial_s=0.05, max_s=0.2))

    def since(self, index: int, transport: Transport) -> list[Quote]:
        return [q for q in self.quotes[index:] if q.transport == transport]


def calls(sim: SimHandle) -> list[CallRecord]:
    """Every bookTicker call the simulator answered, oldest first."""
    return [c for c in sim.state.call_log("binance_rest") if c.path == BOOK_TICKER]


def book_calls(sim: SimHandle) -> list[dict[str, list[str]]]:
    """Query parameters of every bookTicker call."""
    return [parse_qs(c.query) for c in calls(sim)]


def transport_gauge(transport: str) -> float:
    labels = {"source": "binance", "transport": transport}
    return REGISTRY.get_sample_value("ratesvc_source_transport", labels) or 0.0


async def test_refused_websocket_switches_to_rest_and_back(sim: SimHandle, ctl: SimControl) -> None:
    await ctl.fault("binance_ws", "refuse")
    async with Feed(sim) as feed:
        await eventually(lambda: len(feed.since(0, Transport.REST)) >= 4, WAIT_S)
        assert transport_gauge("rest") == 1 and transport_gauge("ws") == 0
        await ctl.set_prices(binance={"BTCUSDT": "70123.45"})
        mark = len(feed.quotes)
        await eventually(
            lambda: any(q.price == Decimal("70123.45") for q in feed.since(mark, Transport.REST)),
            WAIT_S,
        )
        await ctl.clear("binance_ws")
        await eventually(lambda: feed.states[-1] == (SourceState.UP, Transport.WS), WAIT_S)
        mark = len(feed.quotes)
        rest_calls = sim.state.counters["binance_rest_calls"]
        await ctl.set_prices(binance={"BTCUSDT": "70200"})
        await eventually(lambda: feed.since(mark, Transport.WS), WAIT_S)
        await asyncio.sleep(0.5)  # five REST cadences: polling has stopped
        assert sim.state.counters["binance_rest_calls"] == rest_calls
        assert not feed.since(mark, Transport.REST)
        assert transport_gauge("ws") == 1 and transport_gauge("rest") == 0
    # REST bridged the refusal within the grace: Binance was never reported DOWN
    assert feed.states == [(SourceState.UP, Transport.REST), (SourceState.UP, Transport.WS)]


async def test_rest_values_are_the_simulator_mid_prices(sim: SimHandle, ctl: SimControl) -> None:
    await ctl.fault("binance_ws", "refuse")
    async with Feed(sim) as feed:
        await eventually(lambda: {q.symbol for q in feed.quotes} == {"BTC/USDT", "ETH/USDT"})
    book = (await ctl.state())["binance"]
    for quote in feed.quotes:
        assert quote.transport == Transport.REST and quote.source == "binance"
        entry = book[quote.symbol.replace("/", "")]
        assert quote.price == (Decimal(entry["bid"]) + Decimal(entry["ask"])) / 2
    for query in book_calls(sim):
        assert query["symbolStatus"] == ["TRADING"]
        assert json.loads(query["symbols"][0]) == ["BTCUSDT", "ETHUSDT"]


async def test_halted_symbol_is_dropped_by_symbol_status(sim: SimHandle, ctl: SimControl) -> None:
    await ctl.fault("binance_ws", "refuse")
    async with Feed(sim) as feed:
        await eventually(lambda: feed.quotes, WAIT_S)
        await ctl.set_prices(binance_status={"ETHUSDT": "HALT"})
        calls = len(book_calls(sim))
        await eventually(lambda: len(book_calls(sim)) >= calls + 2, WAIT_S)
        mark = len(feed.quotes)
        await eventually(lambda: len(feed.quotes) >= mark + 2, WAIT_S)
    assert {q.symbol for q in feed.quotes[mark:]} == {"BTC/USDT"}


async def test_accept_and_drop_switches_after_failures_in_a_row(
    sim: SimHandle, ctl: SimControl
) -> None:
    await ctl.fault("binance_ws", "accept_and_drop")
    async with Feed(sim, rest_fallback_after_failures=3) as feed:
        await eventually(lambda: feed.since(0, Transport.REST), WAIT_S)
    dropped = (await ctl.state())["counters"]["binance_ws_dropped_on_accept"]
    assert dropped >= 3
    assert feed.states[0] == (SourceState.UP, Transport.REST)


async def test_rest_429_retry_after_is_honoured(sim: SimHandle, ctl: SimControl) -> None:
    await ctl.fault("binance_ws", "refuse")
    async with Feed(sim) as feed:
        await eventually(lambda: feed.quotes, WAIT_S)
        await ctl.fault("binance_rest", "429", retry_after_s=1, count=1)
        await eventually(lambda: [c.status for c in calls(sim)][-2:] == [429, 200], WAIT_S)
    rest = list(sim.state.call_log("binance_rest"))  # every REST call, exchangeInfo included
    limited = [c.status for c in rest].index(429)
    # no call during the wait: the next one is at least Retry-After later
    assert rest[limited + 1].ts_ms - rest[limited].ts_ms >= 1000
    assert feed.states[-2:] == [
        (SourceState.DOWN, Transport.REST),
        (SourceState.UP, Transport.REST),
    ]


async def test_rest_stays_within_its_weight_budget(sim: SimHandle, ctl: SimControl) -> None:
    # other clients on this IP used 2960 of the minute's weight; our budget is half of 6000:
    # after exchangeInfo (20) five bookTicker calls (4 each) fit, then REST waits for the minute
    minute = sim.state.weight.minute if sim.state.weight.use(2960) else 0
    await ctl.fault("binance_ws", "refuse")
    async with Feed(sim) as feed:
        await eventually(lambda: feed.quotes, WAIT_S)
        for _ in range(20):  # two seconds: twenty REST cadences
            assert sim.state.weight.used <= 3000
            await asyncio.sleep(0.1)
    assert len([c for c in calls(sim) if c.ts_ms // 60_000 == minute]) <= 5
    assert sim.state.counters["binance_rest_status_429"] == 0
