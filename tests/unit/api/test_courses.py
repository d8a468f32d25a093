"""GET /courses and /v1/courses: body shape, filters, versioning, ETags, staleness, 503."""

# pylint: disable=missing-function-docstring

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from ratesvc.api.app import create_app
from ratesvc.api.mirror import RateMirror
from ratesvc.domain import DIRECTIONS, SourceState
from ratesvc.settings import Settings
from tests.unit.api.api_helpers import MAX_AGE_MS, T0, FakeClock, client_for, full_set, status, tick

EXPECTED_ALL = (
    b'{"exchanger":"binance","courses":['
    + b",".join(b'{"direction":"%s","value":54000.000123}' % d.encode() for d in DIRECTIONS)
    + b"]}"
)


async def test_body_is_exactly_the_v1_shape_in_direction_order(client: httpx.AsyncClient) -> None:
    response = await client.get("/courses")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.content == EXPECTED_ALL
    assert [c["direction"] for c in response.json()["courses"]] == list(DIRECTIONS)


@pytest.mark.parametrize(
    ("value", "text"),
    [("0.00000001", b"0.00000001"), ("100", b"100"), ("1E+2", b"100"), ("12.5", b"12.5")],
)
async def test_values_are_decimal_text_never_float_or_exponent(
    settings: Settings, clock: FakeClock, value: str, text: str
) -> None:
    mirror = RateMirror(clock=clock)
    mirror.load([tick("binance", "BTC-USD", value)])
    async with client_for(create_app(settings, mirror=mirror)) as client:
        response = await client.get("/courses?direction=BTC-USD")
    assert (
        response.content
        == b'{"exchanger":"binance","courses":[{"direction":"BTC-USD","value":%s}]}' % text
    )


@pytest.mark.parametrize(
    ("query", "directions"),
    [
        ("direction=eth-rub&direction=BTC-USD", ["BTC-USD", "ETH-RUB"]),
        ("direction=USDTERC-RUB,usdttrc-usd,USDTTRC-USD", ["USDTTRC-USD", "USDTERC-RUB"]),
        ("direction=btc-rub&direction=BTC-RUB,btc-rub", ["BTC-RUB"]),
        ("", list(DIRECTIONS)),
    ],
)
async def test_direction_filter(client: httpx.AsyncClient, query: str, directions: list) -> None:
    response = await client.get(f"/v1/courses?{query}")
    assert response.status_code == 200
    assert [c["direction"] for c in response.json()["courses"]] == directions


async def test_exchanger_filter_is_case_insensitive(client: httpx.AsyncClient) -> None:
    response = await client.get("/courses?exchanger=CoinGecko&direction=BTC-USD")
    assert response.json() == {
        "exchanger": "coingecko",
        "courses": [{"direction": "BTC-USD", "value": 53999.5}],
    }
    assert response.headers["x-rates-stale"] == "false"


@pytest.mark.parametrize("header", [None, "1", "v1", " V1 ", "v1\t"])
async def test_unversioned_path_negotiates_accept_version(
    client: httpx.AsyncClient, header: str | None
) -> None:
    headers = {} if header is None else {"Accept-Version": header}
    response = await client.get("/courses", headers=headers)
    assert response.status_code == 200
    assert response.headers["api-version"] == "1"
    assert response.headers["vary"] == "Accept-Version"
    assert response.content == EXPECTED_ALL


