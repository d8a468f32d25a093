"""`ratesvc run` against `ratesvc sim`: what a user of the running service relies on."""

from __future__ import annotations

from decimal import Decimal

import pytest

from ratesvc.domain import DIRECTIONS
from tests.e2e.harness import EXPECTED, PRICES, Service, Sim, all_served, numeric, wait_until

pytestmark = pytest.mark.e2e


def test_all_eight_directions_match_the_simulator_for_both_exchangers(service: Service) -> None:
    for exchanger in ("binance", "coingecko"):
        wait_until(lambda e=exchanger: all_served(service, e), what=f"{exchanger} values")
    # If CoinGecko was fresh first at start-up it serves until the worker sees Binance fresh
    # (a first freshness is no comeback: no hold-down, see test_choice); then Binance serves.
    body = wait_until(
        lambda: (b := service.courses().json())["exchanger"] == "binance" and b,
        timeout_s=10,
        what="binance serving by default",
    )
    assert [c["direction"] for c in body["courses"]] == list(DIRECTIONS)
    assert service.courses(direction="btc-rub,ETH-USD").json()["courses"] == [
        {"direction": "BTC-RUB", "value": 6685000},
        {"direction": "ETH-USD", "value": 3200},
    ]


def test_a_price_change_reaches_the_api(service: Service, sim: Sim) -> None:
    wait_until(lambda: all_served(service, "binance"), what="binance values")
    sim.post("/prices", {"binance": {"BTCUSDT": "71234.5"}})
    wait_until(
        lambda: service.values("binance")["BTC-USD"] == "71234.5", timeout_s=5, what="new price"
    )
    assert Decimal(service.values("binance")["BTC-RUB"]) == Decimal("71234.5") * Decimal("95.5")
    sim.post("/prices", PRICES)
    wait_until(lambda: all_served(service, "binance"), what="prices restored")


def test_v2_serves_the_books_legs_and_exact_crosses_the_pipeline_carried(
    service: Service,
) -> None:
    wait_until(lambda: all_served(service, "binance"), what="binance values")
    body = service.http.get(
        "/v2/courses", params={"exchanger": "binance", "direction": "BTC-USD,BTC-RUB"}
    ).json()
    usd, rub = body["courses"]
    # the simulator quotes BTCUSDT 70000 with a half spread of 0.01, as bookTicker b/a text
    assert (usd["value"], usd["bid"], usd["ask"]) == ("70000", "69999.99", "70000.01")
    assert [(leg["source"], leg["symbol"]) for leg in rub["legs"]] == [
        ("binance", "BTCUSDT"),
        ("coingecko", "tether/rub"),
    ]
    fx = Decimal(rub["legs"][1]["price"])
    assert fx == Decimal("95.5")
    assert Decimal(rub["bid"]) == Decimal("69999.99") * fx  # the cross's sides x the FX price
    assert Decimal(rub["ask"]) == Decimal("70000.01") * fx
    assert rub["as_of"] == rub["legs"][1]["as_of"] == body["as_of"]  # as old as its FX leg
    sources = {s["exchanger"]: s for s in service.http.get("/v2/sources").json()["sources"]}
    assert (sources["binance"]["state"], sources["binance"]["transport"]) == ("up", "ws")
    assert sources["coingecko"]["transport"] == "poll"


def test_etag_revalidation_goes_200_304_200_after_a_change(service: Service, sim: Sim) -> None:
    wait_until(lambda: all_served(service, "binance"), what="binance values")
    first = service.courses(exchanger="binance", direction="ETH-USD")
    etag = first.headers["etag"]
    assert first.status_code == 200 and first.headers["cache-control"] == "no-cache"
    again = service.http.get(
        "/courses",
        params={"exchanger": "binance", "direction": "ETH-USD"},
        headers={"If-None-Match": etag},
    )
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    sim.post("/prices", {"binance": {"ETHUSDT": "3333"}})
    changed = wait_until(
        lambda: (
            r := service.http.get(
                "/courses",
                params={"exchanger": "binance", "direction": "ETH-USD"},
                headers={"If-None-Match": etag},
            )
        ).status_code
        == 200
        and r,
        timeout_s=5,
        what="a 200 after the change",
    )
    assert changed.json()["courses"] == [{"direction": "ETH-USD", "value": 3333}]
    assert changed.headers["etag"] != etag
    sim.post("/prices", PRICES)


