"""The collector role: supervise every source, derive the directions, publish ticks and status.

Data flows one way: sources -> quote table -> derived ticks -> outbox -> bus (Redis). A value is
published when it changes (at most once per PUBLISH_MIN_INTERVAL_MS per direction, the last change
always following) and re-confirmed every REFRESH_INTERVAL_S while its legs keep advancing.

Hot standby: every collector supervises its sources and derives, but only the holder of the Redis
lease (workers/lease.py) publishes, fenced by its term (bus/stream.py). What happens on the way:
- standby (another process holds the lease): nothing is queued;
- lease lost (renewal refused or impossible, fenced publish refused): publishing stops at once,
  events keep queuing (bounded);
- lease regained with no other holder in between (same term, or the very next one: a lone
  collector after a Redis outage): the queue is flushed in order, history is complete;
- otherwise (first term of this process, or another process published meanwhile): the queue is
  dropped, since those values are stale and would interleave with the other publisher's, and the
  current state (every derivable value, every source status) is published at once instead.
Metered calls (CoinGecko) follow the same rule (workers/roles.py): only the leader spends them; a
standby reads the leader's answers from the shared ledger, so N collectors spend what one does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, Protocol

from loguru import logger
from redis.asyncio import Redis

from ratesvc.bus import BanBoard, CallLedger, Event, LeaseToken, RateBus
from ratesvc.connections import connect_redis
from ratesvc.directions import DerivationConfig, derive_all
from ratesvc.domain import (
    BLOCKING_STATES,
    Quote,
    RateTick,
    SourceState,
    SourceStatus,
    is_fresh,
    now_ms,
)
from ratesvc.settings import Settings, reveal
from ratesvc.sources.base import Source
from ratesvc.sources.supervise import Backoff, supervise
from ratesvc.timing import REAL_TIME, Timing
from ratesvc.workers.lease import Leadership, LeaseStore, default_holder
from ratesvc.workers.outbox import Outbox
from ratesvc.workers.roles import PRIMARY, SourceRoles

TICKER_PERIOD_S = 0.05  # trailing edge of the publish throttle: well under its 250 ms default


@dataclass(slots=True)
class _Published:
    tick: RateTick  # the last one published for this direction (with its since_ms)
    at_ms: int  # when it was published (change or refresh)
    changed_at_ms: int  # when its value last changed in a publication


class Collector:
    """Turns quotes into published direction ticks; owns the throttle and refresh rules.

    Also the lease listener (see the module docstring for what each change does to the outbox).
    """

    def __init__(
        self,
        outbox: Outbox,
        config: DerivationConfig,
        *,
        min_interval_ms: int,
        refresh_interval_ms: int,
        clock: Callable[[], int] = now_ms,
        roles: SourceRoles | None = None,
    ) -> None:
        self.outbox = outbox
        self.roles = roles or SourceRoles([])
        self.config = config
        self.min_interval_ms = min_interval_ms
        self.refresh_interval_ms = refresh_interval_ms
        self.clock = clock
        self.quotes: dict[tuple[str, str], Quote] = {}
        self.published: dict[str, _Published] = {}
        self.statuses: dict[str, SourceStatus] = {}

    async def on_quotes(self, quotes: Sequence[Quote]) -> None:
        """Fold new quotes into the table (newer wins) and publish what became due."""
        for quote in quotes:
            key = (quote.source, quote.symbol)
            old = self.quotes.get(key)
            if old is None or quote.ts_ms >= old.ts_ms:
                self.quotes[key] = quote
        self.flush_due()

    async def on_status(self, status: SourceStatus) -> None:
        """Publish a source's state change."""
        old = self.statuses.get(status.source)
        if old is None or old.state != status.state:
            logger.info(
                "{source} is {state} ({reason})",
                source=status.source,
                state=status.state,
                reason=status.reason or "-",
            )
        previous = old.blocked_ms if old is not None else 0
        blocked_ms = status.ts_ms if status.state in BLOCKING_STATES else previous
        status = replace(status, blocked_ms=blocked_ms)
        self.statuses[status.source] = status
        self.roles.on_status(status)
        self.outbox.put([status])

    def primary_healthy(self) -> bool:
        """True while the primary exchanger delivers data."""
        status = self.statuses.get(PRIMARY)
        return status is not None and status.state is SourceState.UP

    def snapshot(self) -> list[Event]:
        """The current state: every source's last status, then every derivable value."""
        now = self.clock()
        ticks = [self._stamped(tick, now) for tick in derive_all(self.quotes, self.config)]
        for tick in ticks:
            self.published[tick.key] = _Published(tick, now, now)
        return [*self.statuses.values(), *ticks]

    def _stamped(self, tick: RateTick, now: int) -> RateTick:
        """`tick` with its since_ms: carried over while the value stayed fresh, else `now`.

        "Stayed fresh" is the API's own rule (domain.is_fresh) applied to the last published value
        at this moment; statuses carry the last DOWN/STALE time (`blocked_ms`), so an outage
        counts as a break even after an UP. That is what every worker saw, so every worker can take
        the hold-down's start from the tick.
        """
        last = self.published.get(tick.key)
        if last is None:
            since = 0  # the first value this process sees: fresh for as long as anyone can tell
        elif is_fresh(last.tick, self.statuses.get(tick.exchanger), now):
            since = last.tick.since_ms
        else:
            since = now
        return replace(tick, since_ms=since)

    # ---------------------------------------------------------------- lease listener
    def on_gain(self, token: LeaseToken, *, continues: bool) -> None:
        """Publishing under `token`: flush a continued backlog, or start from the current state."""
        self.roles.on_gain()
        if continues:
            self.outbox.resume()
            return
        self.outbox.drop()  # stale, and another publisher's entries may lie between them and now
        self.outbox.resume()  # before put: a discarding outbox would swallow the snapshot
        self.outbox.put(self.snapshot())
        logger.info("publishing the current state under term {term}", term=token.term)

    def on_loss(self, token: LeaseToken, reason: str) -> None:
        """Stop publishing at once; keep queuing in case the next term continues this one."""
        del token, reason  # Leadership logged them
        self.roles.on_loss()
        self.outbox.hold()

    def on_superseded(self, holder: str) -> None:
        """Another collector publishes: drop the backlog, queue nothing while standing by."""
        del holder
        self.roles.on_superseded()
        self.outbox.discard()

    def flush_due(self) -> list[RateTick]:
        """Publish every derived value that changed (throttled) or needs its periodic refresh.

        A change waits min_interval_ms after the previous *change* only: a refresh (the same
        value re-published with newer legs) never holds a new value back.
        """
        now = self.clock()
        due: list[RateTick] = []
        for tick in derive_all(self.quotes, self.config):
            last = self.published.get(tick.key)
            if last is None:
                due.append(tick)
            elif tick.value != last.tick.value:
                if now - last.changed_at_ms >= self.min_interval_ms:
                    due.append(tick)
            elif tick.ts_ms > last.tick.ts_ms and now - last.at_ms >= self.refresh_interval_ms:
                due.append(tick)
        due = [self._stamped(tick, now) for tick in due]
        for tick in due:
            last = self.published.get(tick.key)
            same = last is not None and last.tick.value == tick.value
            changed_at_ms = last.changed_at_ms if last is not None and same else now
            self.published[tick.key] = _Published(tick, now, changed_at_ms)
        if due:
            self.outbox.put(due)
        return due

    async def run_ticker(self, stop: asyncio.Event, *, period_s: float = TICKER_PERIOD_S) -> None:
        """Trailing edge of the throttle and periodic refresh, independent of quote arrival."""
        while not stop.is_set():
            self.flush_due()
            try:
                await asyncio.wait_for(stop.wait(), timeout=period_s)
            except TimeoutError:
                pass


