"""Control API and lifecycle of the simulator."""

# pylint: disable=missing-function-docstring,missing-class-docstring

from __future__ import annotations

import asyncio
import re
from decimal import Decimal

import httpx
import pytest
from loguru import logger
from websockets.asyncio.client import connect

from ratesvc.sim import SimHandle, run_sim
from ratesvc.sim.testing import SimControl, eventually, recv_json

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(15)]


async def test_state_reports_prices_faults_options_and_counters(ctl: SimControl) -> None:
    state = await ctl.state()
    assert state["binance"]["BTCUSDT"] == {
        "price": "65000",
        "bid": "64999.99",
        "ask": "65000.01",
        "status": "TRADING",
    }
    assert state["binance"]["BTCRUB"]["status"] == "BREAK"
    assert state["coingecko"]["tether"]["rub"] == 95.5
    assert state["faults"] == {
        "binance": [],
        "binance_ws": [],
        "binance_rest": [],
        "coingecko": [],
    }
    assert state["options"]["book_interval_s"] == 0.1
    assert state["counters"]["binance_ws_open"] == 0


async def test_asset_move_is_visible_on_both_exchanges(
    sim: SimHandle, http: httpx.AsyncClient, ctl: SimControl
) -> None:
    async with connect(f"{sim.binance_ws_url}/ws/btcusdt@bookTicker") as ws:
        await ctl.set_prices(assets={"BTC": "70000"})
        frame = await recv_json(ws)
        while frame["b"] != "69999.99000000":  # skip a periodic frame sent before the move
            frame = await recv_json(ws)
    rest = await http.get(
        f"{sim.binance_rest_url}/api/v3/ticker/price", params={"symbol": "BTCUSDT"}
    )
    assert rest.json()["price"] == "70000.00000000"
    params = {"ids": "bitcoin", "vs_currencies": "usd,rub"}
    cg = (await http.get(f"{sim.coingecko_url}/simple/price", params=params)).json()
    assert cg == {"bitcoin": {"usd": 70000 * 1.0003, "rub": 70000 * 95.5}}


async def test_bad_bodies_are_400_and_change_nothing(
    sim: SimHandle, http: httpx.AsyncClient
) -> None:
    bad = [
        ("prices", {"binance": {"BTCUSDT": "71000", "NOPE": "1"}}),
        ("prices", {"binance": {"BTCUSDT": -5}}),
        ("prices", {"coingecko": {"bitcoin": {"xyz": 1}}}),
        ("prices", {"binance_status": {"BTCUSDT": "OPEN"}}),
        ("fault", {"target": "binance_ws", "kind": "explode"}),
        ("fault", {"target": "nowhere", "kind": "429"}),
        ("fault", {"target": "coingecko", "kind": "slow", "delay_s": "soon"}),
        ("options", {"ping_interval_s": 1}),
        ("options", {"no_such_option": 1}),
    ]
    for path, body in bad:
        response = await http.post(f"{sim.control_url}/{path}", json=body)
        assert response.status_code == 400, (path, body)
        assert "error" in response.json()
    assert sim.state.symbols["BTCUSDT"].price == Decimal("65000")
    assert not sim.state.faults.active


async def test_both_ports_share_one_state_and_reset_restores_defaults(
    sim: SimHandle, http: httpx.AsyncClient, ctl: SimControl
) -> None:
    other = SimControl(sim.coingecko_control_url, client=http)
    await other.set_prices(binance={"ETHUSDT": "4000"}, binance_status={"ETHUSDT": "HALT"})
    await other.fault("binance_rest", "rest_down")
    state = await ctl.state()
    assert state["binance"]["ETHUSDT"]["status"] == "HALT"
    assert state["faults"]["binance_rest"][0]["kind"] == "5xx"
    state = await ctl.reset()
    assert state["binance"]["ETHUSDT"] == {
        "price": "3200",
        "bid": "3199.99",
        "ask": "3200.01",
        "status": "TRADING",
    }
    assert state["faults"]["binance_rest"] == []


async def test_run_sim_logs_the_chosen_ports_and_stops_on_the_event(
    http: httpx.AsyncClient,
) -> None:
    lines: list[str] = []
    sink = logger.add(lines.append, format="{message}", level="INFO")
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_sim(host="127.0.0.1", binance_port=0, coingecko_port=0, stop=stop)
    )
    try:
        await eventually(lambda: any("sim listening" in line for line in lines))
        urls = re.findall(r"(?:ws|http)://127\.0\.0\.1:(\d+)", "".join(lines))
        binance_port, coingecko_port = int(urls[0]), int(urls[2])
        assert 0 not in (binance_port, coingecko_port)
        ping = await http.get(f"http://127.0.0.1:{coingecko_port}/api/v3/ping")
        assert ping.status_code == 200
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        logger.remove(sink)
    with pytest.raises(httpx.ConnectError):
        await http.get(f"http://127.0.0.1:{binance_port}/api/v3/ping")
