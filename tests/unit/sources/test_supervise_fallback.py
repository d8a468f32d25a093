"""supervise() switching to a source's fallback transport and back, with scripted fake sources.

Scripts are gated by events the test opens, so the order of events is fixed and no assertion
depends on timing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from decimal import Decimal

from ratesvc.domain import Quote, SourceState, SourceStatus, Transport
from ratesvc.sources.backoff import Backoff
from ratesvc.sources.base import Frame, Source
from ratesvc.sources.supervise import supervise
from tests.unit.sources.source_helpers import metric

HOLD = "<hold>"  # keep the connection open and silent


class Scripted(Source):
    """Each frames() call plays the next script of prices, exceptions, events to wait for, HOLD."""

    name = "fake"

    def __init__(
        self, *scripts: list[object], backup: Source | None = None, events: list[str] | None = None
    ) -> None:
        super().__init__(stale_after_s=60.0)
        self.scripts = list(scripts)
        self.backup = backup
        self.events = [] if events is None else events  # "<transport> open", shared by a pair
        self.opened = 0
        self.closed = 0

    async def frames(self) -> AsyncIterator[Frame]:
        self.opened += 1
        self.events.append(f"{self.transport} open")
        try:
            for step in self.scripts.pop(0) if self.scripts else [HOLD]:
                if isinstance(step, BaseException):
                    raise step
                if isinstance(step, asyncio.Event):
                    await step.wait()
                    continue
                if step == HOLD:
                    await asyncio.Event().wait()
                yield Frame(str(step), 0)
        finally:
            self.closed += 1

    def parse(self, raw: str | bytes, *, received_ms: int) -> list[Quote]:
        return [Quote(self.name, "BTC/USDT", Decimal(str(raw)), received_ms, self.transport)]

    def fallback(self) -> Source | None:
        return self.backup

    def refused(self, error: BaseException) -> bool:
        return isinstance(error, ConnectionRefusedError)


class ScriptedRest(Scripted):
    transport = Transport.REST


class Run:
    """supervise() over `primary` until `done(prices)`; records prices and statuses."""

    def __init__(self, primary: Scripted) -> None:
        self.primary = primary
        self.prices: list[Decimal] = []
        self.statuses: list[SourceStatus] = []
        self.stop = asyncio.Event()
        self.on_price: Callable[[Decimal], None] = lambda _: None

    async def on_quotes(self, quotes: list[Quote]) -> None:
        for quote in quotes:
            self.prices.append(quote.price)
            self.on_price(quote.price)

    async def on_status(self, status: SourceStatus) -> None:
        self.statuses.append(status)

    @property
    def states(self) -> list[tuple[SourceState, Transport]]:
        return [(s.state, s.transport) for s in self.statuses]

    async def until(self, done: Callable[[Run], bool]) -> Run:
        def check(_: Decimal) -> None:
            if done(self):
                self.stop.set()

        self.on_price = check
        runner = supervise(
            self.primary,
            on_quotes=self.on_quotes,
            on_status=self.on_status,
            backoff=Backoff(initial_s=0.001, max_s=0.002),
            stop=self.stop,
        )
        await asyncio.wait_for(runner, timeout=5)  # a guard against hangs, not a threshold
        return self


def transport_gauge(transport: str) -> float:
    return metric("ratesvc_source_transport", source="fake", transport=transport)


async def test_refusal_switches_to_the_fallback_at_once_and_back_on_the_primary_quote() -> None:
    primary_back = asyncio.Event()
    rest = ScriptedRest(["10", "11", primary_back, "12", HOLD])
    ws = Scripted([ConnectionRefusedError()], [primary_back, "1", HOLD], backup=rest)
    run = Run(ws)

    def done(r: Run) -> bool:
        if r.prices[-1] == 11:
            assert transport_gauge("rest") == 1 and transport_gauge("ws") == 0
            primary_back.set()
        return r.prices[-1] == 1

    await run.until(done)
    assert run.prices[:2] == [10, 11] and run.prices[-1] == 1
    # the fallback bridged the refusal within the grace: never reported DOWN
    assert run.states == [(SourceState.UP, Transport.REST), (SourceState.UP, Transport.WS)]
    assert rest.opened == rest.closed == 1  # the fallback stopped when the primary came back
    assert transport_gauge("ws") == 0 and transport_gauge("rest") == 0  # stopped: neither


async def test_failures_without_refusal_switch_after_the_threshold() -> None:
    events: list[str] = []
    rest = ScriptedRest(["10", HOLD], events=events)
    ws = Scripted([OSError("a")], [OSError("b")], [OSError("c")], backup=rest, events=events)
    ws.fallback_after_failures = 3
    run = await Run(ws).until(lambda r: r.prices == [10])
    assert events[:4] == ["ws open", "ws open", "ws open", "rest open"]
    assert run.states == [(SourceState.UP, Transport.REST)]


async def test_a_primary_that_delivered_and_dropped_once_is_not_replaced() -> None:
    rest = ScriptedRest(["10", HOLD])
    ws = Scripted(["1", OSError("reset")], ["2", HOLD], backup=rest)
    run = await Run(ws).until(lambda r: r.prices[-1] == 2)
    assert rest.opened == 0
    # the reconnect delivered within the grace: the drop is not reported
    assert run.states == [(SourceState.UP, Transport.WS)]


async def test_primary_failures_are_not_reported_while_the_fallback_serves() -> None:
    probed = asyncio.Event()
    rest = ScriptedRest(["10", probed, "11", HOLD])
    ws = Scripted(
        [ConnectionRefusedError()],
        [OSError("still blocked")],
        [ConnectionRefusedError()],
        [OSError("still blocked")],
        backup=rest,
    )
    errors_before = metric("ratesvc_source_errors_total", source="fake", kind="connection")
    opener = asyncio.create_task(_open_when(lambda: ws.opened >= 5, probed))
    run = await Run(ws).until(lambda r: r.prices[-1] == 11)
    await opener
    assert run.states == [(SourceState.UP, Transport.REST)]
    assert metric("ratesvc_source_errors_total", source="fake", kind="connection") == (
        errors_before + 4
    )


async def test_a_failing_fallback_reports_with_its_own_transport() -> None:
    rest = ScriptedRest([OSError("rest down")], ["10", HOLD])
    ws = Scripted([ConnectionRefusedError()], backup=rest)
    run = await Run(ws).until(lambda r: r.prices == [10])
    assert run.states == [(SourceState.DOWN, Transport.REST), (SourceState.UP, Transport.REST)]
    assert "rest down" in run.statuses[0].reason


async def test_a_primary_failure_nothing_bridges_is_reported_after_the_grace() -> None:
    rest = ScriptedRest([HOLD])  # connects, never quotes
    ws = Scripted([ConnectionRefusedError()], [HOLD], backup=rest)
    statuses: list[SourceStatus] = []
    stop = asyncio.Event()

    async def on_status(status: SourceStatus) -> None:
        statuses.append(status)
        stop.set()

    async def on_quotes(_: list[Quote]) -> None:
        raise AssertionError("no quote expected")

    runner = supervise(
        ws, on_quotes=on_quotes, on_status=on_status, backoff=Backoff(initial_s=0.001), stop=stop
    )
    await asyncio.wait_for(runner, timeout=10)  # a guard against hangs, not a threshold
    assert [(s.state, s.transport) for s in statuses] == [(SourceState.DOWN, Transport.WS)]


async def _open_when(condition: Callable[[], bool], gate: asyncio.Event) -> None:
    while not condition():
        await asyncio.sleep(0.001)
    gate.set()


async def test_stop_also_stops_the_fallback() -> None:
    rest = ScriptedRest(["10", HOLD])
    ws = Scripted([ConnectionRefusedError()], backup=rest)
    await Run(ws).until(lambda r: r.prices == [10])
    assert rest.opened == rest.closed == 1
    assert transport_gauge("rest") == 0
