"""/v2/history and `at=` through what a worker serves (request edge, fast path, app), on real
Postgres filled by the repository the persister uses (candles included)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from decimal import Decimal

import httpx
import pytest
from prometheus_client import REGISTRY

from ratesvc.api.app import create_app, worker_app
from ratesvc.api.choice import Decision
from ratesvc.api.history import render_candles
from ratesvc.api.mirror import RateMirror
from ratesvc.api.v2 import render_v2
from ratesvc.domain import DIRECTIONS, Leg, RateTick
from ratesvc.settings import Settings
from ratesvc.store.repository import RateRepository

pytestmark = pytest.mark.integration

D = Decimal
MIN = 60_000
DAY = 86_400_000
T0 = 1_764_547_200_000  # 2025-12-01T00:00:00Z
NOW = T0 + 10 * DAY
UNAVAILABLE = "ratesvc_api_history_unavailable_total"


class Clock:
    """Fixed milliseconds."""

    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


def tick(
    exchanger: str, direction: str, value: str, ts_ms: int, *, max_age_ms: int = 30_000
) -> RateTick:
    """A tick with one own leg (binance: with a book) and, for X-RUB, an FX leg 20 s older."""
    book = (D(value) - 1, D(value) + 1) if exchanger == "binance" else (None, None)
    legs = [Leg(exchanger, direction.replace("-", "/"), D(value), ts_ms, max_age_ms, *book)]
    if direction.endswith("RUB"):
        legs.append(Leg("coingecko", "USDT/RUB", D("95.5"), ts_ms - 20_000, 900_000))
    return RateTick(exchanger, direction, D(value), ts_ms, tuple(legs), bid=book[0], ask=book[1])


def rfc(ts_ms: int) -> str:
    """RFC 3339 with milliseconds, as the API writes times."""
    from ratesvc.api.render import rfc3339_ms  # pylint: disable=import-outside-toplevel

    return rfc3339_ms(ts_ms)


def instant(ts_ms: int) -> str:
    """A query instant (seconds precision would lose ms: use the API's own form)."""
    return rfc(ts_ms)


@pytest.fixture(name="client")
async def client_fixture(
    make_settings: Callable[..., Settings], migrated_url: str, repo: RateRepository
) -> AsyncIterator[httpx.AsyncClient]:
    """A worker app over an empty live snapshot, reading history from the test database."""
    del repo  # its fixture empties the tables first
    settings = make_settings(database_url=migrated_url)
    mirror = RateMirror(clock=Clock(NOW))
    mirror.set_following(True)
    app = create_app(settings, mirror=mirror)
    transport = httpx.ASGITransport(app=worker_app(app))
    async with httpx.AsyncClient(transport=transport, base_url="http://ratesvc") as client:
        yield client
    await app.state.history.reader.close()


async def store(repo: RateRepository, *ticks: RateTick) -> None:
    """Save ticks as the persister does (candles maintained in the same transaction)."""
    await repo.save_batch([(f"{t.ts_ms}-{i}", t) for i, t in enumerate(ticks)])


def problem(response: httpx.Response, status: int, slug: str) -> dict:
    """Assert a problem+json of `status` and type `slug`; return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == f"/problems/{slug}" and body["status"] == status
    return body


# ------------------------------------------------------------------------- /v2/history


async def test_history_gives_exact_candles_per_bucket(
    client: httpx.AsyncClient, repo: RateRepository
) -> None:
    """Two minutes of ticks (the second a late, out-of-order batch), exact strings, ETag/304."""
    await store(
        repo,
        tick("binance", "BTC-USD", "65000.10", T0 + 1_000),
        tick("binance", "BTC-USD", "65001.5", T0 + 30_000),
    )
    await store(
        repo,
        tick("binance", "BTC-USD", "64999.000000001", T0 + 90_000),
        tick("binance", "BTC-USD", "65000", T0 + 10_000),
    )
    await store(
        repo,
        tick("coingecko", "BTC-USD", "1", T0 + 5_000),
        tick("binance", "ETH-USD", "1", T0 + 5_000),
    )
    query = {
        "direction": "btc-usd",
        "exchanger": "Binance",
        "interval": "1m",
        "from": instant(T0),
        "to": instant(T0 + 5 * MIN),
    }

    response = await client.get("/v2/history", params=query)

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["api-version"] == "2"
    assert response.json() == {
        "direction": "BTC-USD",
        "exchanger": "binance",
        "interval": "1m",
        "candles": [
            {
                "t": "2025-12-01T00:00:00.000Z",
                "open": "65000.1",
                "high": "65001.5",
                "low": "65000",
                "close": "65001.5",
                "ticks": 3,
            },
            {
                "t": "2025-12-01T00:01:00.000Z",
                "open": "64999.000000001",
                "high": "64999.000000001",
                "low": "64999.000000001",
                "close": "64999.000000001",
                "ticks": 1,
            },
        ],
    }
    again = await client.get(
        "/v2/history", params=query, headers={"If-None-Match": response.headers["etag"]}
    )
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == response.headers["etag"]


async def test_history_of_wider_intervals_and_the_window(
    client: httpx.AsyncClient, repo: RateRepository
) -> None:
    """1h and 1d candles; `from` inside a bucket includes that bucket; `to` excludes later
    ones; `to` defaults to now."""
    await store(
        repo, *(tick("binance", "ETH-USD", str(3000 + i), T0 + i * 20 * MIN) for i in range(9))
    )
    hours = await client.get(
        "/v2/history",
        params={
            "direction": "ETH-USD",
            "exchanger": "binance",
            "interval": "1h",
            "from": instant(T0 + 30 * MIN),
            "to": instant(T0 + 2 * 3_600_000),
        },
    )
    assert [(c["t"], c["open"], c["close"], c["ticks"]) for c in hours.json()["candles"]] == [
        ("2025-12-01T00:00:00.000Z", "3000", "3002", 3),
        ("2025-12-01T01:00:00.000Z", "3003", "3005", 3),
    ]
    days = await client.get(
        "/v2/history",
        params={
            "direction": "ETH-USD",
            "exchanger": "binance",
            "interval": "1d",
            "from": instant(T0 - DAY),
        },
    )
    assert days.json()["candles"] == [
        {
            "t": "2025-12-01T00:00:00.000Z",
            "open": "3000",
            "high": "3008",
            "low": "3000",
            "close": "3008",
            "ticks": 9,
        }
    ]


async def test_1440_minutes_is_accepted_and_1501_refused(client: httpx.AsyncClient) -> None:
    """The 1,500-candle limit counts buckets from `from` to `to`."""
    ok = await client.get(
        "/v2/history",
        params={
            "direction": "BTC-USD",
            "exchanger": "binance",
            "from": instant(T0),
            "to": instant(T0 + 1_500 * MIN),
        },
    )
    assert ok.status_code == 200 and ok.json()["candles"] == []
    body = problem(
        await client.get(
            "/v2/history",
            params={
                "direction": "BTC-USD",
                "exchanger": "binance",
                "from": instant(T0),
                "to": instant(T0 + 1_500 * MIN + 1),
            },
        ),
        400,
        "too-many-candles",
    )
    assert body["max_candles"] == 1_500 and body["requested"] == 1_501


@pytest.mark.parametrize(
    ("query", "slug", "status"),
    [
        ("exchanger=binance&from=2025-12-01T00:00:00Z", "missing-parameter", 400),
        ("direction=BTC-USD&from=2025-12-01T00:00:00Z", "missing-parameter", 400),
        ("direction=BTC-USD&exchanger=binance", "missing-parameter", 400),
        (
            "direction=DOGE-USD&exchanger=binance&from=2025-12-01T00:00:00Z",
            "unknown-direction",
            400,
        ),
        (
            "direction=BTC-USD,ETH-USD&exchanger=binance&from=2025-12-01T00:00:00Z",
            "unknown-direction",
            400,
        ),
        ("direction=BTC-USD&exchanger=kraken&from=2025-12-01T00:00:00Z", "unknown-exchanger", 400),
        (
            "direction=BTC-USD&exchanger=binance&interval=2m&from=2025-12-01T00:00:00Z",
            "unknown-interval",
            400,
        ),
        (
            "direction=BTC-USD&exchanger=binance&from=2025-12-02T00:00:00Z&to=2025-12-01T00:00:00Z",
            "invalid-range",
            400,
        ),
        ("direction=BTC-USD&exchanger=binance&from=yesterday", "invalid-time", 400),
        ("direction=BTC-USD&exchanger=binance&from=2025-12-01T00:00:00", "invalid-time", 400),
        ("direction=BTC-USD&exchanger=binance&from=2025-02-30T00:00:00Z", "invalid-time", 400),
        (
            "direction=BTC-USD&exchanger=binance&from=2025-12-01T00:00:00Z&to=soon",
            "invalid-time",
            400,
        ),
        (
            "direction=BTC-USD&exchanger=binance&from=2025-12-01T00:00:00Z&limit=5",
            "unknown-parameter",
            400,
        ),
        (
            "direction=BTC-USD&direction=ETH-USD&exchanger=binance&from=2025-12-01T00:00:00Z",
            "repeated-parameter",
            400,
        ),
        ("direction=BTC-USD&exchanger=&from=2025-12-01T00:00:00Z", "empty-value", 400),
        (
            "direction=BTC-USD&exchanger=binance&from=2025-12-01T00:00:00Z&to=" + "9" * 200,
            "value-too-long",
            400,
        ),
        ("direction=%FF&exchanger=binance&from=2025-12-01T00:00:00Z", "malformed-query", 400),
        ("x=" + "a" * 1100, "query-too-long", 414),
    ],
)
async def test_history_rejects_bad_input_with_a_problem(
    client: httpx.AsyncClient, query: str, slug: str, status: int
) -> None:
    """Every bad query is a 4xx problem naming what is allowed, never a 5xx."""
    problem(await client.get(f"/v2/history?{query}"), status, slug)


async def test_history_is_503_with_retry_after_when_postgres_is_unreachable(
    make_settings: Callable[..., Settings],
) -> None:
    """A database nobody listens on: 503 problem, Retry-After, counted; never a 500."""
    before = REGISTRY.get_sample_value(UNAVAILABLE, {"route": "/v2/history"}) or 0.0
    mirror = RateMirror(clock=Clock(NOW))
    app = create_app(
        make_settings(database_url="postgres://postgres@127.0.0.1:1/none"), mirror=mirror
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=worker_app(app)), base_url="http://x"
    ) as client:
        response = await client.get(
            "/v2/history",
            params={"direction": "BTC-USD", "exchanger": "binance", "from": instant(NOW - MIN)},
        )
        at = await client.get("/v2/courses", params={"at": instant(NOW - MIN)})
    problem(response, 503, "history-unavailable")
    assert response.headers["retry-after"] == "5"
    problem(at, 503, "history-unavailable")
    assert REGISTRY.get_sample_value(UNAVAILABLE, {"route": "/v2/history"}) == before + 1


async def test_without_database_url_history_is_503(make_settings: Callable[..., Settings]) -> None:
    """No DATABASE_URL: no history is stored; the answer says so with a 503."""
    app = create_app(make_settings(), mirror=RateMirror(clock=Clock(NOW)))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=worker_app(app)), base_url="http://x"
    ) as client:
        response = await client.get(
            "/v2/history",
            params={"direction": "BTC-USD", "exchanger": "binance", "from": instant(NOW - MIN)},
        )
    assert "DATABASE_URL" in problem(response, 503, "history-unavailable")["detail"]


# ------------------------------------------------------------------------- at=


async def test_at_gives_the_last_values_at_or_before_it_rendered_like_the_live_body(
    client: httpx.AsyncClient, repo: RateRepository
) -> None:
    """Per direction the newest tick not after `at`, legs and books included, stale judged at
    `at`: byte for byte what render_v2 makes of Decision.judged_at; ETag/304 apply."""
    at = NOW - DAY
    btc_then = tick("binance", "BTC-RUB", "6207500.12", at - 5_000)
    eth_then = tick("binance", "ETH-USD", "3200.5", at - 45_000)  # older than its 30 s limit
    await store(
        repo,
        tick("binance", "BTC-RUB", "6000000", at - 60_000),
        btc_then,
        tick("binance", "BTC-RUB", "7000000", at + 1),
    )
    await store(repo, eth_then, tick("binance", "ETH-USD", "3300", at + 60_000))

    response = await client.get(
        "/v2/courses",
        params={"exchanger": "binance", "direction": "BTC-RUB,ETH-USD", "at": instant(at)},
    )

    assert response.status_code == 200, response.text
    assert response.content == render_v2(Decision.judged_at("binance", [btc_then, eth_then], at))
    body = response.json()
    assert [c["value"] for c in body["courses"]] == ["6207500.12", "3200.5"]
    assert [c["stale"] for c in body["courses"]] == [False, True] and body["stale"] is True
    assert body["courses"][0]["bid"] == "6207499.12" and len(body["courses"][0]["legs"]) == 2
    assert response.headers["x-rates-stale"] == "true"
    assert response.headers["x-rates-as-of"] == body["as_of"] == rfc(eth_then.oldest_leg_ms)
    assert response.headers["x-rates-age"] == "45"
    again = await client.get(
        "/v2/courses",
        params={"exchanger": "binance", "direction": "BTC-RUB,ETH-USD", "at": instant(at)},
        headers={"If-None-Match": response.headers["etag"]},
    )
    assert again.status_code == 304 and again.headers["etag"] == response.headers["etag"]


async def test_at_without_exchanger_picks_the_first_fresh_one_in_preference_order(
    client: httpx.AsyncClient, repo: RateRepository
) -> None:
    """Binance fresh at `at` serves; where its value was stale then, CoinGecko's fresh one does;
    with neither fresh, the one whose oldest leg is newest, marked stale."""
    at = NOW - DAY
    await store(
        repo,
        tick("binance", "BTC-USD", "1", at - 1_000),
        tick("coingecko", "BTC-USD", "2", at - 2_000),
    )
    await store(
        repo,
        tick("binance", "ETH-USD", "3", at - 60_000),
        tick("coingecko", "ETH-USD", "4", at - 5_000),
    )
    await store(
        repo,
        tick("binance", "USDTTRC-USD", "5", at - 90_000),
        tick("coingecko", "USDTTRC-USD", "6", at - 80_000),
    )

    async def serving(direction: str) -> tuple[str, str, bool]:
        body = (
            await client.get("/v2/courses", params={"direction": direction, "at": instant(at)})
        ).json()
        return body["exchanger"], body["courses"][0]["value"], body["stale"]

    assert await serving("BTC-USD") == ("binance", "1", False)
    assert await serving("ETH-USD") == ("coingecko", "4", False)
    assert await serving("USDTTRC-USD") == ("coingecko", "6", True)
    assert await serving("BTC-USD,ETH-USD") == ("coingecko", "2", False)


async def test_at_on_unversioned_courses_needs_version_2(
    client: httpx.AsyncClient, repo: RateRepository
) -> None:
    """/courses with Accept-Version: 2 answers `at` (with Vary); v1 knows no `at`."""
    at = NOW - DAY
    await store(repo, *(tick("binance", d, "10", at - 1_000) for d in DIRECTIONS))
    v2 = await client.get("/courses", params={"at": instant(at)}, headers={"Accept-Version": "2"})
    assert v2.status_code == 200 and len(v2.json()["courses"]) == len(DIRECTIONS)
    assert v2.headers["vary"] == "Accept-Version" and v2.headers["api-version"] == "2"
    problem(await client.get("/courses", params={"at": instant(at)}), 400, "unknown-parameter")
    problem(await client.get("/v1/courses", params={"at": instant(at)}), 400, "unknown-parameter")


async def test_live_answers_stay_on_the_snapshot(
    client: httpx.AsyncClient, repo: RateRepository
) -> None:
    """Without `at` nothing is read from Postgres: the empty live snapshot answers 503 no-data
    even though history holds values."""
    await store(repo, *(tick("binance", d, "10", NOW - 1_000) for d in DIRECTIONS))
    problem(await client.get("/v2/courses"), 503, "no-data")
    assert (await client.get("/v2/courses", params={"at": instant(NOW)})).status_code == 200


@pytest.mark.parametrize(
    ("query", "slug", "status"),
    [
        (f"at={instant(T0 - DAY)}", "no-history", 404),
        (f"at={instant(NOW + 1)}", "time-out-of-range", 400),
        (f"at={instant(NOW - 31 * DAY)}", "time-out-of-range", 400),
        ("at=2025-12-01", "invalid-time", 400),
        ("at=", "empty-value", 400),
        (f"at={instant(NOW)}&at={instant(NOW)}", "repeated-parameter", 400),
        (f"at={instant(NOW)}&direction=DOGE-USD", "unknown-direction", 400),
        (f"at={instant(NOW)}&exchanger=kraken", "unknown-exchanger", 400),
        (f"at={instant(NOW)}&when=now", "unknown-parameter", 400),
        (f"%61t={instant(T0 - DAY)}", "no-history", 404),
    ],
)
async def test_at_rejects_what_it_cannot_answer(
    client: httpx.AsyncClient, repo: RateRepository, query: str, slug: str, status: int
) -> None:
    """Nothing stored before `at`: 404; a future or too old `at`, malformed input: 400."""
    await store(repo, tick("binance", "BTC-USD", "1", T0))
    body = problem(await client.get(f"/v2/courses?{query.replace('+', '%2B')}"), status, slug)
    if slug == "unknown-parameter":
        assert body["allowed"] == ["exchanger", "direction", "at"]
    if slug == "no-history":
        assert "BTC-USD" in body["missing"] and body["at"] == rfc(T0 - DAY)


async def test_postgres_renders_the_body_byte_for_byte_as_the_python_reference(
    client: httpx.AsyncClient, repo: RateRepository
) -> None:
    """The SQL rendering of candles equals render_candles of the stored rows: trailing zeros,
    tiny and huge values, many places, every interval."""
    values = [
        "65000.10000000",
        "0.00000001",
        "123456789012345678.5",
        "1.0",
        "100",
        "7.123456789012345678901",
    ]
    await store(
        repo, *(tick("coingecko", "ETH-RUB", v, T0 + i * 17 * MIN) for i, v in enumerate(values))
    )
    for interval, width in (("1m", 60), ("5m", 300), ("15m", 900), ("1h", 3_600), ("1d", 86_400)):
        response = await client.get(
            "/v2/history",
            params={
                "direction": "ETH-RUB",
                "exchanger": "coingecko",
                "interval": interval,
                "from": instant(T0),
                "to": instant(T0 + DAY),
            },
        )
        expected = render_candles(
            "coingecko", "ETH-RUB", interval, await repo.candles("coingecko", "ETH-RUB", width)
        )
        assert response.content == expected
    assert (
        '"low":"0.00000001"' in response.text and '"high":"123456789012345678.5"' in response.text
    )
