"""CoinGecko side of the simulator: simple/price shape, call records, cache and faults."""

# pylint: disable=missing-function-docstring,missing-class-docstring

from __future__ import annotations

import httpx
import pytest

from ratesvc.sim import SimHandle
from ratesvc.sim.testing import SimControl

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(15)]

FULL = {
    "ids": "bitcoin,ethereum,tether,no-such-coin",
    "vs_currencies": "usd,rub",
    "include_last_updated_at": "true",
    "include_24hr_change": "true",
    "precision": "full",
}


async def price(http: httpx.AsyncClient, sim: SimHandle, **params: str) -> httpx.Response:
    return await http.get(f"{sim.coingecko_url}/simple/price", params=params)


async def test_ping_and_supported_vs_currencies(sim: SimHandle, http: httpx.AsyncClient) -> None:
    ping = await http.get(f"{sim.coingecko_url}/ping")
    assert ping.json() == {"gecko_says": "(V3) To the Moon!"}
    supported = (await http.get(f"{sim.coingecko_url}/simple/supported_vs_currencies")).json()
    assert {"usd", "rub"} <= set(supported)


async def test_simple_price_has_the_documented_shape_with_numbers(
    sim: SimHandle, http: httpx.AsyncClient
) -> None:
    body = (await price(http, sim, **FULL)).json()
    assert set(body) == {"bitcoin", "ethereum", "tether"}  # unknown ids are omitted
    for entry in body.values():
        assert set(entry) == {"usd", "usd_24h_change", "rub", "rub_24h_change", "last_updated_at"}
        assert isinstance(entry["last_updated_at"], int)
    assert body["tether"]["usd"] == 1.0003 and body["tether"]["rub"] == 95.5
    # Defaults are coherent with Binance: BTC/RUB == BTC/USDT (65000) x USDT/RUB, a round value
    # the live API writes as a JSON integer
    assert body["bitcoin"]["rub"] == 6207500 and isinstance(body["bitcoin"]["rub"], int)
    assert isinstance(body["bitcoin"]["usd"], float)  # 65019.5
    bare = (await price(http, sim, ids="bitcoin", vs_currencies="usd")).json()
    assert bare == {"bitcoin": {"usd": 65019.5}}


async def test_round_prices_are_json_integers_others_floats(
    sim: SimHandle, http: httpx.AsyncClient, ctl: SimControl
) -> None:
    await ctl.set_prices(coingecko={"bitcoin": {"usd": "111813", "rub": "9023457.12"}})
    raw = (await price(http, sim, ids="bitcoin", vs_currencies="usd,rub")).content
    assert raw == b'{"bitcoin":{"usd":111813,"rub":9023457.12}}'
    rounded = await price(http, sim, ids="bitcoin", vs_currencies="rub", precision="0")
    assert rounded.content == b'{"bitcoin":{"rub":9023457}}'


async def test_missing_parameters_are_400(sim: SimHandle, http: httpx.AsyncClient) -> None:
    response = await price(http, sim, ids="bitcoin")
    assert response.status_code == 400 and "vs_currencies" in response.json()["error"]


async def test_api_key_headers_and_call_budget_are_recorded(
    sim: SimHandle, http: httpx.AsyncClient, ctl: SimControl
) -> None:
    url = f"{sim.coingecko_url}/simple/price"
    await http.get(url, params=FULL, headers={"x-cg-demo-api-key": "demo-key"})
    await http.get(url, params=FULL, headers={"x-cg-pro-api-key": "pro-key"})
    calls = await ctl.calls("coingecko")
    assert [c["headers"].get("x-cg-demo-api-key") for c in calls] == ["demo-key", None]
    assert calls[1]["headers"]["x-cg-pro-api-key"] == "pro-key"
    assert calls[0]["path"] == "/api/v3/simple/price" and "vs_currencies=usd" in calls[0]["query"]
    assert (await ctl.state())["counters"]["coingecko_calls"] == 2
    assert sim.state.coingecko_calls[0].headers["x-cg-demo-api-key"] == "demo-key"


