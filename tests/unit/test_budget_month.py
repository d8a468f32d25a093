"""A month of CoinGecko's call budget with one collector and with two (bench/budget_month.py).

The real collector code (CoinGeckoSource, CallBudget, lanes, Collector, SourceRoles, Leadership)
runs through all 31 days of December 2026 on a virtual-time loop, with a one-day Binance outage in
the middle and, with two collectors, a restart and a crash of the leader. The plan is the Demo
plan scaled down ten times (1,000 calls, standby every 3,000 s, active every 300 s) so a month
takes seconds of CPU; `python bench/budget_month.py` runs the shipped defaults (docs/budget.md).
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from loguru import logger

from bench.budget_month import TAKEOVERS, Report, Scenario, run_month  # isort: skip

SCALED = Scenario(
    coingecko={
        "poll_interval_s": 3_000,
        "active_poll_interval_s": 300,
        "calls_per_month": 1_000,
        "stale_after_s": 9_000,
    },
    fx_stale_after_s=3_600,
    binance_tick_s=300,
    lease_ms=300_000,
    ticker_period_s=3_600,
    sample_s=300,
)


@pytest.fixture(name="months", scope="module")
def months_fixture() -> tuple[Report, Report]:
    logger.disable("ratesvc")  # a day of Binance retries is noise here
    try:
        one = run_month(SCALED)
        two = run_month(replace(SCALED, collectors=2, takeovers=TAKEOVERS))
    finally:
        logger.enable("ratesvc")
    return one, two


@pytest.mark.timeout(300)
def test_a_month_stays_within_the_quota_and_keeps_the_fx_leg_fresh(months) -> None:
    one, _ = months
    assert one.failures() == []
    assert one.calls <= 1_000 and sum(one.calls_per_day) == one.calls
    # the outage day spent the reserve at the active cadence, then standby polling went on
    assert one.reserve_at_outage > 0 and one.outage_active_h > 0
    assert one.calls_per_day[15] > one.calls_per_day[14]
    assert 0 < one.oldest_fx_leg_s < SCALED.fx_stale_after_s


@pytest.mark.timeout(300)
def test_a_hot_standby_and_two_takeovers_add_no_call(months) -> None:
    one, two = months
    assert two.failures(one) == []
    assert two.calls <= one.calls
    # both led in turn; no call ever came from the collector standing by
    assert set(two.calls_by) == {"alpha", "bravo"} and two.calls_not_leading == 0
    assert len(two.takeovers) == 2 and all("leads" in t for t in two.takeovers)
    assert two.oldest_fx_leg_s < SCALED.fx_stale_after_s
