"""Every bad input is a 4xx application/problem+json naming the allowed values; never a 5xx."""

# pylint: disable=missing-function-docstring

from __future__ import annotations

import random
from urllib.parse import quote

import httpx
import pytest
from fastapi import FastAPI

from ratesvc.api.app import create_app
from ratesvc.api.mirror import RateMirror
from ratesvc.settings import Settings
from tests.unit.api.api_helpers import client_for

LONG = "B" * 200
SEVENTEEN = "&".join(["direction=BTC-USD"] * 16 + ["direction=ETH-USD"])
MANY_FIELDS = "&".join(["exchanger=binance"] * 40)

# (method, path with query, extra headers, status, problem slug)
BAD_INPUTS: list[tuple[str, str, dict[str, str], int, str]] = [
    ("GET", "/courses?direction=", {}, 400, "empty-value"),
    ("GET", "/courses?direction", {}, 400, "empty-value"),
    ("GET", "/courses?direction=%20%20", {}, 400, "empty-value"),
    ("GET", "/courses?direction=BTC-USD,", {}, 400, "empty-value"),
    ("GET", "/courses?direction=,BTC-USD", {}, 400, "empty-value"),
    ("GET", "/courses?direction=BTC-USD,,ETH-USD", {}, 400, "empty-value"),
    ("GET", "/courses?exchanger=", {}, 400, "empty-value"),
    ("GET", "/courses?exchanger", {}, 400, "empty-value"),
    ("GET", "/courses?direction=BTC-EUR", {}, 400, "unknown-direction"),
    ("GET", "/courses?direction=btc", {}, 400, "unknown-direction"),
    ("GET", "/courses?direction=BTC_USD", {}, 400, "unknown-direction"),
    ("GET", "/courses?direction=ETH-USD;BTC-USD", {}, 400, "unknown-direction"),
    ("GET", "/courses?direction=BTC-USD%00", {}, 400, "unknown-direction"),
    ("GET", "/courses?direction=%E2%82%BF-USD", {}, 400, "unknown-direction"),
    ("GET", "/courses?direction=BTC+USD", {}, 400, "unknown-direction"),
    ("GET", "/v1/courses?direction=XRP-USD&direction=BTC-USD", {}, 400, "unknown-direction"),
    ("GET", "/courses?exchanger=kraken", {}, 400, "unknown-exchanger"),
    ("GET", "/courses?exchanger=binance%00", {}, 400, "unknown-exchanger"),
    ("GET", "/v1/courses?exchanger=binance.com", {}, 400, "unknown-exchanger"),
    ("GET", "/courses?exchanger=binance&exchanger=coingecko", {}, 400, "repeated-parameter"),
    ("GET", "/courses?exchanger=binance&exchanger=binance", {}, 400, "repeated-parameter"),
    ("GET", f"/courses?direction={LONG}", {}, 400, "value-too-long"),
    ("GET", f"/courses?exchanger={LONG}", {}, 400, "value-too-long"),
    ("GET", f"/courses?{SEVENTEEN}", {}, 400, "too-many-values"),
    ("GET", "/courses?exchangers=binance", {}, 400, "unknown-parameter"),
    ("GET", "/courses?Direction=BTC-USD", {}, 400, "unknown-parameter"),
    ("GET", "/courses?foo", {}, 400, "unknown-parameter"),
    ("GET", "/courses?exchanger=binance&direction=BTC-USD&x=1", {}, 400, "unknown-parameter"),
    ("GET", "/courses?direction=%ff", {}, 400, "malformed-query"),
    ("GET", "/courses?direction=%C3%28", {}, 400, "malformed-query"),
    ("GET", f"/courses?{MANY_FIELDS}", {}, 400, "malformed-query"),
    ("GET", "/courses?direction=" + "A" * 1100, {}, 414, "query-too-long"),
    ("GET", "/courses", {"Accept-Version": "3"}, 406, "unsupported-version"),
    ("GET", "/courses", {"Accept-Version": "v0"}, 406, "unsupported-version"),
    ("GET", "/courses", {"Accept-Version": ""}, 406, "unsupported-version"),
    ("GET", "/courses", {"Accept-Version": "1.0"}, 406, "unsupported-version"),
    ("GET", "/courses", {"Accept-Version": "latest"}, 406, "unsupported-version"),
    ("GET", "/nope", {}, 404, "not-found"),
    ("GET", "/v3/courses", {}, 404, "not-found"),
    ("GET", "/v2/courses?direction=DOGE-USD", {}, 400, "unknown-direction"),
    ("GET", "/v2/courses?exchanger=kraken", {}, 400, "unknown-exchanger"),
    ("GET", "/v2/courses?direction=%ff", {}, 400, "malformed-query"),
    ("GET", "/v2/courses?direction=" + "A" * 1100, {}, 414, "query-too-long"),
    ("GET", "/v2/sources?exchanger=binance", {}, 400, "unknown-parameter"),
    ("GET", "/v2/sources?%ff=1", {}, 400, "malformed-query"),
    ("GET", "/v2/sources?x=" + "A" * 1100, {}, 414, "query-too-long"),
    ("POST", "/v2/courses", {}, 405, "method-not-allowed"),
    ("GET", "/v2", {}, 404, "not-found"),
    ("GET", "/v1", {}, 404, "not-found"),
    ("POST", "/courses", {}, 405, "method-not-allowed"),
    ("DELETE", "/v1/courses", {}, 405, "method-not-allowed"),
    ("PUT", "/health", {}, 405, "method-not-allowed"),
]


