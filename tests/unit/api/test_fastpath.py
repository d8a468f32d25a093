"""The /courses fast path: byte-identical to the FastAPI routes, and counted in the same metrics."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY

from ratesvc.api.app import create_app, with_fast_path
from ratesvc.api.fastpath import FastPath
from ratesvc.api.mirror import RateMirror
from ratesvc.settings import Settings
from tests.unit.api.api_helpers import MAX_AGE_MS, FakeClock, client_for, full_set
from tests.unit.api.test_problem_inputs import BAD_INPUTS

CURRENT = "<current etag>"  # replaced by the ETag the app serves

# (method, path with query, headers): good requests, revalidations and bad ones.
REQUESTS: list[tuple[str, str, list[tuple[str, str]]]] = [
    ("GET", "/courses", []),
    ("GET", "/v1/courses", []),
    ("GET", "/courses?exchanger=binance", []),
    ("GET", "/courses?exchanger=CoinGecko&direction=btc-usd", []),
    ("GET", "/v1/courses?exchanger=binance&direction=BTC-USD,ETH-RUB", []),
    ("GET", "/courses?direction=eth-rub&direction=BTC-USD", []),
    ("GET", "/courses?direction=USDTERC-RUB,usdttrc-usd,USDTTRC-USD", []),
    ("GET", "/courses", [("accept-version", "1")]),
    ("GET", "/courses", [("accept-version", " V1 ")]),
    ("GET", "/courses", [("accept-version", "1"), ("accept-version", "2")]),
    ("GET", "/v1/courses", [("accept-version", "2")]),
    ("GET", "/courses", [("if-none-match", CURRENT)]),
    ("GET", "/v1/courses", [("if-none-match", CURRENT)]),
    ("GET", "/courses", [("if-none-match", "W/" + CURRENT)]),
    ("GET", "/courses", [("if-none-match", '"other", ' + CURRENT)]),
    ("GET", "/courses", [("if-none-match", "*")]),
    ("GET", "/courses", [("if-none-match", '"other"')]),
    ("GET", "/courses", [("if-none-match", CURRENT), ("accept-version", "3")]),
    ("GET", "/v2/courses", []),
    ("GET", "/v2/courses?exchanger=coingecko&direction=btc-rub", []),
    ("GET", "/courses?direction=ETH-RUB", [("accept-version", "2")]),
    ("GET", "/courses", [("accept-version", "v2"), ("if-none-match", "*")]),
    ("GET", "/v2/courses", [("accept-version", "1")]),
    ("GET", "/v2/sources", []),
    ("GET", "/v2/sources", [("if-none-match", "*")]),
    ("HEAD", "/v2/courses", []),
    ("HEAD", "/courses", []),
    ("GET", "/courses/", []),
    ("GET", "/health", []),
    ("GET", "/openapi.json", []),
    *((m, p, list(h.items())) for m, p, h, _status, _slug in BAD_INPUTS),
]


async def call(
    app: FastPath | FastAPI, method: str, target: str, headers: list[tuple[str, str]]
) -> Any:
    """Run one request through the ASGI app; returns (messages sent, scope after the call)."""
    url = urlsplit(target)
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 40000),
        "root_path": "",
        "path": url.path,
        "raw_path": url.path.encode(),
        "query_string": url.query.encode("latin-1"),
        "headers": [(b"host", b"ratesvc")]
        + [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers],
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent, scope


def response_of(messages: list[dict[str, Any]]) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """(status, raw headers in order, body) of the ASGI messages of one response."""
    start = messages[0]
    assert start["type"] == "http.response.start"
    body = b"".join(m.get("body", b"") for m in messages[1:])
    return start["status"], list(start["headers"]), body


Apps = tuple[FastPath, FastAPI]


def both(settings: Settings, mirror: RateMirror) -> Apps:
    """The app behind the fast path (as workers serve it), and the FastAPI app alone."""
    return with_fast_path(create_app(settings, mirror=mirror)), create_app(settings, mirror=mirror)


@pytest.fixture(name="apps")
def apps_fixture(settings: Settings, mirror: RateMirror) -> Apps:
    return both(settings, mirror)


async def current_etag(app: FastPath | FastAPI) -> str:
    async with client_for(app) as client:
        return (await client.get("/courses")).headers["etag"]


@pytest.mark.parametrize(
    ("method", "target", "headers"),
    REQUESTS,
    ids=[f"{i:02d}-{m}-{t[:40]}" for i, (m, t, _h) in enumerate(REQUESTS)],
)
async def test_fast_path_answers_byte_identically_to_the_fastapi_routes(
    apps: Apps, method: str, target: str, headers: list[tuple[str, str]]
) -> None:
    fast, slow = apps
    etag = await current_etag(slow)
    headers = [(k, v.replace(CURRENT, etag)) for k, v in headers]
    fast_messages, _scope = await call(fast, method, target, headers)
    slow_messages, _scope = await call(slow, method, target, headers)
    assert response_of(fast_messages) == response_of(slow_messages)


async def test_the_table_covers_200_304_and_every_kind_of_4xx(
    apps: Apps,
) -> None:
    fast, _slow = apps
    etag = await current_etag(fast)
    statuses = set()
    for method, target, headers in REQUESTS:
        headers = [(k, v.replace(CURRENT, etag)) for k, v in headers]
        statuses.add(response_of((await call(fast, method, target, headers))[0])[0])
    assert {200, 304, 400, 404, 405, 406, 414} <= statuses


@pytest.mark.parametrize(
    "target",
    ["/courses", "/v1/courses?direction=BTC-USD", "/courses?x=1", "/v2/courses", "/v2/sources"],
)
async def test_fast_path_does_not_route_through_fastapi(apps: Apps, target: str) -> None:
    fast, slow = apps
    _messages, fast_scope = await call(fast, "GET", target, [])
    _messages, slow_scope = await call(slow, "GET", target, [])
    assert "app" not in fast_scope and "endpoint" not in fast_scope  # FastAPI never saw it
    assert "endpoint" in slow_scope


async def test_stale_answers_are_identical_with_their_age(
    settings: Settings, mirror: RateMirror, clock: FakeClock
) -> None:
    clock.advance(MAX_AGE_MS / 1000 + 7)
    mirror.evaluate()
    fast, slow = both(settings, mirror)
    for target in ("/courses", "/v1/courses?exchanger=coingecko"):
        fast_response = response_of((await call(fast, "GET", target, []))[0])
        assert fast_response == response_of((await call(slow, "GET", target, []))[0])
        assert (b"x-rates-stale", b"true") in fast_response[1]
        assert (b"x-rates-age", b"%d" % (MAX_AGE_MS // 1000 + 7)) in fast_response[1]


async def test_nothing_known_503_is_identical(settings: Settings, empty_mirror: RateMirror) -> None:
    fast, slow = both(settings, empty_mirror)
    for target in ("/courses", "/v1/courses?direction=BTC-USD"):
        fast_response = response_of((await call(fast, "GET", target, []))[0])
        assert fast_response == response_of((await call(slow, "GET", target, []))[0])
        assert fast_response[0] == 503


async def test_a_served_exchanger_missing_a_direction_is_identical(
    settings: Settings, clock: FakeClock
) -> None:
    mirror = RateMirror(clock=clock)
    mirror.load(full_set("coingecko", directions=["BTC-USD"]))
    fast, slow = both(settings, mirror)
    target = "/courses?exchanger=coingecko&direction=BTC-USD,ETH-USD"
    fast_response = response_of((await call(fast, "GET", target, []))[0])
    assert fast_response == response_of((await call(slow, "GET", target, []))[0])
    assert fast_response[0] == 503


def sample(name: str, path: str, status: str) -> float:
    labels = {"method": "GET", "path": path, "status_code": status, "app_name": "ratesvc"}
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize(
    ("target", "headers", "path", "status"),
    [
        ("/courses", [], "/courses", "200"),
        ("/v1/courses?direction=BTC-USD", [], "/v1/courses", "200"),
        ("/courses", [("if-none-match", "*")], "/courses", "304"),
        ("/v1/courses?direction=DOGE-USD", [], "/v1/courses", "400"),
        ("/courses", [("accept-version", "9")], "/courses", "406"),
        ("/v2/courses?exchanger=binance", [], "/v2/courses", "200"),
        ("/v2/sources", [], "/v2/sources", "200"),
    ],
)
async def test_fast_path_requests_are_counted_in_the_request_metrics(
    apps: Apps,
    target: str,
    headers: list[tuple[str, str]],
    path: str,
    status: str,
) -> None:
    fast, _slow = apps
    count = ("ratesvc_http_requests_total", path, status)
    observed = ("ratesvc_http_request_duration_seconds_count", path, status)
    before = sample(*count), sample(*observed)
    for _ in range(3):
        await call(fast, "GET", target, headers)
    assert sample(*count) == before[0] + 3
    assert sample(*observed) == before[1] + 3
    in_progress = {"method": "GET", "app_name": "ratesvc"}
    assert REGISTRY.get_sample_value("ratesvc_http_requests_in_progress", in_progress) == 0


async def test_fast_path_counts_show_on_the_metrics_route(apps: Apps) -> None:
    fast, _slow = apps
    async with client_for(fast) as client:
        await client.get("/v1/courses?exchanger=coingecko")
        text = (await client.get("/metrics")).text
    assert (
        'ratesvc_http_requests_total{app_name="ratesvc",method="GET",path="/v1/courses",'
        'status_code="200"}' in text
    )


async def test_a_bug_in_the_fast_path_is_answered_and_counted_by_the_full_stack(
    apps: Apps, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast, _slow = apps

    def explode(*_args: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(fast.app.state.courses.caches["1"], "get", explode)
    before = sample("ratesvc_http_requests_total", "/courses", "500")
    status, headers, body = response_of((await call(fast, "GET", "/courses", []))[0])
    assert status == 500
    assert (b"content-type", b"application/problem+json") in headers
    assert b"/problems/internal-error" in body
    assert sample("ratesvc_http_requests_total", "/courses", "500") == before + 1


async def test_lifespan_reaches_the_app_through_the_fast_path(apps: Apps) -> None:
    fast, _slow = apps
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await fast({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
