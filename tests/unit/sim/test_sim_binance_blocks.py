"""IP-level blocks of the simulated Binance port (ban, restricted location, firewall), symbol
statuses, weight headers on errors and the incoming-message limit counting control frames."""

from __future__ import annotations

import asyncio
import json
import re
import time

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from ratesvc.sim import SimHandle
from ratesvc.sim.testing import SimControl, eventually, recv_json

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(15)]


async def book(http: httpx.AsyncClient, sim: SimHandle, **params: str) -> httpx.Response:
    url = f"{sim.binance_rest_url}/api/v3/ticker/bookTicker"
    return await http.get(url, params=params or {"symbol": "BTCUSDT"})


async def handshake_status(sim: SimHandle) -> int:
    try:
        async with connect(f"{sim.binance_ws_url}/ws/btcusdt@bookTicker"):
            return 101
    except InvalidStatus as refused:
        return refused.response.status_code


async def test_a_ban_answers_rest_and_handshakes_418_until_it_ends(
    sim: SimHandle, ctl: SimControl, http: httpx.AsyncClient
) -> None:
    before_ms = time.time_ns() // 1_000_000
    await ctl.fault("binance", "ban", duration_s=0.5)
    answer = await book(http, sim)
    assert answer.status_code == 418 and "retry-after" not in answer.headers
    until_ms = int(re.search(r"banned until (\d+)", answer.json()["msg"]).group(1))
    assert before_ms + 500 <= until_ms <= time.time_ns() // 1_000_000 + 500
    assert await handshake_status(sim) == 418
    assert (await ctl.state())["counters"]["binance_requests_while_banned"] == 2
    await eventually(lambda: sim.state.faults.peek("binance", "ban") is None, timeout_s=5)
    assert (await book(http, sim)).status_code == 200
    assert await handshake_status(sim) == 101
    assert (await ctl.state())["faults"]["binance"] == []


async def test_a_ban_sends_retry_after_only_when_asked(
    sim: SimHandle, ctl: SimControl, http: httpx.AsyncClient
) -> None:
    await ctl.fault("binance", "418", duration_s=30, retry_after=1)
    answer = await book(http, sim)
    assert answer.status_code == 418 and 1 <= int(answer.headers["retry-after"]) <= 30


@pytest.mark.parametrize(("disconnect", "closed"), [(1, True), (0, False)])
async def test_a_ban_closes_open_streams_unless_told_not_to(
    sim: SimHandle, ctl: SimControl, disconnect: int, closed: bool
) -> None:
    async with connect(f"{sim.binance_ws_url}/ws/btcusdt@bookTicker") as ws:
        await recv_json(ws)
        await ctl.fault("binance", "ban", duration_s=30, disconnect=disconnect)
        if closed:
            with pytest.raises(ConnectionClosed) as gone:
                async with asyncio.timeout(3):
                    while True:
                        await ws.recv()
            assert gone.value.rcvd is not None and gone.value.rcvd.code == 1008
        else:
            assert (await recv_json(ws))["s"] == "BTCUSDT"


@pytest.mark.parametrize(("kind", "status"), [("restricted", 451), ("waf", 403)])
async def test_restricted_and_firewall_blocks_answer_both_transports(
    sim: SimHandle, ctl: SimControl, http: httpx.AsyncClient, kind: str, status: int
) -> None:
    await ctl.fault("binance", kind, count=2)
    assert (await book(http, sim)).status_code == status
    assert await handshake_status(sim) == status
    assert (await book(http, sim)).status_code == 200  # the count is spent


async def test_injected_errors_carry_the_used_weight(
    sim: SimHandle, ctl: SimControl, http: httpx.AsyncClient
) -> None:
    await ctl.fault("binance_rest", "5xx", count=1)
    down = await book(http, sim)
    ok = await book(http, sim)
    assert down.status_code == 503 and ok.status_code == 200
    assert int(ok.headers["x-mbx-used-weight-1m"]) > int(down.headers["x-mbx-used-weight-1m"])
    assert down.headers["x-mbx-used-weight"] == down.headers["x-mbx-used-weight-1m"]


async def test_handshake_refusal_can_carry_retry_after(sim: SimHandle, ctl: SimControl) -> None:
    await ctl.fault("binance_ws", "refuse", status=429, retry_after_s=7, count=1)
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"{sim.binance_ws_url}/ws"):
            pass
    assert refused.value.response.status_code == 429
    assert refused.value.response.headers["Retry-After"] == "7"


@pytest.mark.parametrize("status", ["END_OF_DAY", "CANCEL_ONLY"])
async def test_every_documented_symbol_status_can_be_set_and_filtered(
    sim: SimHandle, ctl: SimControl, http: httpx.AsyncClient, status: str
) -> None:
    await ctl.set_prices(binance_status={"ETHUSDT": status})
    both = await book(http, sim, symbols='["BTCUSDT","ETHUSDT"]', symbolStatus="TRADING")
    assert [e["symbol"] for e in both.json()] == ["BTCUSDT"]
    info = await http.get(
        f"{sim.binance_rest_url}/api/v3/exchangeInfo", params={"symbolStatus": status}
    )
    assert [s["symbol"] for s in info.json()["symbols"]] == ["ETHUSDT"]


async def test_exchange_info_refuses_symbols_with_symbol_status(
    sim: SimHandle, http: httpx.AsyncClient
) -> None:
    params = {"symbols": '["BTCUSDT"]', "symbolStatus": "TRADING"}
    answer = await http.get(f"{sim.binance_rest_url}/api/v3/exchangeInfo", params=params)
    assert answer.status_code == 400 and answer.json()["code"] == -1128


async def test_client_pings_count_toward_the_five_messages_a_second_limit(
    sim: SimHandle,
) -> None:
    async with connect(f"{sim.binance_ws_url}/ws", ping_interval=None) as ws:
        await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 1}))
        assert await recv_json(ws) == {"result": [], "id": 1}
        for _ in range(5):  # with the message above: six in a second
            await ws.ping()
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(3):
                while True:
                    await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert sim.state.counters["binance_ws_control_frames_received"] == 5
    assert sim.state.counters["binance_ws_rate_limited"] == 1
