"""CoinGeckoSource under supervise() with a manual clock: cadence, call budget and back-off.

Every assertion is about when calls happen on the manual clock (the mock API records it), never
about wall-clock time.
"""

from __future__ import annotations

import httpx
import pytest

from ratesvc.domain import SourceState
from ratesvc.sources.backoff import Backoff
from ratesvc.sources.budget import MemoryLedger
from ratesvc.sources.coingecko import CoinGeckoOptions, CoinGeckoSource
from tests.captured import captured
from tests.unit.sources.source_helpers import (
    NOV_1_2026,
    ManualClock,
    Supervised,
    metric,
    read_fixture,
    settle,
)

BODY = read_fixture("coingecko", "simple_price.json")
OK = httpx.Response(200, content=BODY)
DAY_S = 86_400.0


class Api:
    """A mocked simple/price endpoint: plays `responses` (the last repeats), records call times."""

    def __init__(self, clock: ManualClock, responses: list[httpx.Response]) -> None:
        self.clock = clock
        self.responses = responses or [OK]
        self.times: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.times.append(self.clock())
        response = self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]
        return httpx.Response(response.status_code, headers=response.headers, content=BODY)


class Poller(Supervised):
    """A CoinGeckoSource supervised on a manual clock; `async with` runs it."""

    def __init__(
        self, *responses: httpx.Response, used: int = 0, day: float = 0, **options: object
    ) -> None:
        clock = ManualClock(wall_start=NOV_1_2026 + day * DAY_S)
        self.api = Api(clock, list(responses))
        self.ledger = MemoryLedger()
        self.ledger.counts["coingecko:2026-11"] = used
        source = CoinGeckoSource(
            CoinGeckoOptions(_env_file=None, **options),
            http_transport=httpx.MockTransport(self.api),
            ledger=self.ledger,
            clock=clock,
            sleep=clock.sleep,
            wall_clock=clock.time,
        )
        # no jitter, no extra wait: the source's own pacing decides every call
        super().__init__(source, backoff=Backoff(random_fraction=lambda: 0.0), clock=clock)
        self.coingecko = source
        self.manual = clock

    async def set_active(self, active: bool) -> None:
        self.coingecko.set_active(active)
        await settle()


def limited(retry_after_s: int | None = None) -> httpx.Response:
    headers = {} if retry_after_s is None else {"Retry-After": str(retry_after_s)}
    return httpx.Response(429, headers=headers)


async def test_cadence_is_standby_until_active_and_back() -> None:
    async with Poller() as poller:
        await poller.manual.advance(610)
        await poller.set_active(True)
        await poller.manual.advance(60)
        await poller.set_active(False)
        await poller.manual.advance(400)
    assert poller.api.times == [0, 300, 600, 630, 660, 960]
    assert metric("ratesvc_coingecko_poll_interval_seconds") == 300


async def test_active_cadence_is_no_faster_than_the_budget_allows() -> None:
    # 1,000 calls left for the last 15 days of November: no spare for bursts
    async with Poller(used=9_000, day=15) as poller:
        await poller.set_active(True)
        await poller.manual.advance(3_000)
    # the even spread of what is left (about 15 days / 1,000 calls), not the 30 s active cadence
    gaps = [b - a for a, b in zip(poller.api.times, poller.api.times[1:])]
    assert gaps == pytest.approx([15 * DAY_S / 1_000] * 2, rel=0.01)
    assert metric("ratesvc_coingecko_budget_remaining_calls", window="month") == 997


async def test_per_minute_cap_holds_under_a_burst_of_set_active_flips() -> None:
    async with Poller(calls_per_minute=3, active_poll_interval_s=1) as poller:
        for flip in range(360):  # three minutes of flips every half second
            await poller.set_active(flip % 2 == 0)
            await poller.manual.advance(0.5)
    times = poller.api.times
    assert len(times) >= 8
    assert all(len([t for t in times if end - 60 < t <= end]) <= 3 for end in times)


async def test_failed_calls_count_against_the_budget() -> None:
    failed_before = metric("ratesvc_coingecko_calls_total", status="503")
    down = httpx.Response(503)
    async with Poller(down, down, down, OK) as poller:
        await poller.set_active(True)
        await poller.manual.advance(210)
    assert poller.api.times == [0, 30, 90, 210]  # 503s back off like 429s
    assert poller.ledger.counts["coingecko:2026-11"] == 4
    assert metric("ratesvc_coingecko_calls_total", status="503") == failed_before + 3
    assert [s.state for s in poller.statuses] == [SourceState.DOWN, SourceState.UP]


async def test_429_retry_after_is_honoured_even_when_switching_to_active() -> None:
    async with Poller(limited(retry_after_s=500), OK) as poller:
        await poller.manual.advance(100)
        await poller.set_active(True)  # re-evaluates the wait, which Retry-After still bounds
        await poller.manual.advance(450)
    assert poller.api.times == [0, 500, 530]


async def test_429_without_retry_after_backs_off_exponentially_from_the_cadence() -> None:
    responses = [limited()] * 4 + [OK]
    async with Poller(*responses, active_poll_interval_s=30) as poller:
        await poller.set_active(True)
        await poller.manual.advance(500)
    assert poller.api.times == [0, 30, 90, 210, 450, 480]


async def test_backoff_is_capped() -> None:
    async with Poller(limited(), active_poll_interval_s=30, max_backoff_s=100) as poller:
        await poller.set_active(True)
        await poller.manual.advance(400)
    assert poller.api.times == [0, 30, 90, 190, 290, 390]


async def test_switching_to_active_during_a_backoff_wait_polls_promptly() -> None:
    async with Poller(httpx.Response(503), OK) as poller:
        await poller.manual.advance(40)  # the failed poll at 0 waits for the standby cadence
        assert poller.api.times == [0]
        await poller.set_active(True)  # 40 s since the last call: the active cadence is due
    assert poller.api.times == [0, 40]
    # one failed poll is no outage: its values were still fresh
    assert [s.state for s in poller.statuses] == [SourceState.UP]


async def test_exhausted_month_makes_no_call_until_the_next_month() -> None:
    async with Poller(used=10_000, day=20, stale_after_s=30 * DAY_S) as poller:
        await poller.set_active(True)
        await poller.manual.advance(10 * DAY_S - 1)
        assert poller.api.times == []
        assert "monthly quota" in poller.statuses[0].reason
        await poller.manual.advance(1)  # December 1st, 00:00 UTC
    assert poller.api.times == [10 * DAY_S]
    assert poller.ledger.counts["coingecko:2026-12"] == 1


async def test_a_shared_ledger_is_used_once_wired() -> None:
    async with Poller() as poller:
        shared = MemoryLedger()
        poller.coingecko.use_ledger(shared)
        await poller.manual.advance(300)
    assert shared.counts == {"coingecko:2026-11": 1}  # the first call went to the default one


async def test_demo_limits_default_to_the_stricter_figure_and_its_429_is_honoured() -> None:
    # the Demo plan: 30/min and 10,000/month on older pages, 100/min on the current ones
    defaults = CoinGeckoOptions(_env_file=None)
    assert (defaults.calls_per_minute, defaults.calls_per_month) == (30, 10_000)
    fixture = captured("coingecko", "error_rate_limited.json")  # retry-after: 119
    over = httpx.Response(fixture.status or 0, headers=fixture.headers)
    async with Poller(over, OK, calls_per_minute=100, active_poll_interval_s=1) as poller:
        await poller.set_active(True)
        await poller.manual.advance(122)
    assert poller.api.times == [0, 119, 120, 121, 122]
