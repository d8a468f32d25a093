"""One persister batch: sort stream entries into ticks, events and poison; commit; ack after commit.

Poison (undecodable, trimmed, delivered too often, or refused by Postgres as bad data) goes to the
dead-letter stream so it never blocks the entries behind it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import asyncpg
from loguru import logger

from ratesvc.bus import Entry, RateBus, decode_entry
from ratesvc.domain import RateTick, SourceStatus
from ratesvc.errors import describe
from ratesvc.metrics import (
    PERSISTER_BATCH_SECONDS,
    PERSISTER_DEAD,
    PERSISTER_DUPLICATES,
    PERSISTER_ROWS,
)
from ratesvc.store.repository import RateRepository

log = logger.bind(role="persister")

# Postgres refusing one row's data (numeric overflow, over-long text, ...): retrying the same row
# can never succeed, unlike a lost connection.
POISON_DB_ERRORS = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)
# What decoding junk raises (Leg.from_json indexes lists, hence TypeError/IndexError too).
DECODE_ERRORS = (KeyError, ValueError, ArithmeticError, TypeError, IndexError)


@dataclass(frozen=True, slots=True)
class Poison:
    """An entry that must not be retried, with the reason recorded in the dead-letter stream."""

    entry_id: str
    fields: dict[str, str]
    reason: str


@dataclass(slots=True)
class Batch:
    """Decoded entries waiting for their commit (poison already removed)."""

    ticks: list[tuple[str, dict[str, str], RateTick]] = field(default_factory=list)
    events: list[tuple[str, dict[str, str], SourceStatus]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ticks) + len(self.events)

    @property
    def ids(self) -> list[str]:
        """Stream ids of every entry in the batch."""
        return [i for i, _f, _t in self.ticks] + [i for i, _f, _e in self.events]

    def drop(self, entry_id: str) -> None:
        """Remove one entry (it was dead-lettered)."""
        self.ticks = [item for item in self.ticks if item[0] != entry_id]
        self.events = [item for item in self.events if item[0] != entry_id]


def sort_entries(
    entries: Sequence[Entry], counts: Mapping[str, int], *, max_deliveries: int
) -> tuple[Batch, list[Poison]]:
    """Decode entries; `counts` holds delivery counts (absent = first delivery)."""
    batch, poison = Batch(), []
    for entry_id, fields in entries:
        delivered = counts.get(entry_id, 1)
        if delivered > max_deliveries:
            reason = f"delivered {delivered} times (max {max_deliveries})"
            poison.append(Poison(entry_id, fields, reason))
            continue
        if not fields:
            poison.append(
                Poison(entry_id, fields, "trimmed from the stream before it was persisted")
            )
            continue
        try:
            event = decode_entry(fields)
        except DECODE_ERRORS as err:
            poison.append(Poison(entry_id, fields, f"undecodable: {describe(err)}"))
            continue
        if isinstance(event, RateTick):
            if not event.value.is_finite():
                poison.append(Poison(entry_id, fields, f"non-finite value {event.value}"))
            else:
                batch.ticks.append((entry_id, fields, event))
        else:
            batch.events.append((entry_id, fields, event))
    return batch, poison


async def dead_letter(bus: RateBus, poison: Sequence[Poison]) -> None:
    """Move poison entries to the dead-letter stream (which acks them)."""
    for item in poison:
        await bus.dead_letter(item.entry_id, item.fields, reason=item.reason)
        PERSISTER_DEAD.inc()
        log.warning(
            "dead-lettered {entry_id}: {reason}", entry_id=item.entry_id, reason=item.reason
        )


async def commit(bus: RateBus, repo: RateRepository, batch: Batch) -> int:
    """Save the batch in ONE transaction, then XACK it; returns rows inserted.

    Raises DB_ERRORS / redis errors with the batch intact, so the caller can retry it as is.
    """
    started = time.perf_counter()
    try:
        inserted = await _save(repo, batch)
    except POISON_DB_ERRORS as err:
        log.warning("batch refused by postgres ({err}); saving entries one by one", err=err)
        inserted = await _save_one_by_one(bus, repo, batch)
    await bus.ack(batch.ids)
    PERSISTER_BATCH_SECONDS.observe(time.perf_counter() - started)
    PERSISTER_ROWS.inc(inserted)
    # redeliveries (a consumer died after commit, before ack) hit the unique keys
    PERSISTER_DUPLICATES.inc(len(batch) - inserted)
    return inserted


async def _save(repo: RateRepository, batch: Batch) -> int:
    async with repo.transaction() as tx:
        inserted = await tx.save_batch([(i, tick) for i, _f, tick in batch.ticks])
        inserted += await tx.save_events([(i, event) for i, _f, event in batch.events])
    return inserted


async def _save_one_by_one(bus: RateBus, repo: RateRepository, batch: Batch) -> int:
    """Isolate rows Postgres refuses: each entry in its own transaction, poison dead-lettered."""
    inserted = 0
    for entry_id, fields, tick in list(batch.ticks):
        try:
            inserted += await repo.save_batch([(entry_id, tick)])
        except POISON_DB_ERRORS as err:
            await dead_letter(bus, [Poison(entry_id, fields, f"refused by postgres: {err}")])
            batch.drop(entry_id)
    for entry_id, fields, event in list(batch.events):
        try:
            inserted += await repo.save_events([(entry_id, event)])
        except POISON_DB_ERRORS as err:
            await dead_letter(bus, [Poison(entry_id, fields, f"refused by postgres: {err}")])
            batch.drop(entry_id)
    return inserted