def derivation_config(settings: Settings, sources: Sequence[Source]) -> DerivationConfig:
    """Leg freshness limits from each source's watchdog, FX and adjustments from settings."""
    return DerivationConfig(
        max_age_ms={s.name: int(s.stale_after_s * 1000) for s in sources},
        fx_source=settings.fx_usdt_rub_source,
        fx_max_age_ms=int(settings.fx_stale_after_s * 1000),
        usdc_correction=any(getattr(s, "usdc_correction", False) for s in sources),
        adjust_pct={
            "USDTTRC": Decimal(str(settings.usdttrc_adjust_pct)),
            "USDTERC": Decimal(str(settings.usdterc_adjust_pct)),
        },
    )


@dataclass(slots=True)
class CollectorParts:
    """A collector wired to its outbox and lease, ready to run (run_collector, tests)."""

    collector: Collector
    outbox: Outbox
    leadership: Leadership


class Bus(LeaseStore, Protocol):
    """What the collector needs of the bus: the lease and the fenced publish (RateBus)."""

    async def publish(self, events: Sequence[Event], *, fence: LeaseToken | None = None) -> Any:
        """Write `events`, refused (FencedOut) unless the lease still holds `fence`."""


def assemble(
    settings: Settings, bus: Bus, sources: Sequence[Source], *, timing: Timing = REAL_TIME
) -> CollectorParts:
    """Build the collector, its fenced outbox and its leadership from settings.

    The secondary sources are told at once that this collector stands by (no metered call)
    until it gains the lease.
    """
    outbox = Outbox(bus.publish)
    collector = Collector(
        outbox,
        derivation_config(settings, sources),
        min_interval_ms=settings.publish_min_interval_ms,
        refresh_interval_ms=int(settings.refresh_interval_s * 1000),
        clock=timing.wall_ms,
        roles=SourceRoles(sources),
    )
    leadership = Leadership(
        bus,
        settings.collector_id or default_holder(),
        lease_ms=settings.collector_lease_ms,
        listener=collector,
        clock=timing.monotonic,
        sleep=timing.sleep,
    )
    outbox.fence_with(leadership)
    return CollectorParts(collector, outbox, leadership)


