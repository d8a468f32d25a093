"""/health, /ready, /metrics, /docs and /openapi.json."""

# pylint: disable=missing-function-docstring

from __future__ import annotations

import httpx

from ratesvc.api.app import create_app
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


async def test_metrics_has_service_and_request_metrics(client: httpx.AsyncClient) -> None:
    await client.get("/courses")
    await client.get("/no/such/path/12345")
    text = (await client.get("/metrics")).text
    assert "ratesvc_api_snapshot_version" in text
    assert "ratesvc_api_serving_exchanger" in text
    assert 'ratesvc_http_requests_total{app_name="ratesvc",method="GET",path="/courses"' in text
    assert 'path="__unknown__"' in text
    assert "/no/such/path/12345" not in text


async def test_docs_and_openapi(client: httpx.AsyncClient) -> None:
    assert (await client.get("/docs")).status_code == 200
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
    assert "/health" in spec["paths"] and "/ready" in spec["paths"]