async def test_path_prefix_wins_over_accept_version(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/courses", headers={"Accept-Version": "7"})
    assert response.status_code == 200
    assert response.headers["api-version"] == "1"
    assert "vary" not in response.headers


async def test_bad_accept_version_lists_the_supported_ones(client: httpx.AsyncClient) -> None:
    response = await client.get("/courses", headers={"Accept-Version": "3"})
    assert response.status_code == 406
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["vary"] == "Accept-Version"
    problem = response.json()
    assert problem["type"] == "/problems/unsupported-version"
    assert problem["supported_versions"] == ["1", "2"]
    assert problem["allowed"] == ["1", "v1", "2", "v2"]


async def test_etag_revalidation(client: httpx.AsyncClient, mirror: RateMirror) -> None:
    first = await client.get("/courses")
    etag = first.headers["etag"]
    assert first.headers["cache-control"] == "no-cache"
    for header in [etag, f'"nope", {etag}', f"W/{etag}", "*", f'W/"x",W/{etag}']:
        again = await client.get("/courses", headers={"If-None-Match": header})
        assert again.status_code == 304, header
        assert again.content == b""
        assert again.headers["etag"] == etag
        assert again.headers["cache-control"] == "no-cache"
        assert again.headers["api-version"] == "1"
        assert "content-type" not in again.headers
    miss = await client.get("/courses", headers={"If-None-Match": '"nope", W/"other"'})
    assert miss.status_code == 200 and miss.content == EXPECTED_ALL
    mirror.apply([tick("binance", "BTC-USD", "54001", ts_ms=T0 + 1)])
    changed = await client.get("/courses", headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag
    assert changed.json()["courses"][0]["value"] == 54001


async def test_same_body_same_etag_across_app_instances(
    settings: Settings, clock: FakeClock
) -> None:
    tags = []
    for _ in range(2):
        mirror = RateMirror(clock=clock)
        mirror.load(full_set("binance", value="54000.000123") + full_set("coingecko"))
        async with client_for(create_app(settings, mirror=mirror)) as client:
            tags.append((await client.get("/v1/courses")).headers["etag"])
    assert tags[0] == tags[1]


async def test_stale_values_are_marked_in_headers_only(
    client: httpx.AsyncClient, mirror: RateMirror, clock: FakeClock
) -> None:
    fresh = await client.get("/courses")
    assert fresh.headers["x-rates-stale"] == "false"
    assert fresh.headers["x-rates-as-of"] == "2023-11-14T22:13:20.000Z"
    assert "x-rates-age" not in fresh.headers
    clock.advance(MAX_AGE_MS / 1000 + 12)
    mirror.evaluate()
    stale = await client.get("/courses")
    assert stale.status_code == 200
    assert stale.content == fresh.content
    assert stale.headers["etag"] == fresh.headers["etag"]
    assert stale.headers["x-rates-stale"] == "true"
    assert stale.headers["x-rates-age"] == str(MAX_AGE_MS // 1000 + 12)
    revalidated = await client.get("/courses", headers={"If-None-Match": fresh.headers["etag"]})
    assert revalidated.status_code == 304
    assert revalidated.headers["x-rates-stale"] == "true"


async def test_explicit_exchanger_down_is_served_stale(
    client: httpx.AsyncClient, mirror: RateMirror
) -> None:
    mirror.apply([status("coingecko", SourceState.DOWN, T0 + 1)])
    response = await client.get("/courses?exchanger=coingecko")
    assert response.status_code == 200
    assert response.headers["x-rates-stale"] == "true"
    assert (await client.get("/courses")).headers["x-rates-stale"] == "false"


@pytest.mark.parametrize("path", ["/courses", "/v1/courses", "/courses?exchanger=binance"])
async def test_nothing_known_is_503_with_retry_after(
    settings: Settings, empty_mirror: RateMirror, path: str
) -> None:
    async with client_for(create_app(settings, mirror=empty_mirror)) as client:
        response = await client.get(path, headers={"If-None-Match": "*"})
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert int(response.headers["retry-after"]) > 0
    assert response.headers["api-version"] == "1"
    assert response.json()["type"] == "/problems/no-data"
    assert response.json()["missing"] == list(DIRECTIONS)


async def test_a_direction_the_exchanger_never_had_is_503(
    settings: Settings, clock: FakeClock
) -> None:
    mirror = RateMirror(clock=clock)
    mirror.load(full_set("binance") + full_set("coingecko", directions=["BTC-USD"]))
    async with client_for(create_app(settings, mirror=mirror)) as client:
        missing = await client.get("/courses?exchanger=coingecko&direction=BTC-USD,ETH-USD")
        known = await client.get("/courses?exchanger=coingecko&direction=BTC-USD")
    assert missing.status_code == 503
    assert missing.json()["missing"] == ["ETH-USD"]
    assert "retry-after" in missing.headers
    assert known.status_code == 200


async def test_a_bug_is_a_problem_500_not_a_dropped_connection(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    def explode(*_args: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(app.state.courses.caches["1"], "get", explode)
    async with client_for(app) as client:
        response = await client.get("/courses")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "/problems/internal-error"
