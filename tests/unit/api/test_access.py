"""The request edge of a worker: a safe X-Request-ID on every answer, and the access log line."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from loguru import logger

from ratesvc.api.access import RequestEdge
from ratesvc.api.app import create_app, worker_app
from ratesvc.api.mirror import RateMirror
from ratesvc.settings import Settings
from tests.unit.api.test_fastpath import call, response_of

# Kept as sent: 1-64 of letters, digits and . _ : -
GOOD_IDS = [
    b"test-id-1",
    b"a" * 64,
    b"7F000001:C3A4_7F000001:1F90_6745B1A2_0001:1A2B",
    b"0b6f4d8e-2d47-4f8c-9c57-2a1b0f1e6c55",
    b"v1.2.3",
]
# Replaced by a fresh id: injection attempts and anything outside the rule.
BAD_IDS = [
    b"abc\r\nX-Injected: yes",
    b"abc\nX-Injected: yes",
    b"abc\rdef",
    b"a" * 65,
    b"x" * 8192,
    b'"quoted"',
    b"it's",
    b"two words",
    b" ",
    "caf\u00e9".encode(),
    "\u65e5\u672c".encode(),
    b"\xff\xfe",
    b"",
    b"a,b",
    b"%0d%0a",
    b"<script>",
    b"id\x00nul",
    b"tab\there",
]
PATHS = ["/courses", "/v1/courses?direction=BTC-USD", "/health", "/no-such-route", "/courses/x"]


def ids_of(headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    return [value for name, value in headers if name == b"x-request-id"]


def is_fresh(value: bytes) -> bool:
    return str(uuid.UUID(value.decode("ascii"))) == value.decode("ascii")


@pytest.fixture(name="served")
def served_fixture(settings: Settings, mirror: RateMirror) -> RequestEdge:
    """What a worker serves (worker_app), over the hand-filled mirror."""
    return worker_app(create_app(settings, mirror=mirror))


async def answer_ids(app: RequestEdge, path: str, values: list[bytes]) -> list[bytes]:
    headers = [("x-request-id", v.decode("latin-1")) for v in values]
    status, answer_headers, _body = response_of((await call(app, "GET", path, headers))[0])
    assert status < 500
    return ids_of(answer_headers)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("value", GOOD_IDS, ids=lambda v: v.decode()[:20])
async def test_a_safe_client_request_id_is_echoed_as_sent(
    served: RequestEdge, path: str, value: bytes
) -> None:
    assert await answer_ids(served, path, [value]) == [value]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("value", BAD_IDS, ids=lambda v: repr(v)[:24])
async def test_an_unsafe_client_request_id_is_replaced_by_a_fresh_one(
    served: RequestEdge, path: str, value: bytes
) -> None:
    (first,) = await answer_ids(served, path, [value])
    (second,) = await answer_ids(served, path, [value])
    assert is_fresh(first) and is_fresh(second) and first != second


@pytest.mark.parametrize("path", PATHS)
async def test_no_id_or_two_ids_get_a_fresh_one(served: RequestEdge, path: str) -> None:
    (none_sent,) = await answer_ids(served, path, [])
    (two_sent,) = await answer_ids(served, path, [b"first", b"second"])
    assert is_fresh(none_sent) and is_fresh(two_sent)


@pytest.fixture(name="lines")
def lines_fixture() -> Iterator[list[str]]:
    """Every line logged while the test runs (message only)."""
    captured: list[str] = []
    sink = logger.add(lambda m: captured.append(m.record["message"]), level="INFO")
    yield captured
    logger.remove(sink)


async def test_the_access_log_names_target_status_client_and_request_id(
    make_settings, mirror: RateMirror, lines: list[str]
) -> None:
    served = worker_app(create_app(make_settings(api_access_log=True), mirror=mirror))
    await call(served, "GET", "/courses?direction=BTC-USD", [("x-request-id", "abc-1")])
    await call(served, "GET", "/nope", [("x-request-id", "a b")])
    assert lines[0] == "GET /courses?direction=BTC-USD 200 client=127.0.0.1:40000 request_id=abc-1"
    assert lines[1].startswith("GET /nope 404 client=127.0.0.1:40000 request_id=")
    assert is_fresh(lines[1].rsplit("=", 1)[1].encode()) and len(lines) == 2


async def test_the_access_log_escapes_what_a_client_controls(
    make_settings, mirror: RateMirror, lines: list[str]
) -> None:
    """A line break or non-ASCII in the target or a (proxied) client address stays escaped."""
    served = worker_app(create_app(make_settings(api_access_log=True), mirror=mirror))
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/x",
        "raw_path": b"/x\r\nFAKE LINE \xc3\xa9" + b"y" * 300,
        "query_string": b"",
        "headers": [],
        "client": ("6.6.6.6\nFAKE", 1),
    }

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_message: dict) -> None:
        pass

    await served(scope, receive, send)
    (line,) = lines
    assert "\n" not in line and "\r" not in line and not any(ord(c) > 127 for c in line)
    assert "\\r\\n" in line and "6.6.6.6\\nFAKE" in line and "..." in line and len(line) < 400


async def test_no_access_log_by_default(served: RequestEdge, lines: list[str]) -> None:
    await call(served, "GET", "/courses", [])
    assert not lines


async def test_a_500_is_logged_with_its_request_id(
    settings: Settings, mirror: RateMirror, lines: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    app: FastAPI = create_app(settings, mirror=mirror)

    def explode(*_args: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(app.state.courses, "serve", explode)
    served = worker_app(app)
    messages, _scope = await call(served, "GET", "/courses", [("x-request-id", "trace-500")])
    status, headers, _body = response_of(messages)
    assert status == 500 and ids_of(headers) == [b"trace-500"]
    assert any("unhandled error on /courses (request_id=trace-500)" in line for line in lines)
