"""Collector: publish on change (throttled; the last change follows), refresh while legs advance."""

from decimal import Decimal

from ratesvc.bus import LeaseToken
from ratesvc.directions import DerivationConfig
from ratesvc.domain import Quote, RateTick, SourceState, SourceStatus
from ratesvc.workers.collector import Collector
from ratesvc.workers.outbox import Mode, Outbox

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


async def test_a_change_just_after_a_refresh_is_not_held_back():
    collector, outbox, clock = make(min_interval_ms=250, refresh_interval_ms=2_000)
    await collector.on_quotes([btc("65000", T0)])
    clock.now = T0 + 2_000
    await collector.on_quotes([btc("65000", T0 + 2_000)])  # refresh: same value, newer legs
    clock.now = T0 + 2_010
    await collector.on_quotes([btc("65100", T0 + 2_010)])  # the price moves 10 ms later
    published = outbox.ticks("binance:BTC-USD")
    assert [(t.value, t.ts_ms) for t in published] == [
        (Decimal(65000), T0),
        (Decimal(65000), T0 + 2_000),
        (Decimal(65100), T0 + 2_010),
    ]
    clock.now = T0 + 2_020  # but changes are still throttled against each other
    await collector.on_quotes([btc("65200", T0 + 2_020)])
    assert len(outbox.ticks("binance:BTC-USD")) == 3
    clock.now = T0 + 2_260
    collector.flush_due()
    assert outbox.ticks("binance:BTC-USD")[-1].value == Decimal(65200)


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


# ---------------------------------------------------------------- since_ms: the hold-down's start
def since(outbox: FakeOutbox, key: str = "binance:BTC-USD") -> list[int]:
    return [t.since_ms for t in outbox.ticks(key)]


async def test_since_is_zero_for_the_first_value_and_kept_while_it_stays_fresh():
    collector, outbox, clock = make(min_interval_ms=0)
    await collector.on_quotes([btc("65000", T0)])
    clock.now = T0 + 5_000
    await collector.on_quotes([btc("65100", T0 + 5_000)])
    assert since(outbox) == [0, 0]


async def test_a_down_status_restarts_since_at_the_next_value():
    collector, outbox, clock = make(min_interval_ms=0)
    await collector.on_quotes([btc("65000", T0)])
    await collector.on_status(SourceStatus("binance", SourceState.DOWN, T0 + 100))
    await collector.on_status(SourceStatus("binance", SourceState.UP, T0 + 900))
    clock.now = T0 + 1_000
    await collector.on_quotes([btc("65100", T0 + 1_000)])
    clock.now = T0 + 2_000
    await collector.on_quotes([btc("65200", T0 + 2_000)])
    assert since(outbox) == [0, T0 + 1_000, T0 + 1_000]


async def test_statuses_carry_the_time_of_the_last_outage_report():
    collector, outbox, _ = make()
    for state, ts_ms in (
        (SourceState.UP, T0),
        (SourceState.DOWN, T0 + 10),
        (SourceState.UP, T0 + 20),
    ):
        await collector.on_status(SourceStatus("binance", state, ts_ms))
    assert [e.blocked_ms for e in outbox.events] == [0, T0 + 10, T0 + 10]


async def test_a_value_that_went_stale_restarts_since_even_without_a_status():
    collector, outbox, clock = make(min_interval_ms=0)  # binance legs live 10 s
    await collector.on_quotes([btc("65000", T0)])
    clock.now = T0 + 10_001
    await collector.on_quotes([btc("65100", T0 + 10_001)])
    assert since(outbox) == [0, T0 + 10_001]


async def test_a_cross_restarts_since_when_its_fx_leg_went_stale():
    collector, outbox, clock = make(min_interval_ms=0)  # the FX leg lives 900 s (coingecko)
    tether = Quote("coingecko", "USDT/RUB", Decimal("95.5"), T0)
    await collector.on_quotes([tether, btc("65000", T0)])
    for step in range(1, 101):  # binance keeps moving every 9.5 s for 950 s
        clock.now = T0 + step * 9_500
        await collector.on_quotes([btc(str(65000 + step), clock.now)])
    clock.now += 1
    await collector.on_quotes([Quote("coingecko", "USDT/RUB", Decimal("96"), clock.now)])
    rub = since(outbox, "binance:BTC-RUB")
    assert rub[0] == 0 and rub[-1] == clock.now  # the FX leg had aged out meanwhile
    assert set(since(outbox)) == {0}  # BTC-USD never went stale


