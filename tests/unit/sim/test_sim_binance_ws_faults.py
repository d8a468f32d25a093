"""Binance websocket faults injected through the control API."""

# pylint: disable=missing-function-docstring,missing-class-docstring

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from ratesvc.sim import SimHandle
from ratesvc.sim.testing import SimControl, eventually, recv_json

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(15)]


async def fault(ctl: SimControl, kind: str, **params: object) -> None:
    await ctl.fault("binance_ws", kind, **params)


async def close_code(ws: ClientConnection, timeout: float = 3.0) -> int | None:
    """Read until the server closes; return its close code."""
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    return closed.value.rcvd.code if closed.value.rcvd else None


async def test_disconnect_closes_every_open_connection(sim: SimHandle, ctl: SimControl) -> None:
    async with (
        connect(f"{sim.binance_ws_url}/ws") as one,
        connect(f"{sim.binance_ws_url}/ws") as two,
    ):
        await eventually(lambda: sim.state.ws_open == 2)
        await fault(ctl, "disconnect")
        assert await close_code(one) == 1001
        assert await close_code(two) == 1001
    await eventually(lambda: sim.state.ws_open == 0)


async def test_refuse_rejects_handshakes_until_cleared_and_counts_attempts(
    sim: SimHandle, ctl: SimControl
) -> None:
    await fault(ctl, "refuse")
    for _ in range(2):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"{sim.binance_ws_url}/ws"):
                pass
        assert refused.value.response.status_code == 503
    await ctl.clear("binance_ws")
    async with connect(f"{sim.binance_ws_url}/ws"):
        pass
    counters = (await ctl.state())["counters"]
    assert counters["binance_ws_attempts"] == 3
    assert counters["binance_ws_refused"] == 2


async def test_refuse_with_count_refuses_only_that_many(sim: SimHandle, ctl: SimControl) -> None:
    await fault(ctl, "refuse", count=1, status=429)
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"{sim.binance_ws_url}/ws"):
            pass
    assert refused.value.response.status_code == 429
    async with connect(f"{sim.binance_ws_url}/ws"):
        pass


async def test_stall_silences_data_and_replies_but_keeps_the_socket(
    sim: SimHandle, ctl: SimControl
) -> None:
    async with connect(f"{sim.binance_ws_url}/ws/btcusdt@bookTicker", ping_interval=None) as ws:
        await recv_json(ws)
        await fault(ctl, "stall")
        await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 1}))
        # Frames queued before the stall may still land; then silence, which a 0.1 s cadence
        # could never produce while data flows.
        async with asyncio.timeout(3):
            while True:
                try:
                    await asyncio.wait_for(ws.recv(), 0.4)
                except TimeoutError:
                    break
        await ctl.clear()
        frame = await recv_json(ws)
        assert frame["s"] == "BTCUSDT"


async def test_garbage_frames_arrive_and_the_connection_survives(
    sim: SimHandle, ctl: SimControl
) -> None:
    async with connect(f"{sim.binance_ws_url}/ws") as ws:
        await fault(ctl, "garbage", count=5)
        frames = [await asyncio.wait_for(ws.recv(), 2) for _ in range(5)]
        assert any(isinstance(f, bytes) for f in frames)
        with pytest.raises(json.JSONDecodeError):
            json.loads(frames[0])
        await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 1}))
        assert await recv_json(ws) == {"result": [], "id": 1}


async def test_shutdown_sends_server_shutdown_then_closes(sim: SimHandle, ctl: SimControl) -> None:
    async with (
        connect(f"{sim.binance_ws_url}/ws") as raw,
        connect(f"{sim.binance_ws_url}/stream") as combined,
    ):
        await eventually(lambda: sim.state.ws_open == 2)
        await fault(ctl, "shutdown", delay_s=0.2)
        event = await recv_json(raw)
        assert event["e"] == "serverShutdown" and isinstance(event["E"], int)
        wrapped = await recv_json(combined)
        assert wrapped["stream"] == "!serverShutdown"
        assert wrapped["data"]["e"] == "serverShutdown"
        assert await close_code(raw) == 1001
        assert await close_code(combined) == 1001


async def test_cut_closes_connections_at_their_max_age(sim: SimHandle, ctl: SimControl) -> None:
    async with connect(f"{sim.binance_ws_url}/ws") as old:
        await eventually(lambda: sim.state.ws_open == 1)
        await fault(ctl, "cut", max_age_s=0.3)
        async with connect(f"{sim.binance_ws_url}/ws") as young:
            assert await close_code(old) == 1001
            assert await close_code(young) == 1001
    state = await ctl.clear()
    assert state["faults"]["binance_ws"] == []


async def test_accept_and_drop_completes_the_handshake_then_closes(
    sim: SimHandle, ctl: SimControl
) -> None:
    await fault(ctl, "accept_and_drop", count=1)
    async with connect(f"{sim.binance_ws_url}/ws/btcusdt@bookTicker") as ws:
        assert await close_code(ws) == 1011
    async with connect(f"{sim.binance_ws_url}/ws/btcusdt@bookTicker") as ws:
        assert (await recv_json(ws))["s"] == "BTCUSDT"
    assert sim.state.counters["binance_ws_dropped_on_accept"] == 1
