"""Settings under which CoinGecko's quota cannot keep the FX leg fresh are refused at start.

Through `ratesvc collector` (cli.main) as a user runs it: exit code 2 and one line naming the
variable, before anything connects.
"""

from __future__ import annotations

import os

import pytest

from ratesvc.cli import main

REFUSED = 2


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the variables a test sets; REDIS_URL unset, so an accepted setting stops right after."""
    for name in list(os.environ):
        if name.startswith(("BINANCE_", "COINGECKO_", "FX_", "SOURCES", "REDIS_URL")):
            monkeypatch.delenv(name)


def run_collector(monkeypatch: pytest.MonkeyPatch, capsys, **env: str) -> tuple[int, str]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = main(["--env-file", "/nonexistent", "collector"])
    return code, capsys.readouterr().err


def test_the_defaults_fit_the_demo_quota_with_the_fx_leg_fresh(monkeypatch, capsys) -> None:
    code, err = run_collector(monkeypatch, capsys)
    assert "REDIS_URL" in err  # got past every CoinGecko check
    assert code == REFUSED


@pytest.mark.parametrize(
    ("env", "line"),
    [
        # 44,640 calls in a 31-day month against 9,000 after the reserve
        (
            {"COINGECKO_POLL_INTERVAL_S": "60"},
            "ratesvc: invalid setting COINGECKO_POLL_INTERVAL_S: standby polling every 60 s spends "
            "44,640 calls in a 31-day month, more than the 9,000 that "
            "COINGECKO_CALLS_PER_MONTH=10000 leaves after the failover reserve "
            "(COINGECKO_BUDGET_RESERVE=0.1): set it to at least 298 s",
        ),
        # the reserve too is part of the month: 30 % leaves 7,000 calls, 383 s at best
        (
            {"COINGECKO_BUDGET_RESERVE": "0.3"},
            "ratesvc: invalid setting COINGECKO_POLL_INTERVAL_S: standby polling every 300 s",
        ),
        # 3,000 calls afford a poll every 992 s: the FX leg (900 s) cannot stay fresh at all
        (
            {"COINGECKO_CALLS_PER_MONTH": "3000"},
            "ratesvc: invalid setting COINGECKO_CALLS_PER_MONTH: 3000 calls less the failover "
            "reserve (COINGECKO_BUDGET_RESERVE=0.1) afford a standby poll only every 992 s",
        ),
        # a leg fetched every 300 s is up to 360 s old before the next fetch
        (
            {"FX_STALE_AFTER_S": "350", "COINGECKO_CALLS_PER_MONTH": "100000"},
            "ratesvc: invalid setting FX_STALE_AFTER_S: the USDT/RUB leg is fetched every 300 s",
        ),
        (
            {"COINGECKO_ACTIVE_POLL_INTERVAL_S": "600"},
            "ratesvc: invalid setting COINGECKO_ACTIVE_POLL_INTERVAL_S: must not exceed "
            "COINGECKO_POLL_INTERVAL_S (300)",
        ),
    ],
)
def test_settings_the_quota_cannot_keep_fresh_are_one_line(
    monkeypatch, capsys, env: dict[str, str], line: str
) -> None:
    code, err = run_collector(monkeypatch, capsys, **env)
    assert code == REFUSED
    assert err.startswith(line)
    assert err.count("\n") == 1


def test_the_fx_rule_applies_only_where_coingecko_is_binances_fx_leg(monkeypatch, capsys) -> None:
    code, err = run_collector(monkeypatch, capsys, FX_STALE_AFTER_S="350", SOURCES="coingecko")
    assert (code, "REDIS_URL" in err) == (REFUSED, True)


def test_a_paid_quota_affords_a_fast_standby(monkeypatch, capsys) -> None:
    # Basic plan: 100,000 calls a month, 27 s at best with the 10 % reserve
    code, err = run_collector(
        monkeypatch,
        capsys,
        COINGECKO_CALLS_PER_MONTH="100000",
        COINGECKO_POLL_INTERVAL_S="30",
        COINGECKO_ACTIVE_POLL_INTERVAL_S="30",
    )
    assert (code, "REDIS_URL" in err) == (REFUSED, True)
    code, err = run_collector(monkeypatch, capsys, COINGECKO_POLL_INTERVAL_S="20")
    assert code == REFUSED and "COINGECKO_POLL_INTERVAL_S" in err and "at least 30 s" in err