def test_default_exchanger_fails_over_to_coingecko_when_binance_disconnects(
    service: Service, sim: Sim
) -> None:
    wait_until(lambda: service.courses().json()["exchanger"] == "binance", what="binance serving")
    try:
        sim.fault("binance_ws", "refuse")
        sim.fault("binance_rest", "refuse")
        sim.fault("binance_ws", "disconnect")
        served = wait_until(
            lambda: (r := service.courses()).json()["exchanger"] == "coingecko" and r,
            timeout_s=10,
            what="failover to coingecko",
        )
        assert served.status_code == 200
        assert numeric({c["direction"]: str(c["value"]) for c in served.json()["courses"]}) == (
            numeric(EXPECTED["coingecko"])
        )
    finally:
        sim.clear()
    wait_until(
        lambda: service.courses().json()["exchanger"] == "binance", timeout_s=30, what="failback"
    )


BAD_QUERIES = [
    "direction=DOGE-USD",
    "direction=btc-eur",
    "direction=",
    "direction=,",
    "direction=BTC-USD,,ETH-USD",
    "direction=BTCUSD",
    "direction=" + "X" * 5000,
    "direction=" + ",".join(["BTC-USD"] * 200),
    "direction=BTC-USD%00",
    "direction=%F0%9F%92%B0",
    "direction=BTC-USD&direction=NOPE",
    "exchanger=kraken",
    "exchanger=",
    "exchanger=BINANCE2",
    "exchanger=binance&exchanger=coingecko",
    "exchanger=" + "b" * 5000,
    "exchanger=%00",
    "exchanger=binance,coingecko",
    "exchanger=coingecko&direction=ETH-JPY",
    "exchanger[]=binance",
]
BAD_REQUESTS = [("GET", f"/courses?{q}", {}) for q in BAD_QUERIES] + [
    ("GET", "/v1/courses?direction=nope", {}),
    ("GET", "/v2/courses?direction=nope", {}),
    ("GET", "/v2/sources?exchanger=binance", {}),
    ("GET", "/v3/courses", {}),
    ("GET", "/v0/courses", {}),
    ("GET", "/courses", {"Accept-Version": "3"}),
    ("GET", "/courses", {"Accept-Version": "v9"}),
    ("GET", "/courses", {"Accept-Version": ""}),
    ("GET", "/courses", {"Accept-Version": "latest"}),
    ("GET", "/courses", {"Accept-Version": "1" * 300}),
    ("POST", "/courses", {}),
    ("PUT", "/v1/courses", {}),
    ("DELETE", "/courses", {}),
    ("GET", "/course", {}),
    ("GET", "/v1/courses/BTC-USD/extra", {}),
    ("GET", "/nope", {}),
]


def test_bad_inputs_are_4xx_problem_json_never_5xx(service: Service) -> None:
    assert len(BAD_REQUESTS) >= 30
    wait_until(lambda: all_served(service, "binance"), what="binance values")
    failures = []
    for method, url, headers in BAD_REQUESTS:
        response = service.http.request(method, url, headers=headers)
        ok = 400 <= response.status_code < 500 and response.headers.get(
            "content-type", ""
        ).startswith("application/problem+json")
        if ok:
            body = response.json()
            ok = body.get("status") == response.status_code and body.get("title")
        if not ok:
            failures.append((method, url[:80], headers, response.status_code, response.text[:200]))
    assert not failures, failures
