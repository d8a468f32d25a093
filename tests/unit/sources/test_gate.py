"""Gate: when a venue may be called again after a ban, a Retry-After or a refusal (fake clocks)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from loguru import logger

from ratesvc.errors import Banned, Blocked, Held, RateLimited, Restricted, SourceError
from ratesvc.sources.gate import BAN_FLOOR_S, BAN_MARGIN_S, Gate
from tests.unit.sources.source_helpers import metric

WALL = 1_800_000_000.0


class Clocks:
    """Monotonic and wall time that move together, only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return WALL + self.now


@pytest.fixture(name="clocks")
def clocks_fixture() -> Clocks:
    return Clocks()


@pytest.fixture(name="gate")
def gate_fixture(clocks: Clocks) -> Gate:
    return Gate("venue", clock=clocks.monotonic, wall_clock=clocks.wall)


@pytest.fixture(name="lines")
def lines_fixture() -> Iterator[list[str]]:
    lines: list[str] = []
    sink = logger.add(
        lambda m: lines.append(f"{m.record['level'].name} {m.record['message']}"), level="DEBUG"
    )
    yield lines
    logger.remove(sink)


def held_for(gate: Gate) -> float:
    """retry_after_s of the Held that check() raises (fails the test if it lets a request out)."""
    with pytest.raises(Held) as held:
        gate.check()
    assert held.value.retry_after_s is not None
    return held.value.retry_after_s


def test_an_open_gate_lets_requests_out(gate: Gate) -> None:
    gate.check()
    assert gate.remaining_s() == 0


def test_a_named_ban_holds_every_request_until_its_end(gate: Gate, clocks: Clocks) -> None:
    gate.observe(Banned("418", until_s=clocks.wall() + 60))
    assert held_for(gate) == 60 + BAN_MARGIN_S
    clocks.now += 60 + BAN_MARGIN_S - 0.5
    assert held_for(gate) == pytest.approx(0.5)
    clocks.now += 0.5
    gate.check()


def test_a_ban_naming_no_end_waits_a_floor_that_doubles_per_ban_in_a_row(
    gate: Gate, clocks: Clocks
) -> None:
    holds = []
    for _ in range(3):
        gate.observe(Banned("418"))
        holds.append(held_for(gate))
        clocks.now += holds[-1]
    assert holds == [BAN_FLOOR_S, 2 * BAN_FLOOR_S, 4 * BAN_FLOOR_S]
    gate.passed()  # the venue answered again: the next ban starts from the floor
    gate.observe(Banned("418"))
    assert held_for(gate) == BAN_FLOOR_S


def test_a_ban_end_already_past_by_our_clock_counts_as_unnamed(gate: Gate, clocks: Clocks) -> None:
    # our clock runs ahead of the venue's: knocking at once would draw another 418
    gate.observe(Banned("418", until_s=clocks.wall() - 30))
    assert held_for(gate) == BAN_FLOOR_S


def test_a_ban_takes_the_longer_of_its_end_and_retry_after(gate: Gate, clocks: Clocks) -> None:
    gate.observe(Banned("418", until_s=clocks.wall() + 10, retry_after_s=300))
    assert held_for(gate) == 300


def test_a_ban_is_one_critical_line_and_a_metric_until_the_venue_answers(
    gate: Gate, clocks: Clocks, lines: list[str]
) -> None:
    gate.observe(Banned("HTTP 418: IP banned until 1800000160000", until_s=clocks.wall() + 60))
    critical = [line for line in lines if line.startswith("CRITICAL")]
    assert len(critical) == 1 and "no request to venue until" in critical[0]
    end = clocks.wall() + 60 + BAN_MARGIN_S
    assert metric("ratesvc_source_banned_until_timestamp_seconds", source="venue") == end
    gate.passed()
    assert metric("ratesvc_source_banned_until_timestamp_seconds", source="venue") == 0


def test_retry_after_closes_the_gate_a_429_without_it_does_not(gate: Gate) -> None:
    gate.observe(RateLimited("429"))
    gate.check()
    gate.observe(RateLimited("429", retry_after_s=7))
    assert held_for(gate) == 7


def test_a_shorter_hold_never_reopens_a_longer_one(gate: Gate) -> None:
    gate.observe(RateLimited("429", retry_after_s=30))
    gate.observe(RateLimited("429", retry_after_s=5))
    gate.observe(Held("nothing sent", retry_after_s=1))
    assert held_for(gate) == 30


def test_other_errors_leave_the_gate_open(gate: Gate) -> None:
    gate.observe(SourceError("HTTP 400", status=400))
    gate.check()


def test_a_refusal_holds_its_time_and_logs_its_advice_once_per_episode(
    gate: Gate, lines: list[str]
) -> None:
    for _ in range(3):
        gate.observe(Restricted("HTTP 451", hold_s=600, advice="use the data-only endpoints"))
    gate.observe(Blocked("HTTP 403", hold_s=60, advice="a firewall blocks this IP"))
    assert held_for(gate) == 600
    errors = [line for line in lines if line.startswith("ERROR")]
    assert errors == ["ERROR use the data-only endpoints", "ERROR a firewall blocks this IP"]
    gate.passed()
    gate.observe(Restricted("HTTP 451", hold_s=600, advice="use the data-only endpoints"))
    assert len([line for line in lines if line.startswith("ERROR")]) == 3
