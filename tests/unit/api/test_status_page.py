"""GET /status: the page's bytes, validators, security policy and OpenAPI entry, through what a
worker serves (what the page does in a browser: tests/e2e/test_status_browser.py)."""

# pylint: disable=missing-function-docstring

from __future__ import annotations

import base64
import hashlib
import re

import httpx

from ratesvc.api.app import create_app, worker_app
from ratesvc.api.mirror import RateMirror
from ratesvc.api.status_page import build_page
from ratesvc.domain import DIRECTIONS, EXCHANGERS
from ratesvc.settings import Settings
from tests.unit.api.api_helpers import client_for


def worker(**settings: object) -> object:
    app = create_app(Settings(_env_file=None, **settings), mirror=RateMirror())  # type: ignore
    return worker_app(app)


async def get(app: object, path: str = "/status", **headers: str) -> httpx.Response:
    async with client_for(app) as client:  # type: ignore[arg-type]
        return await client.get(path, headers=headers)


async def test_the_page_is_html_with_a_strong_etag_and_revalidates_to_304() -> None:
    app = worker()
    answer = await get(app)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    assert answer.headers["cache-control"] == "no-cache"
    assert answer.headers["x-content-type-options"] == "nosniff"
    etag = answer.headers["etag"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', etag)
    again = await get(app, **{"If-None-Match": etag})
    assert (again.status_code, again.content, again.headers["etag"]) == (304, b"", etag)
    assert (await get(app, **{"If-None-Match": '"other"'})).status_code == 200


async def test_the_page_has_a_row_per_direction_and_a_column_per_exchanger() -> None:
    page = (await get(worker())).text
    for direction in DIRECTIONS:
        for exchanger in EXCHANGERS:
            assert f'data-exchanger="{exchanger}" data-direction="{direction}"' in page
    for exchanger in EXCHANGERS:
        assert f'<tr data-exchanger="{exchanger}">' in page  # its sources row
    assert "<!--" not in page  # every placeholder filled


async def test_the_policy_admits_only_the_pages_own_inline_code_and_its_own_origin() -> None:
    answer = await get(worker())
    policy = dict(
        part.strip().split(" ", 1) for part in answer.headers["content-security-policy"].split(";")
    )
    inline = dict(re.findall(r"<(style|script)>(.*?)</\1>", answer.text, re.DOTALL))
    for kind in ("style", "script"):
        digest = base64.b64encode(hashlib.sha256(inline[kind].encode()).digest()).decode()
        assert policy[f"{kind}-src"] == f"'sha256-{digest}'"
    assert policy["default-src"] == "'none'"
    assert policy["connect-src"] == "'self'"
    assert policy["img-src"] == "'self'"
    # Nothing in the page points at another origin (no CDN, no web font, no absolute URL).
    assert not re.search(r"(src|href)=\"(https?:)?//", answer.text)
    assert "url(" not in inline["style"] and "@import" not in inline["style"]


async def test_the_preference_order_is_in_the_page_for_failovers_before_it_opened() -> None:
    page = (await get(worker(exchanger_preference=["coingecko", "binance"]))).text
    assert 'data-preference="[&quot;coingecko&quot;,&quot;binance&quot;]"' in page
    assert build_page(["coingecko", "binance"]).body.decode() == page


async def test_a_query_parameter_is_a_problem_naming_none_allowed() -> None:
    answer = await get(worker(), "/status?refresh=1")
    assert answer.status_code == 400
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["allowed"] == []


async def test_openapi_lists_the_page_as_text_html() -> None:
    spec = (await get(worker(), "/openapi.json")).json()
    ok = spec["paths"]["/status"]["get"]["responses"]["200"]
    assert list(ok["content"]) == ["text/html"]
    assert "Content-Security-Policy" in ok["headers"]
