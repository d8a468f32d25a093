"""Binance websocket side of the simulator: streams, live requests and keepalive."""

# pylint: disable=missing-function-docstring,missing-class-docstring

from __future__ import annotations

import asyncio
import base64
import json
import os
from decimal import Decimal

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from ratesvc.sim import SimHandle
from ratesvc.sim.testing import SimControl, recv_json, recv_until

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(15)]

FIELDS = {
    "bookTicker": {"u", "s", "b", "B", "a", "A"},
    "miniTicker": {"e", "E", "s", "c", "o", "h", "l", "v", "q"},
    "ticker": {
        *"e E s p P w x c Q b B a A o h l v q O C F L n".split(),
    },
    "trade": {"e", "E", "s", "t", "p", "q", "T", "m", "M"},
    "aggTrade": {"e", "E", "s", "a", "p", "q", "f", "l", "T", "m", "M"},
}
INTS = {
    "bookTicker": {"u"},
    "miniTicker": {"E"},
    "ticker": {"E", "O", "C", "F", "L", "n"},
    "trade": {"E", "t", "T"},
    "aggTrade": {"E", "a", "f", "l", "T"},
}
BOOLS = {"m", "M"}


async def quiet(ctl: SimControl) -> None:
    """Turn periodic pushes off, so every frame comes from a price change."""
    await ctl.options(book_interval_s=0, ticker_interval_s=0)


async def test_raw_stream_delivers_bare_book_ticker_with_string_prices(sim: SimHandle) -> None:
    async with connect(f"{sim.binance_ws_url}/ws/btcusdt@bookTicker", ping_interval=None) as ws:
        frame = await recv_json(ws)
    assert set(frame) == FIELDS["bookTicker"]
    assert frame["s"] == "BTCUSDT" and isinstance(frame["u"], int)
    assert all(isinstance(frame[k], str) for k in "bBaA")
    assert (Decimal(frame["b"]) + Decimal(frame["a"])) / 2 == Decimal("65000")


async def test_combined_stream_pushes_every_kind_at_once_on_a_price_change(
    sim: SimHandle, ctl: SimControl
) -> None:
    await quiet(ctl)
    names = [f"btcusdt@{kind}" for kind in FIELDS]
    async with connect(f"{sim.binance_ws_url}/stream?streams={'/'.join(names)}") as ws:
        await ctl.set_prices(binance={"BTCUSDT": "70000.5"})
        frames = [await recv_json(ws) for _ in FIELDS]
    assert sorted(f["stream"] for f in frames) == sorted(names)
    for frame in frames:
        kind, data = frame["stream"].split("@")[1], frame["data"]
        assert set(data) == FIELDS[kind], kind
        for key, value in data.items():
            expected = int if key in INTS[kind] else bool if key in BOOLS else str
            assert isinstance(value, expected), (kind, key, value)
        price = data.get("c") or data.get("p")
        if kind == "bookTicker":
            assert (Decimal(data["b"]) + Decimal(data["a"])) / 2 == Decimal("70000.5")
        else:
            assert Decimal(price) == Decimal("70000.5"), kind


async def test_book_ticker_update_ids_increase(sim: SimHandle) -> None:
    async with connect(f"{sim.binance_ws_url}/ws/ethusdt@bookTicker") as ws:
        ids = [(await recv_json(ws))["u"] for _ in range(3)]
    assert ids == sorted(ids) and len(set(ids)) == 3


async def test_delisted_and_upper_case_streams_are_acked_but_silent(sim: SimHandle) -> None:
    streams = "btcrub@bookTicker/usdtrub@bookTicker/BTCUSDT@bookTicker/btcusdt@bookTicker"
    async with connect(f"{sim.binance_ws_url}/ws/{streams}") as ws:
        symbols = {(await recv_json(ws))["s"] for _ in range(5)}
    assert symbols == {"BTCUSDT"}


