"""GET /v2/sources through the fast path: state, transport, last data, serving, reason."""

# pylint: disable=missing-function-docstring

from __future__ import annotations

from dataclasses import replace

import httpx

from ratesvc.api.app import create_app, with_fast_path
from ratesvc.api.mirror import RateMirror
from ratesvc.domain import RateTick, SourceState, SourceStatus, Transport
from ratesvc.settings import Settings
from tests.unit.api.api_helpers import MAX_AGE_MS, T0, FakeClock, client_for, full_set, status


def serve(
    settings: Settings, clock: FakeClock, ticks: list[RateTick], *statuses: SourceStatus
) -> tuple[RateMirror, object]:
    mirror = RateMirror(hold_down_s=10, redis_stale_after_s=10, clock=clock)
    mirror.load(ticks, statuses)
    mirror.set_following(True)
    return mirror, with_fast_path(create_app(settings, mirror=mirror))


async def sources(app: object, **headers: str) -> httpx.Response:
    async with client_for(app) as client:  # type: ignore[arg-type]
        return await client.get("/v2/sources", headers=headers)


def by_name(answer: httpx.Response) -> dict[str, dict]:
    return {entry["exchanger"]: entry for entry in answer.json()["sources"]}


BOTH = full_set("binance", ts_ms=T0) + full_set("coingecko", ts_ms=T0 - 5_000)


async def test_both_up_the_preferred_one_serving(settings: Settings, clock: FakeClock) -> None:
    _mirror, app = serve(settings, clock, BOTH, status("binance", SourceState.UP, T0 - 100))
    answer = await sources(app)
    assert answer.status_code == 200 and answer.headers["api-version"] == "2"
    assert answer.json() == {
        "sources": [
            {
                "exchanger": "binance",
                "state": "up",
                "transport": "ws",
                "last_tick": "2023-11-14T22:13:20.000Z",
                "serving": True,
                "reason": None,
            },
            {
                "exchanger": "coingecko",
                "state": "up",
                "transport": "poll",
                "last_tick": "2023-11-14T22:13:15.000Z",
                "serving": False,
                "reason": None,
            },
        ]
    }


async def test_a_reported_outage_is_down_with_its_reason_and_the_other_serves(
    settings: Settings, clock: FakeClock
) -> None:
    down = SourceStatus("binance", SourceState.DOWN, T0 + 1, Transport.WS, "connection refused")
    _mirror, app = serve(settings, clock, BOTH, down)
    entries = by_name(await sources(app))
    assert entries["binance"]["state"] == "down"
    assert entries["binance"]["reason"] == "connection refused"
    assert entries["binance"]["serving"] is False and entries["coingecko"]["serving"] is True


async def test_binance_on_its_rest_fallback_says_rest(settings: Settings, clock: FakeClock) -> None:
    up_rest = SourceStatus("binance", SourceState.UP, T0 - 100, Transport.REST)
    _mirror, app = serve(settings, clock, BOTH, up_rest)
    assert by_name(await sources(app))["binance"]["transport"] == "rest"


async def test_values_past_their_limit_make_it_stale_at_the_exact_instant(
    settings: Settings, clock: FakeClock
) -> None:
    ticks = full_set("binance", ts_ms=T0) + full_set("coingecko", ts_ms=T0 + 60_000)
    _mirror, app = serve(settings, clock, ticks)
    clock.now_ms = T0 + MAX_AGE_MS
    at_limit = await sources(app)
    clock.now_ms += 1
    past = await sources(app)
    assert by_name(at_limit)["binance"]["state"] == "up"
    entry = by_name(past)["binance"]
    assert entry["state"] == "stale" and entry["serving"] is False
    assert entry["reason"] == "every value is past its freshness limit"
    assert by_name(past)["coingecko"]["serving"] is True
    assert past.headers["etag"] != at_limit.headers["etag"]


async def test_an_up_after_an_outage_stays_stale_until_newer_data(
    settings: Settings, clock: FakeClock
) -> None:
    up = replace(status("binance", SourceState.UP, T0 + 200), blocked_ms=T0 + 100)
    _mirror, app = serve(settings, clock, BOTH, up)
    entry = by_name(await sources(app))["binance"]
    assert (entry["state"], entry["reason"]) == ("stale", "no data since its last reported outage")


async def test_a_worker_that_lost_redis_too_long_vouches_for_nothing(
    settings: Settings, clock: FakeClock
) -> None:
    mirror, app = serve(settings, clock, BOTH)
    mirror.set_following(False)
    clock.advance(10)
    entries = by_name(await sources(app))
    assert {e["state"] for e in entries.values()} == {"stale"}
    assert entries["binance"]["reason"].startswith("this worker has lost the Redis stream")


async def test_nothing_heard_is_down_without_transport_or_time(
    settings: Settings, clock: FakeClock
) -> None:
    _mirror, app = serve(settings, clock, full_set("binance"))
    entry = by_name(await sources(app))["coingecko"]
    assert entry == {
        "exchanger": "coingecko",
        "state": "down",
        "transport": None,
        "last_tick": None,
        "serving": False,
        "reason": "nothing heard from it yet",
    }


async def test_revalidation_gives_304_until_the_data_changes(
    settings: Settings, clock: FakeClock
) -> None:
    mirror, app = serve(settings, clock, BOTH)
    etag = (await sources(app)).headers["etag"]
    again = await sources(app, **{"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    mirror.apply(full_set("binance", ts_ms=T0 + 1_000))
    changed = await sources(app, **{"If-None-Match": etag})
    assert changed.status_code == 200
    assert by_name(changed)["binance"]["last_tick"] == "2023-11-14T22:13:21.000Z"
