"""The persister role: stream ratesvc:ticks -> Postgres, at-least-once and idempotent.

Reads the persister consumer group, commits ticks and source events in one transaction and XACKs
only after the commit; entries a dead consumer left pending are claimed; poison goes to the dead
letter. Postgres or Redis down: back off and retry the same batch (it stays pending, nothing is
lost). Beside it: trimming the stream up to what is stored (never past it), retention pruning,
and deleting the group consumers of processes gone for good.
"""

from __future__ import annotations

import asyncio
import time

from loguru import logger
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ratesvc.bus import Entry, RateBus
from ratesvc.connections import connect_redis
from ratesvc.domain import now_ms
from ratesvc.errors import describe
from ratesvc.metrics import (
    PERSISTER_CLAIMED,
    PERSISTER_ERRORS,
    PERSISTER_PRUNED,
    REDIS_MAXMEMORY,
    REDIS_USED_MEMORY,
    STREAM_LENGTH,
    STREAM_MAX_LENGTH,
    STREAM_PENDING,
    STREAM_TRIMMED,
)
from ratesvc.settings import Settings, reveal
from ratesvc.store.db import DB_ERRORS, open_db
from ratesvc.store.repository import RateRepository
from ratesvc.workers.persister_batch import Batch, commit, dead_letter, sort_entries
from ratesvc.workers.persister_support import (
    CONSUMER_IDLE_DROP_MS,
    Backoff,
    PersisterOptions,
    default_consumer,
    sleep_unless,
)

__all__ = ["Persister", "PersisterOptions", "run_persister"]

DAY_MS = 86_400_000


async def run_persister(
    settings: Settings,
    *,
    stop: asyncio.Event,
    redis: Redis | None = None,
    consumer: str | None = None,
) -> None:
    """Run the persister until `stop` is set (the current batch is finished first).

    `redis` (decode_responses=True) defaults to a client for REDIS_URL, closed on exit; the
    consumer name defaults to ``<hostname>-<pid>``.
    """
    database_url, redis_url = reveal(settings.database_url), reveal(settings.redis_url)
    if database_url is None:
        raise ValueError("the persister needs DATABASE_URL")
    own_redis = redis is None
    if redis is None:
        if redis_url is None:
            raise ValueError("the persister needs REDIS_URL")
        redis = await connect_redis(
            redis_url, sentinel_password=reveal(settings.redis_sentinel_password)
        )
    try:
        async with open_db(database_url) as db:
            bus = RateBus(redis, maxlen=settings.stream_maxlen)
            persister = Persister(
                bus,
                RateRepository(db),
                consumer=consumer or settings.persister_consumer or default_consumer(),
                options=PersisterOptions.from_settings(settings),
            )
            await persister.run(stop)
    finally:
        if own_redis:
            await redis.aclose()