async def test_last_updated_at_moves_only_when_the_price_changes(
    sim: SimHandle, http: httpx.AsyncClient, ctl: SimControl
) -> None:
    sim.state.coins_updated_s["tether"] = 1_000  # an old, known stamp
    await ctl.set_prices(coingecko={"tether": {"usd": 1.0003}})  # unchanged
    assert (await price(http, sim, **FULL)).json()["tether"]["last_updated_at"] == 1_000
    await ctl.set_prices(coingecko={"tether": {"usd": 0.9991, "rub": 97.25}})
    tether = (await price(http, sim, **FULL)).json()["tether"]
    assert tether["last_updated_at"] > 1_000
    assert (tether["usd"], tether["rub"]) == (0.9991, 97.25)


async def test_cache_option_serves_a_snapshot(
    sim: SimHandle, http: httpx.AsyncClient, ctl: SimControl
) -> None:
    await ctl.options(coingecko_cache_s=60)
    assert (await price(http, sim, ids="bitcoin", vs_currencies="usd")).json()["bitcoin"][
        "usd"
    ] == 65019.5
    await ctl.set_prices(coingecko={"bitcoin": {"usd": 70000}})
    cached = (await price(http, sim, ids="bitcoin", vs_currencies="usd")).json()
    assert cached["bitcoin"]["usd"] == 65019.5
    await ctl.options(coingecko_cache_s=0)
    fresh = (await price(http, sim, ids="bitcoin", vs_currencies="usd")).json()
    assert fresh["bitcoin"]["usd"] == 70000


async def test_429_carries_retry_after_unless_asked_not_to(
    sim: SimHandle, http: httpx.AsyncClient, ctl: SimControl
) -> None:
    await ctl.fault("coingecko", "429", count=1)
    hinted = await price(http, sim, **FULL)
    assert hinted.status_code == 429 and hinted.headers["retry-after"] == "60"
    assert hinted.json()["status"]["error_code"] == 429
    await ctl.fault("coingecko", "429", retry_after_s=None, count=1)
    plain = await price(http, sim, **FULL)
    assert plain.status_code == 429 and "retry-after" not in plain.headers
    assert (await price(http, sim, **FULL)).status_code == 200


async def test_calls_over_the_per_minute_limit_get_429_with_retry_after(
    sim: SimHandle, http: httpx.AsyncClient, ctl: SimControl
) -> None:
    await ctl.options(coingecko_calls_per_minute=2)
    statuses = [(await price(http, sim, **FULL)).status_code for _ in range(2)]
    over = await price(http, sim, **FULL)
    assert statuses == [200, 200] and over.status_code == 429
    assert 1 <= int(over.headers["retry-after"]) <= 60
    assert over.json()["status"]["error_code"] == 429
    await ctl.options(coingecko_calls_per_minute=0)
    assert (await price(http, sim, **FULL)).status_code == 200


@pytest.mark.parametrize(("code", "flat"), [(10010, 0), (10011, 1)])
async def test_wrong_root_fault_answers_both_body_shapes(
    sim: SimHandle, http: httpx.AsyncClient, ctl: SimControl, code: int, flat: int
) -> None:
    await ctl.fault("coingecko", "wrong_root", code=code, flat=flat, count=1)
    answer = await price(http, sim, **FULL)
    body = answer.json()
    assert answer.status_code == 400
    if flat:
        assert body["error_code"] == code and "timestamp" in body["status"]
    else:
        assert body["status"]["error_code"] == code
    assert "root URL" in body["status"]["error_message"]
    assert (await price(http, sim, **FULL)).status_code == 200


async def test_5xx_and_refuse_faults(
    sim: SimHandle, http: httpx.AsyncClient, ctl: SimControl
) -> None:
    await ctl.fault("coingecko", "5xx")
    assert (await price(http, sim, **FULL)).status_code == 503
    await ctl.clear("coingecko")
    await ctl.fault("coingecko", "refuse", count=1)
    with pytest.raises(httpx.TransportError):
        await price(http, sim, **FULL)
    assert (await price(http, sim, **FULL)).status_code == 200
    counters = (await ctl.state())["counters"]
    assert counters["coingecko_refused"] == 1
    assert counters["coingecko_status_503"] == 1
