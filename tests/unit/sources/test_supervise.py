"""supervise() with a scripted fake Source and a fake clock: backoff, reset, watchdog, status."""

# test names say what they check
# pylint: disable=missing-function-docstring,missing-class-docstring

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from ratesvc.domain import Quote, SourceState, SourceStatus
from ratesvc.errors import Held, ParseError, RateLimited, SourceError
from ratesvc.sources.backoff import Backoff
from ratesvc.sources.base import Frame, Source
from ratesvc.sources.supervise import supervise
from tests.unit.sources.source_helpers import metric

STALL = "<stall>"  # keep the connection open and silent
STOP = "<stop>"  # end the test: set the stop event, then stay silent


class FakeClock:
    """Monotonic time that only moves when something sleeps on it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay_s: float) -> None:
        self.now += delay_s
        await asyncio.sleep(0)


class RecordingBackoff(Backoff):
    """Backoff with jitter pinned to the ceiling that remembers every delay it gave."""

    def __init__(self) -> None:
        super().__init__(initial_s=1.0, max_s=60.0, random_fraction=lambda: 1.0)
        self.delays: list[float] = []

    def next_delay(self) -> float:
        self.delays.append(super().next_delay())
        return self.delays[-1]


class ScriptedSource(Source):
    """Each frames() call plays the next script: frames, exceptions, STALL or STOP."""

    name = "fake"

    def __init__(self, *scripts: list[object], stop: asyncio.Event, clock: FakeClock) -> None:
        super().__init__(stale_after_s=5.0)
        self.scripts = list(scripts)
        self.stop, self.clock = stop, clock
        self.opened_at: list[float] = []

    async def frames(self) -> AsyncIterator[Frame]:
        self.opened_at.append(self.clock())
        for step in self.scripts.pop(0) if self.scripts else [STOP]:
            if isinstance(step, BaseException):
                raise step
            if step in (STALL, STOP):
                if step == STOP:
                    self.stop.set()
                await asyncio.Event().wait()
            yield Frame(str(step), 0)

    def parse(self, raw: str | bytes, *, received_ms: int) -> list[Quote]:
        if raw == "bad":
            raise ParseError("bad frame")
        if raw == "ack":
            return []
        return [Quote(self.name, "BTC/USDT", Decimal(str(raw)), received_ms)]


class Harness:
    """Runs supervise() over a script and records what it reported."""

    def __init__(self, *scripts: list[object]) -> None:
        self.clock = FakeClock()
        self.stop = asyncio.Event()
        self.backoff = RecordingBackoff()
        self.source = ScriptedSource(*scripts, stop=self.stop, clock=self.clock)
        self.prices: list[Decimal] = []
        self.statuses: list[SourceStatus] = []

    async def on_quotes(self, quotes: list[Quote]) -> None:
        self.prices.extend(quote.price for quote in quotes)

    async def on_status(self, status: SourceStatus) -> None:
        self.statuses.append(status)

    @property
    def states(self) -> list[SourceState]:
        return [status.state for status in self.statuses]

    async def run(self) -> Harness:
        runner = supervise(
            self.source,
            on_quotes=self.on_quotes,
            on_status=self.on_status,
            backoff=self.backoff,
            stop=self.stop,
            clock=self.clock,
            sleep=self.clock.sleep,
        )
        await asyncio.wait_for(runner, timeout=5)  # a guard against hangs, not a threshold
        return self


async def test_backoff_doubles_while_connections_fail() -> None:
    errors = [[OSError("refused")] for _ in range(8)]
    harness = await Harness(*errors).run()
    assert harness.backoff.delays == [1, 2, 4, 8, 16, 32, 60, 60]
    gaps = [b - a for a, b in zip(harness.source.opened_at, harness.source.opened_at[1:])]
    assert all(gap >= delay for gap, delay in zip(gaps, harness.backoff.delays))


async def test_backoff_resets_only_after_a_parsed_quote() -> None:
    harness = await Harness(
        [OSError("refused")],
        [OSError("refused")],
        ["ack", STALL],  # connects and acks but never quotes: still backing off
        ["1", OSError("reset")],  # a quote resets the backoff
        [SourceError("exchangeInfo failed")],
    ).run()
    assert harness.backoff.delays == [1, 2, 4, 1, 2]


async def test_silent_connection_keeps_backing_off() -> None:
    harness = await Harness([STALL], [STALL], [STALL]).run()
    assert harness.backoff.delays == [1, 2, 4]
    assert harness.states == [SourceState.STALE]


async def test_watchdog_declares_stale_and_reconnects() -> None:
    stale_before = metric("ratesvc_source_stale_total", source="fake")
    harness = await Harness(["1", "2", STALL], ["3", STOP]).run()
    assert harness.prices == [1, 2, 3]
    assert len(harness.source.opened_at) == 2
    assert harness.source.opened_at[1] >= harness.source.stale_after_s
    assert harness.states == [SourceState.UP, SourceState.STALE, SourceState.UP]
    assert metric("ratesvc_source_stale_total", source="fake") == stale_before + 1


async def test_rate_limited_waits_at_least_retry_after() -> None:
    harness = await Harness([RateLimited("HTTP 429", retry_after_s=30)], ["1", STOP]).run()
    first, second = harness.source.opened_at
    assert second - first >= 30
    assert harness.statuses[0].state == SourceState.DOWN
    assert "rate limited" in harness.statuses[0].reason


async def test_a_held_attempt_sent_nothing_so_it_is_no_new_failure() -> None:
    held_before = metric("ratesvc_source_errors_total", source="fake", kind="held")
    harness = await Harness(
        [OSError("refused")],
        [Held("no request sent: fake is held 30s more", retry_after_s=30)],
        ["1", STOP],
    ).run()
    opened_at = harness.source.opened_at
    assert opened_at[2] - opened_at[1] >= 30  # waited for the gate
    assert harness.backoff.delays == [1]  # the backoff did not grow for it
    assert harness.states == [SourceState.DOWN, SourceState.UP]  # and nothing new was reported
    assert metric("ratesvc_source_errors_total", source="fake", kind="held") == held_before + 1


async def test_rate_limited_without_retry_after_uses_backoff() -> None:
    harness = await Harness([RateLimited("HTTP 429")], [RateLimited("HTTP 429")]).run()
    assert harness.backoff.delays[:2] == [1, 2]


async def test_source_retry_floor_bounds_the_wait_from_below() -> None:
    harness = Harness([OSError("refused")], [OSError("refused")])
    harness.source.retry_floor_s = lambda: 100.0  # type: ignore[method-assign]
    await harness.run()
    opened_at = harness.source.opened_at
    assert opened_at[1] - opened_at[0] >= 100
    assert harness.backoff.delays[:2] == [1, 2]  # the backoff itself still doubles


async def test_bad_frame_is_counted_and_skipped_without_reconnect() -> None:
    skipped_before = metric("ratesvc_source_skipped_frames_total", source="fake")
    harness = await Harness(["1", "bad", "2", STOP]).run()
    assert harness.prices == [1, 2]
    assert len(harness.source.opened_at) == 1
    assert metric("ratesvc_source_skipped_frames_total", source="fake") == skipped_before + 1


async def test_status_sequence_up_down_stale_up() -> None:
    harness = await Harness(["1", OSError("reset by peer")], [STALL], ["2", STOP]).run()
    assert harness.states == [
        SourceState.UP,
        SourceState.DOWN,
        SourceState.STALE,
        SourceState.UP,
    ]
    assert "reset by peer" in harness.statuses[1].reason
    assert all(status.source == "fake" for status in harness.statuses)


async def test_repeated_failures_are_reported_once() -> None:
    harness = await Harness([OSError("a")], [OSError("b")], [SourceError("c")]).run()
    assert harness.states == [SourceState.DOWN]


async def test_stream_that_ends_counts_as_a_failure() -> None:
    harness = await Harness(["1"], ["2", STOP]).run()
    assert harness.states == [SourceState.UP, SourceState.DOWN, SourceState.UP]
    assert harness.statuses[1].reason == "stream ended"


async def test_unexpected_error_is_retried_not_fatal() -> None:
    errors_before = metric("ratesvc_source_errors_total", source="fake", kind="unexpected")
    harness = await Harness([KeyError("bug")], ["1", STOP]).run()
    assert harness.prices == [1]
    assert metric("ratesvc_source_errors_total", source="fake", kind="unexpected") == (
        errors_before + 1
    )


async def test_metrics_follow_quotes_and_reconnects() -> None:
    quotes_before = metric("ratesvc_source_quotes_total", source="fake")
    reconnects_before = metric("ratesvc_source_reconnects_total", source="fake")
    await Harness(["1", "2", OSError("x")], ["3", STOP]).run()
    assert metric("ratesvc_source_quotes_total", source="fake") == quotes_before + 3
    assert metric("ratesvc_source_reconnects_total", source="fake") == reconnects_before + 1
    assert metric("ratesvc_source_last_tick_timestamp_seconds", source="fake") > 0
    assert metric("ratesvc_source_up", source="fake") == 0  # stopped


async def test_stop_interrupts_a_long_backoff_wait() -> None:
    stop = asyncio.Event()
    clock = FakeClock()
    source = ScriptedSource([OSError("refused")], [STALL], stop=stop, clock=clock)
    task = asyncio.create_task(
        supervise(
            source,
            on_quotes=_ignore,
            on_status=_ignore,
            backoff=Backoff(initial_s=3600, max_s=3600, random_fraction=lambda: 1.0),
            stop=stop,
        )
    )
    await asyncio.sleep(0.01)  # let it fail once and start its (real) hour-long wait
    stop.set()
    await asyncio.wait_for(task, timeout=5)
    assert len(source.opened_at) == 1


async def test_stop_closes_an_open_connection() -> None:
    closed = asyncio.Event()
    stop = asyncio.Event()

    class Holding(ScriptedSource):
        async def frames(self) -> AsyncIterator[Frame]:
            try:
                yield Frame("1", 0)
                await asyncio.Event().wait()
            finally:
                closed.set()

    source = Holding(stop=stop, clock=FakeClock())

    async def stop_on_first(_: list[Quote]) -> None:
        stop.set()

    await asyncio.wait_for(
        supervise(source, on_quotes=stop_on_first, on_status=_ignore, backoff=Backoff(), stop=stop),
        timeout=5,
    )
    assert closed.is_set()


async def _ignore(_: object) -> None:
    return None


@pytest.mark.parametrize("seed", range(5))
def test_backoff_full_jitter_stays_within_zero_and_the_cap(seed: int) -> None:
    import random  # pylint: disable=import-outside-toplevel

    backoff = Backoff(initial_s=1, max_s=60, random_fraction=random.Random(seed).random)
    ceilings = [backoff.ceiling_s for _ in range(1)]
    delays = []
    for _ in range(40):
        ceilings.append(backoff.ceiling_s)
        delays.append(backoff.next_delay())
    assert all(0 <= d <= c for d, c in zip(delays, ceilings[1:]))
    assert max(ceilings) == 60
    assert len(set(delays)) > 30  # jittered, not a fixed schedule


def test_backoff_reset_starts_again_from_initial() -> None:
    backoff = Backoff(initial_s=1, max_s=60, random_fraction=lambda: 1.0)
    assert [backoff.next_delay() for _ in range(3)] == [1, 2, 4]
    backoff.reset()
    assert backoff.next_delay() == 1


def test_backoff_rejects_nonsense_bounds() -> None:
    with pytest.raises(ValueError):
        Backoff(initial_s=0)
    with pytest.raises(ValueError):
        Backoff(initial_s=10, max_s=1)