class Persister:
    """The consume -> commit -> ack loop of one consumer, plus retention pruning beside it."""

    def __init__(
        self, bus: RateBus, repo: RateRepository, *, consumer: str, options: PersisterOptions
    ) -> None:
        self.bus = bus
        self.repo = repo
        self.consumer = consumer
        self.options = options
        self.log = logger.bind(role="persister", consumer=consumer)
        self._batch: Batch | None = None  # decoded, not yet committed+acked: retried as is
        self._drain_own = True  # our own pending entries come first (restart, failed batch)
        self._group_ready = False
        self._next_claim_at = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        """Persist until `stop` is set; housekeeping is cancelled when persisting ends."""
        STREAM_MAX_LENGTH.set(self.options.stream_maxlen)
        beside = [
            asyncio.create_task(self._housekeeping_forever(stop), name="persister-housekeeping"),
            asyncio.create_task(self._trim_forever(stop), name="persister-trim"),
        ]
        try:
            await self._persist_forever(stop)
        finally:
            for task in beside:
                task.cancel()
            await asyncio.wait(beside)

    async def _persist_forever(self, stop: asyncio.Event) -> None:
        self.log.info("persister started")
        backoff = Backoff()
        while not stop.is_set():
            try:
                await self._step()
                if failures := backoff.reset():
                    self.log.info("recovered after {n} failed attempts", n=failures)
            except RedisError as err:
                # a reply lost with the connection may have delivered entries to us: re-read them
                self._drain_own = True
                if "NOGROUP" in str(err) and self._group_ready:
                    # The stream and its group are gone (Redis came back without its data, or the
                    # key was deleted): recreate the group at once, no back-off for that.
                    self.log.warning("stream or consumer group missing; recreating the group")
                    self._group_ready = False
                    continue
                await self._failed(stop, backoff, "redis", err)
            except DB_ERRORS as err:
                await self._failed(stop, backoff, "postgres", err)
            except Exception:  # pylint: disable=broad-exception-caught
                # A bug must not stop persisting. The entries are still pending (never acked):
                # drop the in-memory batch and re-read them from our pending list, which bumps
                # their delivery counts, so a batch that keeps failing ends in the dead letter.
                self.log.exception("unexpected persister failure; re-reading pending entries")
                PERSISTER_ERRORS.inc()
                self._batch, self._drain_own = None, True
                await sleep_unless(stop, backoff.next())
        self.log.info("persister stopped")

    async def _failed(
        self, stop: asyncio.Event, backoff: Backoff, what: str, err: Exception
    ) -> None:
        delay_s = backoff.next()
        held = len(self._batch) if self._batch is not None else 0
        self.log.error(
            "{what} unavailable ({err}); retrying in {delay_s:.1f}s ({held} entries held)",
            what=what,
            err=describe(err),
            delay_s=delay_s,
            held=held,
        )
        PERSISTER_ERRORS.inc()
        await sleep_unless(stop, delay_s)

    async def _step(self) -> None:
        """One round: get a batch (unless one is held), commit and ack it, update the gauges."""
        if not self._group_ready:
            await self.bus.ensure_group()
            self._group_ready = True
        if self._batch is None:
            entries, redelivered = await self._next_entries()
            if entries:
                self._batch = await self._prepare(entries, redelivered=redelivered)
        if self._batch is not None:
            await commit(self.bus, self.repo, self._batch)
            self._batch = None
        length, pending = await self.bus.group_info()
        STREAM_LENGTH.set(length)
        STREAM_PENDING.set(pending)

    async def _next_entries(self) -> tuple[list[Entry], bool]:
        """Own pending entries first, then entries claimed from dead consumers, then new ones."""
        size = self.options.batch_size
        if self._drain_own:
            entries = await self.bus.read_own_pending(self.consumer, count=size)
            if entries:
                return entries, True
            self._drain_own = False
        if time.monotonic() >= self._next_claim_at:
            claimed = await self.bus.claim_stale(
                self.consumer, min_idle_ms=self.options.claim_idle_ms, count=size
            )
            # a full page means more may be waiting: claim again at once
            pause_s = 0.0 if len(claimed) == size else self.options.claim_idle_ms / 2_000
            self._next_claim_at = time.monotonic() + pause_s
            if claimed:
                PERSISTER_CLAIMED.inc(len(claimed))
                self.log.info("claimed {n} stale entries", n=len(claimed))
                return claimed, True
        entries = await self.bus.read_batch(
            self.consumer, count=size, block_ms=self.options.block_ms
        )
        return entries, False

    async def _prepare(self, entries: list[Entry], *, redelivered: bool) -> Batch | None:
        """Decode and dead-letter poison; fresh reads (delivered once) skip the XPENDING query."""
        ids = [entry_id for entry_id, _fields in entries]
        counts = await self.bus.delivery_counts(ids) if redelivered else {}
        batch, poison = sort_entries(entries, counts, max_deliveries=self.options.max_deliveries)
        await dead_letter(self.bus, poison)
        return batch if len(batch) else None

    async def _housekeeping_forever(self, stop: asyncio.Event) -> None:
        """Every retention_interval_s (first at start): prune history, drop gone consumers.

        Housekeeping never stops the persister: a failure is logged, counted and retried at the
        next interval.
        """
        while not stop.is_set():
            await self._prune_history()
            await self._drop_gone_consumers()
            await sleep_unless(stop, self.options.retention_interval_s)

    async def _trim_forever(self, stop: asyncio.Event) -> None:
        """Every trim_interval_s: trim what is stored from the stream, export Redis memory."""
        while not stop.is_set():
            await sleep_unless(stop, self.options.trim_interval_s)
            try:
                keep_after_ms = now_ms() - int(self.options.stream_keep_s * 1000)
                STREAM_TRIMMED.inc(await self.bus.trim_persisted(keep_after_ms=keep_after_ms))
                used, limit = await self.bus.memory()
                REDIS_USED_MEMORY.set(used)
                REDIS_MAXMEMORY.set(limit)
            except RedisError as err:
                self.log.debug("stream trim skipped: {err}", err=describe(err))
            # The loop's one broad except: trimming must never stop the persister.
            except Exception:  # pylint: disable=broad-exception-caught
                self.log.exception("stream trim failed")
                PERSISTER_ERRORS.inc()

    async def _prune_history(self) -> None:
        """Delete ticks older than retention_days, candles older than candle_retention_days."""
        now = now_ms()
        cutoff_ms = now - int(self.options.retention_days * DAY_MS)
        try:
            removed = await self.repo.prune(
                cutoff_ms,
                batch_rows=self.options.retention_batch_rows,
                candles_older_than_ms=now - int(self.options.candle_retention_days * DAY_MS),
            )
        except DB_ERRORS as err:
            self.log.error(
                "retention pruning failed: postgres unavailable ({err})", err=describe(err)
            )
            PERSISTER_ERRORS.inc()
        except Exception:  # pylint: disable=broad-exception-caught
            self.log.exception("retention pruning failed")
            PERSISTER_ERRORS.inc()
        else:
            PERSISTER_PRUNED.inc(removed)
            if removed:
                self.log.info("pruned {n} rows older than the retention", n=removed)

    async def _drop_gone_consumers(self) -> None:
        """Delete group consumers of processes gone for good (idle, nothing pending)."""
        try:
            dropped = await self.bus.drop_idle_consumers(
                keep=self.consumer, min_idle_ms=CONSUMER_IDLE_DROP_MS
            )
        except RedisError as err:
            self.log.warning(
                "consumer clean-up skipped: redis unavailable ({err})", err=describe(err)
            )
        except Exception:  # pylint: disable=broad-exception-caught
            self.log.exception("consumer clean-up failed")
            PERSISTER_ERRORS.inc()
        else:
            if dropped:
                self.log.info("dropped {n} idle consumers: {names}", n=len(dropped), names=dropped)