def share_through_redis(redis: Redis, sources: Sequence[Source]) -> None:
    """What every collector of the deployment shares: the metered calls' ledger (budgets are per
    account: one count, one schedule, one answer) and the venues' bans (per IP)."""
    ledger, bans = CallLedger(redis), BanBoard(redis)
    for source in sources:
        source.use_ledger(ledger)
        source.gate.share_with(bans)


def _source_tasks(  # pylint: disable=too-many-arguments,too-many-positional-arguments
    settings: Settings,
    collector: Collector,
    sources: Sequence[Source],
    stop: asyncio.Event,
    timing: Timing,
    ticker_period_s: float,
) -> list[asyncio.Task[None]]:
    """One supervised lane per source, and the collector's ticker."""
    tasks = [
        asyncio.create_task(
            supervise(
                source,
                on_quotes=collector.on_quotes,
                on_status=collector.on_status,
                # each source backs off on its own failures only
                backoff=Backoff(initial_s=settings.backoff_initial_s, max_s=settings.backoff_max_s),
                stop=stop,
                clock=timing.monotonic,
                sleep=timing.sleep,
                wall_clock=timing.wall,
            )
        )
        for source in sources
    ]
    tasks.append(asyncio.create_task(collector.run_ticker(stop, period_s=ticker_period_s)))
    return tasks


async def run_collector(
    settings: Settings,
    *,
    stop: asyncio.Event,
    sources: Sequence[Source],
    redis: Redis | None = None,
) -> None:
    """Run the collector role until `stop` is set (publishing only while it holds the lease)."""
    if not sources:
        raise ValueError("the collector needs at least one enabled source (SOURCES)")
    owned = redis is None
    if redis is None:
        url = reveal(settings.redis_url)
        if url is None:
            raise ValueError("the collector needs REDIS_URL")
        redis = await connect_redis(url, sentinel_password=reveal(settings.redis_sentinel_password))
    try:
        share_through_redis(redis, sources)
        await collect(settings, RateBus(redis, maxlen=settings.stream_maxlen), sources, stop=stop)
    finally:
        if owned:
            await redis.aclose()


async def collect(  # pylint: disable=too-many-arguments
    settings: Settings,
    bus: Bus,
    sources: Sequence[Source],
    *,
    stop: asyncio.Event,
    timing: Timing = REAL_TIME,
    ticker_period_s: float = TICKER_PERIOD_S,
) -> None:
    """The collector's tasks over `bus` until `stop` is set: sources, ticker, lease, outbox.

    `timing` is the clocks it runs on and `ticker_period_s` how often throttled changes and
    refreshes are checked between quotes; a simulation (bench/budget_month.py) runs this same
    code on virtual clocks over an in-memory bus.
    """
    parts = assemble(settings, bus, sources, timing=timing)
    collector, leadership = parts.collector, parts.leadership
    logger.info(
        "collector {holder} started with sources {names}",
        holder=leadership.holder,
        names=[s.name for s in sources],
    )
    source_stop, outbox_stop, lease_stop = asyncio.Event(), asyncio.Event(), asyncio.Event()
    tasks = _source_tasks(settings, collector, sources, source_stop, timing, ticker_period_s)
    lease_task = asyncio.create_task(leadership.run(lease_stop))
    outbox_task = asyncio.create_task(parts.outbox.run(outbox_stop))
    try:
        await stop.wait()
    finally:
        # sources first, then flush what they produced while still leading, then hand over
        source_stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        outbox_stop.set()
        try:
            await asyncio.wait_for(outbox_task, timeout=10)
        finally:
            lease_stop.set()
            await asyncio.gather(lease_task, return_exceptions=True)
            await leadership.release()
            logger.info("collector stopped")