async def test_live_subscribe_list_unsubscribe_on_bare_ws(sim: SimHandle) -> None:
    async with connect(f"{sim.binance_ws_url}/ws") as ws:
        await ws.send(
            json.dumps({"method": "SUBSCRIBE", "params": ["ethusdt@bookTicker"], "id": 1})
        )
        assert await recv_json(ws) == {"result": None, "id": 1}
        frame = await recv_until(ws, lambda f: f.get("s") == "ETHUSDT")
        assert "stream" not in frame
        await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": "a1"}))
        reply = await recv_until(ws, lambda f: "id" in f)
        assert reply == {"result": ["ethusdt@bookTicker"], "id": "a1"}
        await ws.send(
            json.dumps({"method": "UNSUBSCRIBE", "params": ["ethusdt@bookTicker"], "id": 3})
        )
        assert await recv_until(ws, lambda f: "id" in f) == {"result": None, "id": 3}
        await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 4}))
        assert await recv_until(ws, lambda f: "id" in f) == {"result": [], "id": 4}


async def test_set_property_combined_switches_the_wrapper(sim: SimHandle) -> None:
    async with connect(f"{sim.binance_ws_url}/ws/btcusdt@bookTicker") as ws:
        assert "stream" not in await recv_json(ws)
        await ws.send(json.dumps({"method": "SET_PROPERTY", "params": ["combined", True], "id": 9}))
        assert await recv_until(ws, lambda f: f.get("id") == 9) == {"result": None, "id": 9}
        frame = await recv_json(ws)
        assert frame["stream"] == "btcusdt@bookTicker" and frame["data"]["s"] == "BTCUSDT"


async def test_junk_requests_get_error_replies_and_keep_the_connection(sim: SimHandle) -> None:
    async with connect(f"{sim.binance_ws_url}/ws") as ws:
        await ws.send("{not json")
        assert (await recv_json(ws))["error"]["code"] == 3
        await ws.send(json.dumps({"method": "NOPE", "id": 1}))
        assert (await recv_json(ws))["error"]["code"] == 2
        await ws.send(json.dumps({"method": "GET_PROPERTY", "params": ["x"], "id": 2}))
        assert await recv_json(ws) == {"error": {"code": 0, "msg": "Unknown property"}, "id": 2}


async def test_more_than_five_messages_a_second_disconnects(sim: SimHandle) -> None:
    async with connect(f"{sim.binance_ws_url}/ws") as ws:
        for i in range(6):
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": i}))
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await recv_json(ws)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert sim.state.counters["binance_ws_rate_limited"] == 1


async def test_too_many_streams_in_the_url_are_rejected(sim: SimHandle, ctl: SimControl) -> None:
    await ctl.options(max_streams=2)
    url = f"{sim.binance_ws_url}/stream?streams=a@trade/b@trade/c@trade"
    with pytest.raises(InvalidStatus) as rejected:
        async with connect(url):
            pass
    assert rejected.value.response.status_code == 400


async def test_client_answering_server_pings_stays_connected(sim: SimHandle) -> None:
    # The client sends no pings of its own; only its automatic pongs keep the connection alive.
    async with connect(f"{sim.binance_ws_url}/ws", ping_interval=None) as ws:
        options = sim.state.options
        await asyncio.sleep(options.ping_interval_s + options.ping_timeout_s + 0.5)
        await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 1}))
        assert await recv_json(ws) == {"result": [], "id": 1}


async def _read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readexactly(2)
    size = head[1] & 0x7F
    if size >= 126:
        size = int.from_bytes(await reader.readexactly(2 if size == 126 else 8), "big")
    return head[0] & 0x0F, await reader.readexactly(size)


async def test_client_ignoring_pings_is_dropped(sim: SimHandle) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.binance_port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    try:
        options = sim.state.options
        async with asyncio.timeout(options.ping_interval_s + options.ping_timeout_s + 3):
            assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
            opcodes = []
            while not opcodes or opcodes[-1] != 0x8:
                opcode, payload = await _read_frame(reader)
                opcodes.append(opcode)
            assert opcodes[0] == 0x9  # a ping came first, and it went unanswered
            assert int.from_bytes(payload[:2], "big") == 1011
            assert await reader.read() == b""
    finally:
        writer.close()
