"""CoinGeckoSource polling through a mocked HTTP transport: request, headers, errors.

Cadence, budget and back-off: test_coingecko_budget.py.
"""

# test names say what they check
# pylint: disable=missing-function-docstring,missing-class-docstring

from __future__ import annotations

import asyncio

import httpx
import pytest
from loguru import logger

from ratesvc.domain import SourceStatus
from ratesvc.errors import Misconfigured, RateLimited, SourceError, Unavailable
from ratesvc.sources.backoff import Backoff
from ratesvc.sources.base import Frame
from ratesvc.sources.coingecko import CoinGeckoOptions, CoinGeckoSource
from ratesvc.sources.supervise import supervise
from tests.captured import captured
from tests.unit.sources.source_helpers import read_fixture

KEY = "CG-s3cr3t-key-value"
BODY = read_fixture("coingecko", "simple_price.json")


class Api:
    """A mocked simple/price endpoint answering from a list of responses (last one repeats)."""

    def __init__(self, *responses: httpx.Response | Exception) -> None:
        self.responses = list(responses) or [httpx.Response(200, content=BODY)]
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        response = self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]
        if isinstance(response, Exception):
            raise response
        return response


def make_source(api: Api, **options: object) -> CoinGeckoSource:
    return CoinGeckoSource(
        CoinGeckoOptions(_env_file=None, **options), http_transport=httpx.MockTransport(api)
    )


async def first_frame(source: CoinGeckoSource) -> Frame:
    frames = source.frames()
    try:
        return await anext(frames)
    finally:
        await frames.aclose()  # type: ignore[attr-defined]


async def test_one_batched_request_for_all_coins_and_currencies() -> None:
    api = Api()
    await first_frame(make_source(api))
    assert len(api.requests) == 1
    request = api.requests[0]
    assert request.url.host == "api.coingecko.com"
    assert request.url.path == "/api/v3/simple/price"
    assert dict(request.url.params) == {
        "ids": "bitcoin,ethereum,tether",
        "vs_currencies": "usd,rub",
        "include_last_updated_at": "true",
        "precision": "full",
    }


@pytest.mark.parametrize(
    ("options", "header"),
    [
        ({}, None),
        ({"api_key": ""}, None),
        ({"api_key": KEY}, "x-cg-demo-api-key"),
        ({"api_key": KEY, "api_url": "https://pro-api.coingecko.com/api/v3"}, "x-cg-pro-api-key"),
        ({"api_key": KEY, "plan": "pro"}, "x-cg-pro-api-key"),
        (
            {"api_key": KEY, "plan": "demo", "api_url": "https://pro-api.coingecko.com/api/v3"},
            "x-cg-demo-api-key",
        ),
    ],
)
async def test_key_header_follows_the_plan(options: dict[str, object], header: str | None) -> None:
    api = Api()
    await first_frame(make_source(api, **options))
    sent = {name for name in api.requests[0].headers if name.startswith("x-cg-")}
    assert sent == ({header} if header else set())
    if header:
        assert api.requests[0].headers[header] == KEY
    assert KEY not in str(api.requests[0].url)


@pytest.mark.parametrize(
    ("response", "error", "retry_after_s"),
    [
        (httpx.Response(429, headers={"Retry-After": "12"}), RateLimited, 12.0),
        (
            httpx.Response(429, content=read_fixture("coingecko", "error_rate_limited.json")),
            RateLimited,
            None,
        ),
        (  # as captured: the body of error_rate_limited.json with its retry-after
            httpx.Response(
                captured("coingecko", "error_rate_limited.json").status or 0,
                headers=captured("coingecko", "error_rate_limited.json").headers,
                content=read_fixture("coingecko", "error_rate_limited.json"),
            ),
            RateLimited,
            119.0,
        ),
        (httpx.Response(503, text="Service Unavailable"), Unavailable, None),
        (httpx.ReadTimeout("slow"), Unavailable, None),
    ],
)
async def test_errors_map_to_source_errors(
    response: httpx.Response | Exception, error: type[SourceError], retry_after_s: float | None
) -> None:
    with pytest.raises(error) as caught:
        await first_frame(make_source(Api(response)))
    assert type(caught.value) is error  # pylint: disable=unidiomatic-typecheck
    if isinstance(caught.value, RateLimited):
        assert caught.value.retry_after_s == retry_after_s


async def test_wrong_root_and_bad_key_explain_the_fix_without_leaking_the_key() -> None:
    lines: list[str] = []
    sink = logger.add(lines.append, level="DEBUG")
    wrong_root = httpx.Response(400, content=read_fixture("coingecko", "error_wrong_root.json"))
    try:
        with pytest.raises(SourceError, match="COINGECKO_API_URL") as caught:
            await first_frame(make_source(Api(wrong_root), api_key=KEY))
        with pytest.raises(SourceError, match="COINGECKO_API_KEY"):
            await first_frame(
                make_source(Api(httpx.Response(401, json={"error": "bad key"})), api_key=KEY)
            )
        source = make_source(Api(httpx.Response(401)), api_key=KEY)
        await _supervise_briefly(source)
    finally:
        logger.remove(sink)
    assert KEY not in str(caught.value)
    assert lines and not [line for line in lines if KEY in line]
    assert KEY not in repr(source.options)


@pytest.mark.parametrize(
    ("name", "code", "options", "root", "header"),
    [
        # nested body: a demo key went to the pro root
        (
            "error_wrong_root.json",
            10011,
            {"api_url": "https://pro-api.coingecko.com/api/v3", "plan": "pro"},
            "COINGECKO_API_URL=https://api.coingecko.com/api/v3",
            "x-cg-demo-api-key",
        ),
        # flat body: a pro key went to the demo root
        (
            "error_wrong_root_flat.json",
            10010,
            {},
            "COINGECKO_API_URL=https://pro-api.coingecko.com/api/v3",
            "x-cg-pro-api-key",
        ),
    ],
)
async def test_wrong_root_in_either_body_shape_names_the_root_and_key_header(
    name: str, code: int, options: dict[str, object], root: str, header: str
) -> None:
    fixture = captured("coingecko", name)
    response = httpx.Response(fixture.status or 0, content=fixture.raw)
    with pytest.raises(Misconfigured) as caught:
        await first_frame(make_source(Api(response), api_key=KEY, **options))
    message = str(caught.value)
    assert caught.value.code == code and f"CoinGecko error {code}" in message
    assert root in message and f"in the {header} header" in message
    assert "sent: x-cg-" in message and KEY not in message


async def _supervise_briefly(source: CoinGeckoSource) -> None:
    stop = asyncio.Event()

    async def on_status(_: SourceStatus) -> None:
        stop.set()

    await asyncio.wait_for(
        supervise(source, on_quotes=_ignore, on_status=on_status, backoff=Backoff(), stop=stop),
        timeout=5,
    )


async def _ignore(_: object) -> None:
    return None
