"""Collector: publish on change (throttled; the last change follows), refresh while legs advance."""

from decimal import Decimal

from ratesvc.directions import DerivationConfig
from ratesvc.domain import Quote, RateTick, SourceState, SourceStatus
from ratesvc.workers.collector import Collector

T0 = 1_700_000_000_000


class FakeOutbox:
    def __init__(self) -> None:
        self.events: list = []

    def put(self, events) -> None:
        self.events.extend(events)

    def ticks(self, key: str) -> list[RateTick]:
        return [e for e in self.events if isinstance(e, RateTick) and e.key == key]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


def make(min_interval_ms: int = 250, refresh_interval_ms: int = 2_000):
    outbox, clock = FakeOutbox(), Clock()
    config = DerivationConfig(max_age_ms={"binance": 10_000, "coingecko": 900_000})
    collector = Collector(
        outbox,
        config,
        min_interval_ms=min_interval_ms,
        refresh_interval_ms=refresh_interval_ms,
        clock=clock,
    )
    return collector, outbox, clock


def btc(price: str, ts_ms: int) -> Quote:
    return Quote("binance", "BTC/USDT", Decimal(price), ts_ms)


async def test_first_value_is_published_at_once():
    collector, outbox, _ = make()
    await collector.on_quotes([btc("65000", T0)])
    assert [t.value for t in outbox.ticks("binance:BTC-USD")] == [Decimal(65000)]


async def test_changes_within_the_interval_are_coalesced_and_the_last_one_follows():
    collector, outbox, clock = make(min_interval_ms=250)
    await collector.on_quotes([btc("65000", T0)])
    clock.now += 10
    await collector.on_quotes([btc("65001", T0 + 10)])
    clock.now += 10
    await collector.on_quotes([btc("65002", T0 + 20)])
    assert [t.value for t in outbox.ticks("binance:BTC-USD")] == [Decimal(65000)]
    clock.now = T0 + 250
    collector.flush_due()  # the ticker's trailing edge
    assert [t.value for t in outbox.ticks("binance:BTC-USD")] == [Decimal(65000), Decimal(65002)]


async def test_unchanged_value_is_refreshed_only_while_its_legs_advance():
    collector, outbox, clock = make(refresh_interval_ms=2_000)
    await collector.on_quotes([btc("65000", T0)])
    clock.now = T0 + 1_000
    await collector.on_quotes([btc("65000", T0 + 1_000)])
    assert len(outbox.ticks("binance:BTC-USD")) == 1
    clock.now = T0 + 2_000
    await collector.on_quotes([btc("65000", T0 + 2_000)])
    refreshed = outbox.ticks("binance:BTC-USD")
    assert [t.ts_ms for t in refreshed] == [T0, T0 + 2_000]
    assert refreshed[0].tick_id != refreshed[1].tick_id
    clock.now = T0 + 10_000  # the feed went silent: nothing new to confirm
    collector.flush_due()
    assert len(outbox.ticks("binance:BTC-USD")) == 2


async def test_an_older_quote_never_replaces_a_newer_one():
    collector, outbox, clock = make(min_interval_ms=0)
    await collector.on_quotes([btc("65000", T0 + 100)])
    clock.now += 1
    await collector.on_quotes([btc("1", T0)])
    assert [t.value for t in outbox.ticks("binance:BTC-USD")] == [Decimal(65000)]


async def test_status_events_are_published_and_track_primary_health():
    collector, outbox, _ = make()
    assert not collector.primary_healthy()
    up = SourceStatus("binance", SourceState.UP, T0)
    await collector.on_status(up)
    assert collector.primary_healthy()
    await collector.on_status(SourceStatus("binance", SourceState.DOWN, T0 + 1, reason="closed"))
    assert not collector.primary_healthy()
    assert [e.state for e in outbox.events if isinstance(e, SourceStatus)] == [
        SourceState.UP,
        SourceState.DOWN,
    ]
