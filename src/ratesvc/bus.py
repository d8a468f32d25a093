"""The rate bus on Redis: the ONLY module that knows Redis key names.

Publishes ticks and source status to the stream `ratesvc:ticks` and, in the same MULTI/EXEC
pipeline, to the latest-value hashes; reads the stream for the persister (consumer group) and the
API mirrors (plain XREAD). Raises redis errors to its callers; never HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from ratesvc.domain import RateTick, SourceStatus, event_from_fields

STREAM = "ratesvc:ticks"
DEAD_LETTER = "ratesvc:ticks:dead"
LATEST = "ratesvc:latest"  # hash: "exchanger:direction" -> tick fields as JSON
STATUS = "ratesvc:status"  # hash: source -> status fields as JSON
GROUP = "persister"
LEASE = "ratesvc:collector:lease"

Event = RateTick | SourceStatus
# What decoding a junk entry may raise (missing fields, bad numbers, malformed legs).
DECODE_ERRORS = (KeyError, ValueError, ArithmeticError, TypeError, IndexError)
Entry = tuple[str, dict[str, str]]  # (stream id, raw fields)


def _json(fields: dict[str, str]) -> str:
    return orjson.dumps(fields).decode()


def _unjson(raw: str | bytes) -> dict[str, str]:
    return orjson.loads(raw)


class RateBus:
    """Typed access to the stream and hashes. `redis` must use decode_responses=True."""

    def __init__(self, redis: Redis, *, maxlen: int = 100_000) -> None:
        self.redis = redis
        self.maxlen = maxlen

    # ---------------------------------------------------------------- publish side (collector)
    async def publish(self, events: Sequence[Event]) -> list[str]:
        """XADD every event (bounded with MAXLEN ~) and update the latest-value hashes atomically.

        Returns the stream ids, in order.
        """
        if not events:
            return []
        async with self.redis.pipeline(transaction=True) as pipe:
            for event in events:
                fields = event.to_fields()
                pipe.xadd(STREAM, fields, maxlen=self.maxlen, approximate=True)
            for event in events:
                if isinstance(event, RateTick):
                    pipe.hset(LATEST, event.key, _json(event.to_fields()))
                else:
                    pipe.hset(STATUS, event.source, _json(event.to_fields()))
            results = await pipe.execute()
        return [str(r) for r in results[: len(events)]]

    async def seed_latest(self, ticks: Sequence[RateTick]) -> int:
        """Fill the latest-value hash from history (cold start); never overwrites newer values."""
        written = 0
        for tick in ticks:
            written += int(await self.redis.hsetnx(LATEST, tick.key, _json(tick.to_fields())))
        return written

    # ---------------------------------------------------------------- read side (API mirrors)
    async def last_id(self) -> str:
        """Id of the newest stream entry, or "0-0" when the stream is empty or missing."""
        entries = await self.redis.xrevrange(STREAM, count=1)
        return str(entries[0][0]) if entries else "0-0"

    async def read_latest(self) -> tuple[list[RateTick], list[SourceStatus]]:
        """Every latest tick and source status; undecodable hash entries are skipped."""
        ticks: list[RateTick] = []
        statuses: list[SourceStatus] = []
        for raw in (await self.redis.hgetall(LATEST)).values():
            try:
                ticks.append(RateTick.from_fields(_unjson(raw)))
            except DECODE_ERRORS:
                continue
        for raw in (await self.redis.hgetall(STATUS)).values():
            try:
                statuses.append(SourceStatus.from_fields(_unjson(raw)))
            except DECODE_ERRORS:
                continue
        return ticks, statuses

    async def follow(
        self, after_id: str, *, count: int = 1_000, block_ms: int = 1_000
    ) -> list[tuple[str, Event | None]]:
        """XREAD entries after `after_id`; an undecodable entry comes back as (id, None)."""
        reply = await self.redis.xread({STREAM: after_id}, count=count, block=block_ms)
        out: list[tuple[str, Event | None]] = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                out.append((str(entry_id), _decode_event(fields)))
        return out

    # ---------------------------------------------------------------- consumer group (persister)
    async def ensure_group(self) -> None:
        """Create the persister group at the start of the stream (idempotent)."""
        try:
            await self.redis.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        except ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise

    async def read_batch(
        self, consumer: str, *, count: int = 500, block_ms: int = 1_000
    ) -> list[Entry]:
        """New entries for this consumer (XREADGROUP >)."""
        reply = await self.redis.xreadgroup(
            GROUP, consumer, {STREAM: ">"}, count=count, block=block_ms
        )
        return [
            (str(i), dict(f)) for _s, entries in reply or [] for i, f in entries if f is not None
        ]

    async def read_own_pending(self, consumer: str, *, count: int = 500) -> list[Entry]:
        """Entries delivered to this consumer earlier but never acked (restart of the same name).

        An entry trimmed from the stream meanwhile comes back with empty fields: it stays in the
        pending list until the caller acks or dead-letters it.
        """
        reply = await self.redis.xreadgroup(GROUP, consumer, {STREAM: "0"}, count=count)
        return [(str(i), dict(f or {})) for _s, entries in reply or [] for i, f in entries]

    async def claim_stale(
        self, consumer: str, *, min_idle_ms: int, count: int = 500
    ) -> list[Entry]:
        """Take over entries other consumers left pending longer than `min_idle_ms`.

        XPENDING IDLE finds them, one XCLAIM per id (pipelined) takes them: XCLAIM re-checks the
        idle time, so two claimers never both get an entry, and it bumps the delivery count.
        An entry trimmed from the stream comes back with empty fields (Redis 6.2 keeps it pending;
        7.x drops it from the pending list itself and it is not returned).
        """
        rows = await self.redis.xpending_range(
            STREAM, GROUP, min="-", max="+", count=count, idle=min_idle_ms
        )
        ids = [str(row["message_id"]) for row in rows]
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry_id in ids:
                pipe.xclaim(STREAM, GROUP, consumer, min_idle_ms, [entry_id])
            replies = await pipe.execute()
        claimed: list[Entry] = []
        for entry_id, reply in zip(ids, replies):
            if reply:  # [] = not claimed (taken meanwhile, or trimmed on 7.x)
                claimed.append((entry_id, dict(reply[0][1] or {})))
        return claimed

    async def delivery_counts(self, ids: Sequence[str]) -> dict[str, int]:
        """How many times each pending entry was delivered (XPENDING extended form, one per id).

        Ids no longer pending are absent from the result.
        """
        if not ids:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for entry_id in ids:
                pipe.xpending_range(STREAM, GROUP, min=entry_id, max=entry_id, count=1)
            replies = await pipe.execute()
        return {
            str(rows[0]["message_id"]): int(rows[0]["times_delivered"]) for rows in replies if rows
        }

    async def ack(self, ids: Sequence[str]) -> int:
        """XACK: only after the entries are committed to Postgres."""
        if not ids:
            return 0
        return int(await self.redis.xack(STREAM, GROUP, *ids))

    async def dead_letter(self, entry_id: str, fields: dict[str, str], *, reason: str) -> None:
        """Move a poison entry to the dead-letter stream and ack it, atomically."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(DEAD_LETTER, {**fields, "_origin_id": entry_id, "_reason": reason[:500]})
            pipe.xack(STREAM, GROUP, entry_id)
            await pipe.execute()

    async def group_info(self) -> tuple[int, int]:
        """(stream length, entries pending in the persister group) for metrics."""
        length = int(await self.redis.xlen(STREAM))
        try:
            pending = await self.redis.xpending(STREAM, GROUP)
        except ResponseError:
            return length, 0
        return length, int(pending["pending"])


def decode_entry(fields: dict[str, str]) -> Event:
    """Decode one raw stream entry. Raises one of DECODE_ERRORS on junk."""
    return event_from_fields(fields)


def _decode_event(fields: dict[str, str] | None) -> Event | None:
    if not fields:
        return None
    try:
        return event_from_fields(fields)
    except DECODE_ERRORS:
        return None
