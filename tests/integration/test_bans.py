"""Binance bans, limits and blocks against the in-process simulator: what reaches the venue.

BinanceSource runs under supervise() with fast retries (a 0.05-0.2 s backoff, REST every 0.1 s),
so any request the gate let through would show many times over. No Redis or Postgres. Waits are
bounded by `eventually` (a guard against hangs); the assertions count requests at the simulator
and order them by its timestamps, never by how long something took.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator

import pytest
from loguru import logger
from redis.asyncio import Redis

from ratesvc.bus import BAN, BanBoard
from ratesvc.domain import SourceState, Transport
from ratesvc.sim import SimHandle, running_sim
from ratesvc.sim.state import CallRecord
from ratesvc.sim.testing import SimControl, eventually
from ratesvc.sources.backoff import Backoff
from ratesvc.sources.binance import BinanceOptions, BinanceSource
from tests.unit.sources.source_helpers import Supervised, metric

BAN_S = 3.0  # long against the retries above: without the gate, dozens of requests
WAIT_S = 20.0  # upper bound for `eventually`: only hangs reach it


@pytest.fixture(name="sim")
async def sim_fixture() -> AsyncIterator[SimHandle]:
    async with running_sim() as handle:
        yield handle


@pytest.fixture(name="ctl")
async def ctl_fixture(sim: SimHandle) -> AsyncIterator[SimControl]:
    async with SimControl(sim.control_url) as ctl:
        yield ctl


@pytest.fixture(name="lines")
def lines_fixture() -> Iterator[list[tuple[str, str]]]:
    """(level, message) of every log line while the test runs."""
    lines: list[tuple[str, str]] = []
    sink = logger.add(lambda m: lines.append((m.record["level"].name, m.record["message"])))
    yield lines
    logger.remove(sink)


class Feed(Supervised):
    """BinanceSource against the simulator, supervised in the background with fast retries."""

    def __init__(self, sim: SimHandle) -> None:
        options = BinanceOptions(
            _env_file=None,
            ws_url=sim.binance_ws_url,
            rest_url=sim.binance_rest_url,
            rest_poll_interval_s=0.1,
        )
        super().__init__(BinanceSource(options), backoff=Backoff(initial_s=0.05, max_s=0.2))

    def flowing(self, transport: Transport) -> bool:
        return bool(self.states) and self.states[-1] == (SourceState.UP, transport)

    def since_quotes(self, index: int, transport: Transport) -> bool:
        return any(q.transport == transport for q in self.quotes[index:])


def requests(sim: SimHandle) -> list[CallRecord]:
    """Every REST call and websocket handshake the simulator saw, in time order."""
    calls = list(sim.state.call_log("binance_rest")) + list(sim.state.call_log("binance_ws"))
    return sorted(calls, key=lambda c: c.ts_ms)


def errors(kind: str) -> float:
    return metric("ratesvc_source_errors_total", source="binance", kind=kind)


async def test_a_ban_draws_one_request_from_both_transports(
    sim: SimHandle, ctl: SimControl, lines: list[tuple[str, str]]
) -> None:
    async with Feed(sim) as feed:
        await eventually(lambda: feed.flowing(Transport.WS), WAIT_S)
        held_before = errors("held")
        await ctl.fault("binance", "ban", duration_s=BAN_S)  # closes the stream too
        await eventually(lambda: sim.state.counters["binance_requests_while_banned"] == 1, WAIT_S)
        # the simulator counted its 418 before the client has read it: wait for the gauge
        gauge = "ratesvc_source_banned_until_timestamp_seconds"
        await eventually(lambda: metric(gauge, source="binance") > 0, WAIT_S)
        banned_until = metric(gauge, source="binance")
        assert banned_until >= time.time() + 1  # the ban's end (+ margin) from the message
        # the other transport tried too, and sent nothing
        await eventually(lambda: errors("held") > held_before, WAIT_S)
        await eventually(lambda: sim.state.faults.peek("binance", "ban") is None, WAIT_S)
        mark = len(feed.quotes)
        await eventually(lambda: feed.since_quotes(mark, Transport.WS), WAIT_S)
    assert sim.state.counters["binance_requests_while_banned"] == 1
    critical = [message for level, message in lines if level == "CRITICAL"]
    assert len(critical) == 1 and "banned this IP" in critical[0]
    assert any(s.state is SourceState.DOWN and "banned" in s.reason for s in feed.statuses)
    assert metric("ratesvc_source_banned_until_timestamp_seconds", source="binance") == 0


async def test_retry_after_of_a_refused_handshake_holds_rest_too(
    sim: SimHandle, ctl: SimControl
) -> None:
    async with Feed(sim) as feed:
        await eventually(lambda: feed.flowing(Transport.WS), WAIT_S)
        await ctl.fault("binance_ws", "refuse", status=429, retry_after_s=2, count=1)
        await ctl.fault("binance_ws", "disconnect")
        await eventually(lambda: sim.state.counters["binance_ws_status_429"] == 1, WAIT_S)
        mark = len(feed.quotes)
        await eventually(lambda: feed.since_quotes(mark, Transport.WS), WAIT_S)
    calls = requests(sim)
    limited = next(i for i, c in enumerate(calls) if c.status == 429)
    # nothing at all (REST polls, exchangeInfo, handshakes) before Retry-After had passed
    assert calls[limited + 1].ts_ms - calls[limited].ts_ms >= 2000


@pytest.mark.parametrize(
    ("kind", "status", "advice"),
    [
        ("restricted", 451, "BINANCE_REST_URL=https://data-api.binance.vision"),
        ("waf", 403, "web application firewall"),
    ],
)
async def test_a_refusal_is_one_clear_error_and_a_slow_retry_not_a_loop(
    sim: SimHandle,
    ctl: SimControl,
    lines: list[tuple[str, str]],
    kind: str,
    status: int,
    advice: str,
) -> None:
    async with Feed(sim) as feed:
        await eventually(lambda: feed.flowing(Transport.WS), WAIT_S)
        held_before = errors("held")
        await ctl.fault("binance", kind)  # until cleared: every request would be refused
        await ctl.fault("binance_ws", "disconnect")
        await eventually(lambda: errors("held") > held_before, WAIT_S)
        refused = [c for c in requests(sim) if c.status == status]
        assert len(refused) == 1
        assert feed.source.gate.remaining_s() > 30  # the next try is far off
    told = [message for level, message in lines if level == "ERROR" and advice in message]
    assert len(told) == 1
    assert not [message for _, message in lines if "<html" in message.lower()]


async def test_a_ban_told_to_one_collector_holds_every_collector(
    sim: SimHandle, ctl: SimControl, redis: Redis
) -> None:
    """Two collectors' Binance feeds (one gate each) on one Redis: one 418 for the deployment."""
    await redis.delete(BAN + "binance")
    board = BanBoard(redis)
    async with Feed(sim) as alpha, Feed(sim) as bravo:
        alpha.source.gate.share_with(board)
        bravo.source.gate.share_with(board)
        await eventually(
            lambda: alpha.flowing(Transport.WS) and bravo.flowing(Transport.WS), WAIT_S
        )
        await ctl.fault("binance", "ban", duration_s=BAN_S, disconnect=0)  # streams stay open
        alpha.source.request_rotation("test: alpha reconnects first")
        await eventually(lambda: sim.state.counters["binance_requests_while_banned"] == 1, WAIT_S)
        await eventually(lambda: redis.exists(BAN + "binance"), WAIT_S)
        # bravo reconnects during the ban: it reads the shared ban and sends nothing
        held_before = errors("held")
        bravo.source.request_rotation("test: bravo reconnects during the ban")
        await eventually(lambda: errors("held") > held_before, WAIT_S)
        await eventually(lambda: sim.state.faults.peek("binance", "ban") is None, WAIT_S)
        mark = len(bravo.quotes)
        await eventually(lambda: bravo.since_quotes(mark, Transport.WS), WAIT_S)
    assert sim.state.counters["binance_requests_while_banned"] == 1
