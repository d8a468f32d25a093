"""CallBudget arithmetic with a manual clock: standby vs active vs budget-limited, caps, months."""

from __future__ import annotations

import math

import pytest

from ratesvc.sources.budget import (
    BudgetExhausted,
    BudgetLimits,
    CallBudget,
    MemoryLedger,
    month_bounds,
)
from tests.unit.sources.source_helpers import NOV_1_2026, ManualClock

DAY_S = 86_400.0
DEMO = BudgetLimits(per_minute=30, per_month=10_000, reserve_fraction=0.1)


def make_budget(
    *, used: int = 0, day: float = 0.0, limits: BudgetLimits = DEMO
) -> tuple[CallBudget, ManualClock, MemoryLedger]:
    """A budget `day` days into November 2026 whose ledger already counts `used` calls."""
    clock = ManualClock(wall_start=NOV_1_2026 + day * DAY_S)
    ledger = MemoryLedger()
    ledger.counts["coingecko:2026-11"] = used
    budget = CallBudget("coingecko", limits, ledger=ledger, clock=clock, wall_clock=clock.time)
    return budget, clock, ledger


def intervals(budget: CallBudget, standby_s: float = 300, active_s: float = 30) -> list[float]:
    """[standby, active] intervals right now."""
    return [
        budget.interval_s(standby_s=standby_s, active_s=active_s, active=active)
        for active in (False, True)
    ]


def test_month_bounds_are_utc_calendar_months() -> None:
    assert month_bounds(NOV_1_2026 + 5) == ("2026-11", NOV_1_2026, NOV_1_2026 + 30 * DAY_S)
    key, start, end = month_bounds(NOV_1_2026 + 45 * DAY_S)  # mid-December: year rolls over
    assert (key, end - start) == ("2026-12", 31 * DAY_S)
    assert month_bounds(end)[0] == "2027-01"


async def test_a_fresh_month_affords_the_configured_cadences() -> None:
    budget, _, _ = make_budget()
    await budget.spend()
    assert intervals(budget) == [300, 30]


async def test_standby_never_plans_more_than_the_non_reserve_share() -> None:
    budget, _, _ = make_budget()
    await budget.spend()
    # 60 s would be 43,200 calls a month: standby is slowed to 90 % of 10,000 over 30 days
    assert budget.interval_s(standby_s=60, active_s=30, active=False) == pytest.approx(288)


async def test_spent_spare_makes_active_no_faster_than_standby() -> None:
    budget, _, _ = make_budget(used=8_999, day=15)  # 1,000 calls left for 15 days
    await budget.spend()
    even_spread = 15 * DAY_S / 1_000
    standby, active = intervals(budget)
    assert standby == pytest.approx(even_spread) and active == standby
    # with the same 999 calls left on the 29th, there is spare again: active bursts
    budget.wall_clock = lambda: NOV_1_2026 + 29 * DAY_S
    assert intervals(budget) == [300, 30]


async def test_exhausted_month_waits_for_the_next_one_and_counts_nothing() -> None:
    budget, _, ledger = make_budget(used=10_000, day=20)
    with pytest.raises(BudgetExhausted):
        await budget.spend()
    assert ledger.counts["coingecko:2026-11"] == 10_000
    assert intervals(budget) == [10 * DAY_S] * 2  # until December starts
    budget.wall_clock = lambda: NOV_1_2026 + 30 * DAY_S  # December 1st
    assert budget.remaining_month() == 10_000
    assert await budget.spend() == 1
    assert ledger.counts["coingecko:2026-12"] == 1


async def test_per_minute_cap_is_a_floor_and_a_sliding_window() -> None:
    budget, clock, _ = make_budget(limits=BudgetLimits(per_minute=3, per_month=10_000))
    assert intervals(budget, standby_s=1, active_s=1) == [pytest.approx(288), 20]
    for _ in range(3):
        await budget.spend()
        await clock.advance(1)
    assert budget.remaining_minute() == 0
    assert budget.minute_free_at() == 60  # the first of the three leaves the window then
    await clock.advance(57)
    assert budget.remaining_minute() == 1 and budget.minute_free_at() == -math.inf


async def test_every_spend_is_counted_in_the_ledger_which_outlives_the_budget() -> None:
    budget, clock, ledger = make_budget(used=41)
    assert await budget.spend() == 42
    again = CallBudget("coingecko", DEMO, ledger=ledger, clock=clock, wall_clock=clock.time)
    assert await again.spend() == 43  # a restarted process continues the month's count
    assert again.remaining_month() == 10_000 - 43


async def test_use_ledger_rereads_the_count_from_the_new_ledger() -> None:
    budget, _, _ = make_budget()
    await budget.spend()
    shared = MemoryLedger()
    shared.counts["coingecko:2026-11"] = 500
    budget.use_ledger(shared)
    assert await budget.spend() == 501
