"""/health, /serving, /ready, /metrics, /docs, /redoc and /openapi.json."""

# pylint: disable=missing-function-docstring

from __future__ import annotations

import re

import httpx
import pytest

from ratesvc.api.app import create_app, with_fast_path
from ratesvc.api.mirror import RateMirror
from ratesvc.settings import Settings
from tests.unit.api.api_helpers import client_for, full_set


async def test_health_is_always_ok(settings: Settings, empty_mirror: RateMirror) -> None:
    async with client_for(create_app(settings, mirror=empty_mirror)) as client:
        response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_needs_a_loaded_snapshot_and_the_stream(
    settings: Settings, empty_mirror: RateMirror
) -> None:
    async with client_for(create_app(settings, mirror=empty_mirror)) as client:
        before = await client.get("/ready")
        empty_mirror.load(full_set("binance"))
        loaded = await client.get("/ready")
        empty_mirror.set_following(True)
        ready = await client.get("/ready")
        empty_mirror.set_following(False)
        lost = await client.get("/ready")
    assert before.status_code == 503
    assert before.json()["reasons"] == ["snapshot not loaded", "redis stream not followed"]
    assert loaded.status_code == 503
    assert loaded.json()["reasons"] == ["redis stream not followed"]
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert lost.status_code == 503


async def test_serving_keeps_a_worker_with_a_snapshot_in_rotation_while_redis_is_away(
    settings: Settings, empty_mirror: RateMirror
) -> None:
    # Through the fast path, as workers serve: what HAProxy checks and what clients then get.
    async with client_for(with_fast_path(create_app(settings, mirror=empty_mirror))) as client:
        never_loaded = await client.get("/serving")
        empty_mirror.load(full_set("binance"))
        empty_mirror.set_following(True)
        following = await client.get("/serving")
        empty_mirror.set_following(False)  # Redis gone
        away = await client.get("/serving")
        ready_away = await client.get("/ready")
        courses_away = await client.get("/courses")
    assert never_loaded.status_code == 503 and never_loaded.json()["status"] == "not serving"
    assert following.status_code == 200 and following.json()["following"] is True
    assert away.status_code == 200
    assert away.json() == {
        "status": "serving",
        "following": False,
        "snapshot_version": empty_mirror.version,
    }
    assert ready_away.status_code == 503  # the operator still learns the stream is not followed
    assert courses_away.status_code == 200 and courses_away.json()["exchanger"] == "binance"


async def test_metrics_has_service_and_request_metrics(client: httpx.AsyncClient) -> None:
    await client.get("/courses")
    await client.get("/no/such/path/12345")
    text = (await client.get("/metrics")).text
    assert "ratesvc_api_snapshot_version" in text
    assert "ratesvc_api_serving_exchanger" in text
    assert 'ratesvc_http_requests_total{app_name="ratesvc",method="GET",path="/courses"' in text
    assert 'path="__unknown__"' in text
    assert "/no/such/path/12345" not in text


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_pages_load_every_asset_from_the_service_itself(
    client: httpx.AsyncClient, page: str
) -> None:
    """Offline networks: a page that needs a CDN renders blank there."""
    html = await client.get(page)
    assert html.status_code == 200 and html.headers["content-type"].startswith("text/html")
    links = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html.text)
    links += re.findall(r"""(?:url: *|spec-url=)["']([^"']+)["']""", html.text)  # the spec
    assert "/openapi.json" in links
    assert not [url for url in links if "//" in url], "a page loads something from another host"
    assert "cdn" not in html.text.lower()
    assets = [url for url in links if url.startswith("/docs/assets/")]
    assert assets, links
    for url in assets:
        response = await client.get(url)
        assert response.status_code == 200, url
        assert len(response.content) > 1000, url


async def test_an_unknown_docs_asset_is_a_404_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/docs/assets/nope.js")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


async def test_openapi_describes_both_versions(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    for path in ("/courses", "/v1/courses"):
        operation = spec["paths"][path]["get"]
        names = {p["name"] for p in operation["parameters"]}
        assert {"exchanger", "direction", "If-None-Match"} <= names
        assert {"ETag", "API-Version", "X-Rates-Stale"} <= set(
            operation["responses"]["200"]["headers"]
        )
        assert {"200", "304", "400", "503"} <= set(operation["responses"])
    assert "Accept-Version" in {p["name"] for p in spec["paths"]["/courses"]["get"]["parameters"]}
    assert "406" in spec["paths"]["/courses"]["get"]["responses"]
    assert spec["paths"]["/courses"]["get"]["description"]
    assert {"/health", "/serving", "/ready"} <= set(spec["paths"])
