"""The collector role: supervise every source, derive the directions, publish ticks and status.

Data flows one way: sources -> quote table -> derived ticks -> outbox -> bus (Redis). A value is
published when it changes (at most once per PUBLISH_MIN_INTERVAL_MS per direction, the last change
always following) and re-confirmed every REFRESH_INTERVAL_S while its legs keep advancing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from loguru import logger
from redis.asyncio import Redis

from ratesvc import metrics
from ratesvc.bus import RateBus
from ratesvc.connections import connect_redis
from ratesvc.directions import DerivationConfig, derive_all
from ratesvc.domain import Quote, RateTick, SourceState, SourceStatus, now_ms
from ratesvc.settings import Settings
from ratesvc.sources.base import Source
from ratesvc.sources.supervise import Backoff, supervise
from ratesvc.workers.outbox import Outbox

PRIMARY = "binance"


@dataclass(slots=True)
class _Published:
    value: Decimal
    ts_ms: int
    at_ms: int


class Collector:
    """Turns quotes into published direction ticks; owns the throttle and refresh rules."""

    def __init__(
        self,
        outbox: Outbox,
        config: DerivationConfig,
        *,
        min_interval_ms: int,
        refresh_interval_ms: int,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.outbox = outbox
        self.config = config
        self.min_interval_ms = min_interval_ms
        self.refresh_interval_ms = refresh_interval_ms
        self.clock = clock
        self.quotes: dict[tuple[str, str], Quote] = {}
        self.published: dict[str, _Published] = {}
        self.states: dict[str, SourceState] = {}

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
        if self.states.get(status.source) != status.state:
            logger.info(
                "{source} is {state} ({reason})",
                source=status.source,
                state=status.state,
                reason=status.reason or "-",
            )
        self.states[status.source] = status.state
        self.outbox.put([status])

    def primary_healthy(self) -> bool:
        """True while the primary exchanger delivers data."""
        return self.states.get(PRIMARY) is SourceState.UP

    def flush_due(self) -> list[RateTick]:
        """Publish every derived value that changed (throttled) or needs its periodic refresh."""
        now = self.clock()
        due: list[RateTick] = []
        for tick in derive_all(self.quotes, self.config):
            last = self.published.get(tick.key)
            if last is None:
                due.append(tick)
                continue
            changed = tick.value != last.value
            if not changed and tick.ts_ms <= last.ts_ms:
                continue
            wait_ms = self.min_interval_ms if changed else self.refresh_interval_ms
            if now - last.at_ms >= wait_ms:
                due.append(tick)
        for tick in due:
            self.published[tick.key] = _Published(tick.value, tick.ts_ms, now)
            metrics.TICKS_PUBLISHED.labels(tick.exchanger).inc()
        if due:
            self.outbox.put(due)
        return due

    async def run_ticker(self, stop: asyncio.Event, *, period_s: float = 0.05) -> None:
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


async def _follow_primary(
    collector: Collector, sources: Sequence[Source], stop: asyncio.Event
) -> None:
    """Poll secondaries at their active cadence while the primary is not healthy."""
    has_primary = any(s.name == PRIMARY for s in sources)
    active: bool | None = None
    while not stop.is_set():
        want = not (has_primary and collector.primary_healthy())
        if want != active:
            for source in sources:
                if source.name != PRIMARY:
                    source.set_active(want)
            active = want
        try:
            await asyncio.wait_for(stop.wait(), timeout=0.2)
        except TimeoutError:
            pass


async def run_collector(
    settings: Settings,
    *,
    stop: asyncio.Event,
    sources: Sequence[Source],
    redis: Redis | None = None,
) -> None:
    """Run the collector role until `stop` is set."""
    if not sources:
        raise ValueError("the collector needs at least one enabled source (SOURCES)")
    owned = redis is None
    redis = redis or await connect_redis(str(settings.redis_url))
    bus = RateBus(redis, maxlen=settings.stream_maxlen)
    outbox = Outbox(bus.publish)
    collector = Collector(
        outbox,
        derivation_config(settings, sources),
        min_interval_ms=settings.publish_min_interval_ms,
        refresh_interval_ms=int(settings.refresh_interval_s * 1000),
    )
    logger.info("collector started with sources {names}", names=[s.name for s in sources])
    source_stop = asyncio.Event()
    tasks = [
        asyncio.create_task(
            supervise(
                source,
                on_quotes=collector.on_quotes,
                on_status=collector.on_status,
                # each source backs off on its own failures only
                backoff=Backoff(initial_s=settings.backoff_initial_s, max_s=settings.backoff_max_s),
                stop=source_stop,
            )
        )
        for source in sources
    ]
    tasks.append(asyncio.create_task(collector.run_ticker(source_stop)))
    tasks.append(asyncio.create_task(_follow_primary(collector, sources, source_stop)))
    outbox_task = asyncio.create_task(outbox.run(stop))
    try:
        await stop.wait()
    finally:
        source_stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.wait_for(outbox_task, timeout=10)
        if owned:
            await redis.aclose()
        logger.info("collector stopped")