@pytest.mark.parametrize(
    ("method", "path", "headers", "status", "slug"),
    BAD_INPUTS,
    ids=[f"{i:02d}-{case[4]}" for i, case in enumerate(BAD_INPUTS)],
)
async def test_bad_input_is_a_problem_naming_the_allowed_values(
    client: httpx.AsyncClient, method: str, path: str, headers: dict, status: int, slug: str
) -> None:
    response = await client.request(method, path, headers=headers)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == f"/problems/{slug}"
    assert problem["status"] == status
    assert problem["title"] and problem["detail"]
    assert problem["instance"] == path.split("?", 1)[0]
    # /v2/sources takes no parameter: its list is rightly empty
    assert problem["allowed"] or problem["allowed"] == [] and path.startswith("/v2/sources?")


def test_the_table_has_at_least_thirty_distinct_inputs() -> None:
    assert len({(m, p, tuple(h.items())) for m, p, h, _s, _t in BAD_INPUTS}) >= 30


async def test_two_different_accept_version_headers_are_rejected(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get(
        "/courses", headers=[("accept-version", "1"), ("accept-version", "2")]
    )
    assert response.status_code == 406


async def test_405_names_the_allowed_methods(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/courses")
    assert response.headers["allow"] == "GET"
    assert response.json()["allowed"] == ["GET"]


async def test_fastapi_validation_errors_are_problems(
    settings: Settings, mirror: RateMirror
) -> None:
    app: FastAPI = create_app(settings, mirror=mirror)

    @app.get("/typed")
    async def typed(count: int) -> dict:
        """A route with a typed parameter."""
        return {"count": count}

    async with client_for(app) as client:
        response = await client.get("/typed?count=many")
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["loc"] == ["query", "count"]


async def test_random_queries_never_cause_a_server_error(client: httpx.AsyncClient) -> None:
    rng = random.Random(1234)
    alphabet = "abcdefghijklmnopqrstuvwxyzBTCUSDRUBETH-,=&%+;_ \x00\u20bf"
    for _ in range(300):
        raw = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        response = await client.get("/courses?" + quote(raw, safe="=&,%+"))
        assert response.status_code < 500, raw
        if response.status_code >= 400:
            assert response.headers["content-type"] == "application/problem+json"
