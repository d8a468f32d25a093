"""Binance REST side of the simulator: exchangeInfo, tickers, weights, errors and faults."""

# pylint: disable=missing-function-docstring,missing-class-docstring

from __future__ import annotations

import json
from decimal import Decimal

import httpx
import pytest

from ratesvc.domain import now_ms
from ratesvc.sim import SimHandle
from ratesvc.sim.testing import SimControl

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(15)]


async def get(http: httpx.AsyncClient, sim: SimHandle, path: str, **params: str) -> httpx.Response:
    return await http.get(f"{sim.binance_rest_url}/api/v3/{path}", params=params)


async def rest_fault(ctl: SimControl, kind: str, **params: object) -> None:
    await ctl.fault("binance_rest", kind, **params)


async def test_ping_and_time(sim: SimHandle, http: httpx.AsyncClient) -> None:
    assert (await get(http, sim, "ping")).json() == {}
    assert isinstance((await get(http, sim, "time")).json()["serverTime"], int)


async def test_exchange_info_lists_delisted_rub_pairs_as_not_trading(
    sim: SimHandle, http: httpx.AsyncClient
) -> None:
    body = (await get(http, sim, "exchangeInfo")).json()
    status = {s["symbol"]: s["status"] for s in body["symbols"]}
    assert status == {
        "BTCUSDT": "TRADING",
        "ETHUSDT": "TRADING",
        "USDCUSDT": "TRADING",
        "BTCRUB": "BREAK",
        "ETHRUB": "BREAK",
        "USDTRUB": "BREAK",
    }
    btc = next(s for s in body["symbols"] if s["symbol"] == "BTCUSDT")
    assert (btc["baseAsset"], btc["quoteAsset"]) == ("BTC", "USDT")
    assert {
        "rateLimitType": "REQUEST_WEIGHT",
        "interval": "MINUTE",
        "intervalNum": 1,
        "limit": 6000,
    } in body["rateLimits"]
    some = (await get(http, sim, "exchangeInfo", symbols='["ETHUSDT","USDTRUB"]')).json()
    assert [s["symbol"] for s in some["symbols"]] == ["ETHUSDT", "USDTRUB"]


async def test_ticker_price_single_is_an_object_with_a_string_price_and_weight_2(
    sim: SimHandle, http: httpx.AsyncClient
) -> None:
    minute = now_ms() // 60_000
    response = await get(http, sim, "ticker/price", symbol="BTCUSDT")
    assert response.json() == {"symbol": "BTCUSDT", "price": "65000.00000000"}
    assert response.headers["X-MBX-USED-WEIGHT-1M"] == "2"
    response = await get(http, sim, "ticker/price", symbols='["BTCUSDT","ETHUSDT"]')
    assert [e["symbol"] for e in response.json()] == ["BTCUSDT", "ETHUSDT"]
    # 2 + 4 within one clock minute; the window restarts if the minute turned between the calls
    expected = "6" if now_ms() // 60_000 == minute else "4"
    assert response.headers["X-MBX-USED-WEIGHT-1M"] == expected


async def test_symbol_status_filter_drops_delisted_pairs_from_lists(
    sim: SimHandle, http: httpx.AsyncClient
) -> None:
    everything = (await get(http, sim, "ticker/price")).json()
    assert "BTCRUB" in {e["symbol"] for e in everything}  # frozen price, still served
    trading = (await get(http, sim, "ticker/bookTicker", symbolStatus="TRADING")).json()
    assert {e["symbol"] for e in trading} == {"BTCUSDT", "ETHUSDT", "USDCUSDT"}
    some = await get(
        http, sim, "ticker/price", symbols='["BTCUSDT","BTCRUB"]', symbolStatus="TRADING"
    )
    assert [e["symbol"] for e in some.json()] == ["BTCUSDT"]


async def test_symbol_status_mismatch_for_one_symbol_is_1220(
    sim: SimHandle, http: httpx.AsyncClient
) -> None:
    response = await get(http, sim, "ticker/price", symbol="USDTRUB", symbolStatus="TRADING")
    assert response.status_code == 400
    assert response.json()["code"] == -1220


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"symbol": "NOSUCH"}, -1121),
        ({"symbol": "btcusdt"}, -1121),
        ({"symbols": '["BTCUSDT","NOSUCH"]'}, -1121),
        ({"symbols": "BTCUSDT"}, -1100),
        ({"symbol": "BTCUSDT", "symbols": '["BTCUSDT"]'}, -1128),
        ({"symbol": "BTCUSDT", "symbolStatus": "OPEN"}, -1122),
    ],
)
async def test_bad_parameters_are_400_with_binance_codes(
    sim: SimHandle, http: httpx.AsyncClient, params: dict[str, str], code: int
) -> None:
    response = await get(http, sim, "ticker/price", **params)
    assert response.status_code == 400
    assert response.json()["code"] == code


async def test_book_ticker_mid_is_the_set_price(
    sim: SimHandle, http: httpx.AsyncClient, ctl: SimControl
) -> None:
    await ctl.set_prices(binance={"ETHUSDT": "3333.33"})
    entry = (await get(http, sim, "ticker/bookTicker", symbol="ETHUSDT")).json()
    assert set(entry) == {"symbol", "bidPrice", "bidQty", "askPrice", "askQty"}
    assert (Decimal(entry["bidPrice"]) + Decimal(entry["askPrice"])) / 2 == Decimal("3333.33")


async def test_429_fault_carries_retry_after_and_code_1003(
    sim: SimHandle, http: httpx.AsyncClient, ctl: SimControl
) -> None:
    await rest_fault(ctl, "rest_429", retry_after_s=7, count=1)
    response = await get(http, sim, "ticker/price", symbol="BTCUSDT")
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "7"
    assert response.json()["code"] == -1003
    assert (await get(http, sim, "ticker/price", symbol="BTCUSDT")).status_code == 200


async def test_down_fault_is_503_until_cleared(
    sim: SimHandle, http: httpx.AsyncClient, ctl: SimControl
) -> None:
    await rest_fault(ctl, "rest_down")
    assert (await get(http, sim, "ticker/price")).status_code == 503
    assert (await get(http, sim, "ping")).status_code == 503
    await ctl.clear("binance_rest")
    assert (await get(http, sim, "ping")).status_code == 200


async def test_slow_fault_delays_the_answer(
    sim: SimHandle, http: httpx.AsyncClient, ctl: SimControl
) -> None:
    await rest_fault(ctl, "slow", delay_s=1, count=1)
    with pytest.raises(httpx.ReadTimeout):
        await http.get(f"{sim.binance_rest_url}/api/v3/ping", timeout=0.2)


async def test_refuse_fault_drops_the_connection_but_not_the_control_api(
    sim: SimHandle, http: httpx.AsyncClient, ctl: SimControl
) -> None:
    await rest_fault(ctl, "refuse")
    with pytest.raises(httpx.TransportError):
        await get(http, sim, "ping")
    state = await ctl.state()
    assert state["counters"]["binance_rest_refused"] == 1


async def test_rest_calls_are_recorded(
    sim: SimHandle, http: httpx.AsyncClient, ctl: SimControl
) -> None:
    await get(http, sim, "ticker/price", symbol="BTCUSDT")
    calls = await ctl.calls("binance_rest")
    assert [c["path"] for c in calls] == ["/api/v3/ticker/price"]
    assert json.dumps(calls)  # plain JSON