# ---------------------------------------------------------------- the lease listener
class StaticFence:
    def __init__(self) -> None:
        self.current: LeaseToken | None = None

    def token(self) -> LeaseToken | None:
        return self.current

    def fenced(self, token: LeaseToken, reason: str) -> None:
        del token, reason


def make_fenced():
    """A collector over a real (not running) fenced Outbox: inspect what it queued."""

    async def never(events, *, fence):  # pragma: no cover - the outbox is not run here
        raise AssertionError((events, fence))

    outbox, clock = Outbox(never), Clock()
    outbox.fence_with(StaticFence())
    config = DerivationConfig(max_age_ms={"binance": 10_000, "coingecko": 900_000})
    collector = Collector(
        outbox, config, min_interval_ms=250, refresh_interval_ms=2_000, clock=clock
    )
    return collector, outbox, clock


def queued(outbox: Outbox) -> list:
    return list(outbox._queue)


async def test_a_standby_derives_but_queues_nothing():
    collector, outbox, _ = make_fenced()
    await collector.on_status(SourceStatus("binance", SourceState.UP, T0))
    await collector.on_quotes([btc("65000", T0)])
    assert len(outbox) == 0 and outbox.mode is Mode.DISCARDING
    assert collector.primary_healthy() and collector.published  # warm: derived all along


async def test_a_takeover_publishes_the_current_statuses_and_values_at_once():
    collector, outbox, clock = make_fenced()
    await collector.on_status(SourceStatus("binance", SourceState.UP, T0))
    await collector.on_quotes([btc("65000", T0)])
    clock.now += 10
    await collector.on_quotes([btc("65100", T0 + 10)])  # throttled: not yet "published"
    collector.on_gain(LeaseToken("bravo", 2), continues=False)
    events = queued(outbox)
    assert outbox.mode is Mode.PUBLISHING
    assert events[0] == SourceStatus("binance", SourceState.UP, T0)
    values = {e.key: e.value for e in events if isinstance(e, RateTick)}
    assert values["binance:BTC-USD"] == Decimal(65100)
    assert set(values) >= {"binance:BTC-USD", "binance:USDTTRC-USD", "binance:USDTERC-USD"}
    collector.flush_due()  # the snapshot counts as published: nothing due again
    assert len(queued(outbox)) == len(events)


async def test_a_loss_holds_and_a_continued_term_keeps_the_backlog_without_a_snapshot():
    collector, outbox, clock = make_fenced()
    collector.on_gain(LeaseToken("solo", 1), continues=False)
    await collector.on_quotes([btc("65000", T0)])
    collector.on_loss(LeaseToken("solo", 1), "redis unreachable")
    assert outbox.mode is Mode.HOLDING
    clock.now += 300
    await collector.on_quotes([btc("65100", T0 + 300)])
    backlog = queued(outbox)
    collector.on_gain(LeaseToken("solo", 2), continues=True)
    assert queued(outbox) == backlog and outbox.mode is Mode.PUBLISHING
    assert [t.value for t in backlog if isinstance(t, RateTick) and t.key == "binance:BTC-USD"] == [
        Decimal(65000),
        Decimal(65100),
    ]


async def test_being_superseded_drops_the_backlog_and_a_later_term_starts_from_fresh_values():
    collector, outbox, clock = make_fenced()
    collector.on_gain(LeaseToken("alpha", 1), continues=False)
    await collector.on_quotes([btc("65000", T0)])
    collector.on_loss(LeaseToken("alpha", 1), "paused")
    clock.now += 300
    await collector.on_quotes([btc("65100", T0 + 300)])
    collector.on_superseded("bravo:2")
    assert len(outbox) == 0 and outbox.mode is Mode.DISCARDING
    clock.now += 300
    await collector.on_quotes([btc("65200", T0 + 600)])
    collector.on_gain(LeaseToken("alpha", 3), continues=False)
    btc_values = [
        e.value for e in queued(outbox) if isinstance(e, RateTick) and e.key == "binance:BTC-USD"
    ]
    assert btc_values == [Decimal(65200)]
