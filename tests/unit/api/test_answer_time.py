"""Staleness judged at answer time, through the fast path, at the exact boundaries.

The mirror's evaluation timer never runs here (the clock only moves when a test says so): every
answer below is judged by the request itself. `X-Rates-As-Of` is the oldest leg of what was served
(a cross is as old as its FX leg) and `X-Rates-Age` counts from it.
"""

# pylint: disable=missing-function-docstring

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import httpx

from ratesvc.api.app import create_app, with_fast_path
from ratesvc.api.mirror import RateMirror
from ratesvc.api.render import rfc3339_ms
from ratesvc.domain import DIRECTIONS, Leg, RateTick, SourceState
from ratesvc.settings import Settings
from tests.unit.api.api_helpers import MAX_AGE_MS, T0, FakeClock, client_for, full_set, status

HOLD_MS = 10_000


def make(clock: FakeClock, settings: Settings, *ticks: RateTick) -> tuple[RateMirror, object]:
    mirror = RateMirror(hold_down_s=HOLD_MS / 1000, redis_stale_after_s=10, clock=clock)
    mirror.load(ticks)
    mirror.set_following(True)
    return mirror, with_fast_path(create_app(settings, mirror=mirror))


def cross(*, btc_ms: int, fx_ms: int) -> RateTick:
    """binance BTC-RUB = BTC/USDT (binance, 30 s limit) x USDT/RUB (coingecko, 900 s limit)."""
    legs = (
        Leg("binance", "BTC/USDT", Decimal(65000), btc_ms, MAX_AGE_MS),
        Leg("coingecko", "USDT/RUB", Decimal("95.5"), fx_ms, 900_000),
    )
    return RateTick("binance", "BTC-RUB", Decimal(6207500), max(btc_ms, fx_ms), legs)


async def get(app: object, path: str = "/courses") -> httpx.Response:
    async with client_for(app) as client:  # type: ignore[arg-type]
        return await client.get(path)


async def test_a_value_reads_fresh_up_to_its_limit_and_stale_one_millisecond_after(
    clock: FakeClock, settings: Settings
) -> None:
    _mirror, app = make(clock, settings, *full_set("binance"))
    clock.now_ms = T0 + MAX_AGE_MS  # the last fresh instant (age == limit)
    at_limit = await get(app)
    clock.now_ms += 1
    past = await get(app)
    assert at_limit.headers["x-rates-stale"] == "false" and "x-rates-age" not in at_limit.headers
    assert past.headers["x-rates-stale"] == "true"
    assert past.headers["x-rates-age"] == str((MAX_AGE_MS + 1) // 1000)
    assert past.headers["x-rates-as-of"] == rfc3339_ms(T0)


async def test_failover_happens_at_the_boundary_without_waiting_for_a_timer(
    clock: FakeClock, settings: Settings
) -> None:
    later = full_set("coingecko", ts_ms=T0 + 5_000)
    _mirror, app = make(clock, settings, *full_set("binance"), *later)
    clock.now_ms = T0 + MAX_AGE_MS
    assert (await get(app)).json()["exchanger"] == "binance"
    clock.now_ms += 1
    answer = await get(app)
    assert answer.json()["exchanger"] == "coingecko"
    assert answer.headers["x-rates-stale"] == "false"


async def test_a_cross_is_as_of_its_fx_leg_and_ages_from_it(
    clock: FakeClock, settings: Settings
) -> None:
    fx_ms = T0 - 600_000  # CoinGecko's USDT/RUB polled ten minutes ago, within its 900 s limit
    _mirror, app = make(clock, settings, cross(btc_ms=T0, fx_ms=fx_ms))
    fresh = await get(app, "/courses?exchanger=binance&direction=BTC-RUB")
    assert fresh.headers["x-rates-stale"] == "false"
    assert fresh.headers["x-rates-as-of"] == rfc3339_ms(fx_ms)
    clock.now_ms = fx_ms + 900_000 + 1  # the FX leg ages out, the market leg would still be fine
    stale = await get(app, "/courses?exchanger=binance&direction=BTC-RUB")
    assert stale.headers["x-rates-stale"] == "true"
    assert stale.headers["x-rates-age"] == str((900_000 + 1) // 1000)


async def test_the_stale_fallback_serves_the_exchanger_whose_oldest_leg_is_newest(
    clock: FakeClock, settings: Settings
) -> None:
    # Binance's cross has the newest leg of all, but its FX leg is the oldest: CoinGecko's values,
    # all of one moment, are the truer "freshest known".
    old_fx = cross(btc_ms=T0 + 20_000, fx_ms=T0 - 899_000)
    coingecko = full_set("coingecko", ts_ms=T0, directions=["BTC-RUB"])
    _mirror, app = make(clock, settings, old_fx, *coingecko)
    clock.now_ms = T0 + 60_000  # everything stale
    answer = await get(app, "/courses?direction=BTC-RUB")
    assert answer.json()["exchanger"] == "coingecko"
    assert answer.headers["x-rates-stale"] == "true"
    assert answer.headers["x-rates-as-of"] == rfc3339_ms(T0)


async def test_failback_happens_when_the_hold_down_ends_at_answer_time(
    clock: FakeClock, settings: Settings
) -> None:
    mirror, app = make(clock, settings, *full_set("coingecko"))
    back_at = T0 + 1_000
    clock.now_ms = back_at
    binance = full_set("binance", ts_ms=back_at)
    mirror.apply([replace(t, since_ms=back_at) for t in binance])  # fresh again since back_at
    mirror.apply(full_set("coingecko", ts_ms=T0 + 10_000))
    clock.now_ms = back_at + HOLD_MS - 1
    assert (await get(app)).json()["exchanger"] == "coingecko"
    clock.now_ms += 1
    assert (await get(app)).json()["exchanger"] == "binance"


async def test_values_read_stale_when_redis_has_been_gone_for_its_limit(
    clock: FakeClock, settings: Settings
) -> None:
    mirror, app = make(clock, settings, *full_set("binance", ts_ms=T0 + 20_000))
    clock.now_ms = T0 + 1_000
    mirror.set_following(False)  # lost at T0 + 1 s; REDIS_STALE_AFTER_S is 10 s here
    clock.now_ms = T0 + 11_000 - 1
    assert (await get(app)).headers["x-rates-stale"] == "false"
    clock.now_ms += 1
    assert (await get(app)).headers["x-rates-stale"] == "true"


async def test_a_down_status_takes_effect_on_the_next_answer(
    clock: FakeClock, settings: Settings
) -> None:
    mirror, app = make(clock, settings, *full_set("binance"), *full_set("coingecko"))
    clock.now_ms = T0 + 10
    mirror.apply([status("binance", SourceState.DOWN, T0 + 10)])
    body = (await get(app)).json()
    assert body["exchanger"] == "coingecko"
    assert [c["direction"] for c in body["courses"]] == list(DIRECTIONS)
