"""RateRepository: explicit SQL over the Tortoise connection pool; domain values in and out.

Converts rows <-> RateTick / SourceStatus, so ORM objects and rows never leave store/. Raises
store.db.DB_ERRORS to its callers (asyncpg errors pass through untranslated).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import orjson
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.connection import get_connection

from ratesvc.domain import Leg, RateTick, SourceState, SourceStatus, Transport
from ratesvc.store.candles import INTERVALS_S, Candle, fold

# RETURNING gives exactly the rows stored now: a redelivered tick (its tick_id already stored)
# returns nothing, so the candles never count it twice. Sorted by id: the order they were stored.
_INSERT_TICKS = """
WITH inserted AS (
    INSERT INTO rate_tick (tick_id, exchanger, direction, value, ts_ms, transport, legs, stream_id,
                           bid, ask)
    SELECT t.tick_id, t.exchanger, t.direction, t.value, t.ts_ms, t.transport, t.legs::jsonb,
           t.stream_id, t.bid, t.ask
    FROM unnest($1::text[], $2::text[], $3::text[], $4::numeric[], $5::bigint[], $6::text[],
                $7::text[], $8::text[], $9::numeric[], $10::numeric[])
         AS t(tick_id, exchanger, direction, value, ts_ms, transport, legs, stream_id, bid, ask)
    ON CONFLICT (tick_id) DO NOTHING
    RETURNING id, exchanger, direction, ts_ms, value
)
SELECT exchanger, direction, ts_ms, value FROM inserted ORDER BY id
"""

# The SQL twin of candles.Candle.merge: the earlier open, the later close (ties: open stays,
# close moves), the extremes, the sum of ticks. Rows come sorted by key, so two persisters
# upserting overlapping candles lock them in the same order (no deadlock).
_CANDLE_MERGE = """
ON CONFLICT (exchanger, direction, interval_s, bucket_ms) DO UPDATE SET
    open = CASE WHEN EXCLUDED.open_ms < c.open_ms THEN EXCLUDED.open ELSE c.open END,
    open_ms = LEAST(c.open_ms, EXCLUDED.open_ms),
    close = CASE WHEN EXCLUDED.close_ms >= c.close_ms THEN EXCLUDED.close ELSE c.close END,
    close_ms = GREATEST(c.close_ms, EXCLUDED.close_ms),
    high = GREATEST(c.high, EXCLUDED.high),
    low = LEAST(c.low, EXCLUDED.low),
    ticks = c.ticks + EXCLUDED.ticks
"""
_CANDLE_COLUMNS = (
    "exchanger, direction, interval_s, bucket_ms, open, high, low, close, ticks, open_ms, close_ms"
)
_UPSERT_CANDLES = f"""
INSERT INTO rate_candle AS c ({_CANDLE_COLUMNS})
SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::bigint[], $5::numeric[],
                     $6::numeric[], $7::numeric[], $8::numeric[], $9::int[], $10::bigint[],
                     $11::bigint[])
{_CANDLE_MERGE}
"""

# The bulk equivalent of fold + upsert for ticks already stored (backfill, benchmarks): one pair
# and interval over a ts_ms range (an index range scan of rate_tick_pair_ts_idx), merged into
# whatever candles exist.
_BUILD_CANDLES = f"""
INSERT INTO rate_candle AS c ({_CANDLE_COLUMNS})
SELECT exchanger, direction, $1::int, ts_ms - ts_ms % ($1::bigint * 1000) AS bucket,
       (array_agg(value ORDER BY ts_ms, id))[1], max(value), min(value),
       (array_agg(value ORDER BY ts_ms DESC, id DESC))[1], count(*), min(ts_ms), max(ts_ms)
FROM rate_tick WHERE exchanger = $4 AND direction = $5 AND ts_ms >= $2 AND ts_ms < $3
GROUP BY exchanger, direction, bucket
ORDER BY exchanger, direction, bucket
{_CANDLE_MERGE}
"""

# No conflict target: a row whose event_id (the same event published twice) or stream_id (the same
# entry delivered twice) is already stored is skipped.
_INSERT_EVENTS = """
WITH inserted AS (
    INSERT INTO source_event (source, state, transport, reason, ts_ms, stream_id, event_id)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[],
                         $7::text[])
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT count(*) FROM inserted
"""

# Loose index scan: walk the distinct (exchanger, direction) pairs through rate_tick_pair_ts_idx,
# ~1 index probe per pair whatever the table size.
_PAIRS = """
WITH RECURSIVE pairs AS (
    (SELECT exchanger, direction FROM rate_tick ORDER BY exchanger, direction LIMIT 1)
    UNION ALL
    SELECT nxt.exchanger, nxt.direction
    FROM pairs p
    CROSS JOIN LATERAL (
        SELECT exchanger, direction FROM rate_tick r
        WHERE (r.exchanger, r.direction) > (p.exchanger, p.direction)
        ORDER BY exchanger, direction LIMIT 1
    ) nxt
)
"""

# Then one backward probe of the same index per pair for its newest row.
_LATEST_TICKS = _PAIRS + """
SELECT latest.*
FROM pairs p
CROSS JOIN LATERAL (
    SELECT tick_id, exchanger, direction, value, bid, ask, ts_ms, transport, legs::text AS legs
    FROM rate_tick r
    WHERE r.exchanger = p.exchanger AND r.direction = p.direction
    ORDER BY r.ts_ms DESC LIMIT 1
) latest
ORDER BY latest.exchanger, latest.direction
"""

_LATEST_STATUSES = """
SELECT DISTINCT ON (source) source, state, transport, reason, ts_ms
FROM source_event ORDER BY source, ts_ms DESC, id DESC
"""

# Retention walks the index per pair (per source) and deletes a range of ts_ms in batches: the
# ids are collected first so the DELETE is a primary-key lookup, not a join over the table.
# The newest row of every pair/source is kept however old: the cold start serves the freshest
# known value (marked stale) rather than nothing.
_PRUNE_TICKS_CUTOFFS = _PAIRS + """
SELECT p.exchanger, p.direction,
       LEAST($1::bigint, (SELECT max(ts_ms) FROM rate_tick r
                          WHERE r.exchanger = p.exchanger AND r.direction = p.direction)) AS cutoff
FROM pairs p
"""
_PRUNE_TICKS = """
DELETE FROM rate_tick WHERE id = ANY(ARRAY(
    SELECT id FROM rate_tick WHERE exchanger = $1 AND direction = $2 AND ts_ms < $3 LIMIT $4))
"""
_PRUNE_CANDLES = """
DELETE FROM rate_candle WHERE id = ANY(ARRAY(
    SELECT id FROM rate_candle
    WHERE exchanger = $1 AND direction = $2 AND interval_s = $3 AND bucket_ms < $4 LIMIT $5))
"""
_PRUNE_EVENTS_CUTOFFS = """
SELECT source, LEAST($1::bigint, max(ts_ms)) AS cutoff FROM source_event GROUP BY source
"""
_PRUNE_EVENTS = """
DELETE FROM source_event WHERE id = ANY(ARRAY(
    SELECT id FROM source_event WHERE source = $1 AND ts_ms < $2 LIMIT $3))
"""


class RateRepository:
    """Rate history and source events in Postgres.

    Every method runs on a pooled connection of `db` (the client `store.db.open_db` yields);
    inside `transaction()` the calls share one connection and commit together.
    """

    def __init__(self, db: BaseDBAsyncClient | None = None) -> None:
        """`db` is the client `open_db` yields; None takes the default connection of the Tortoise
        context active in this task (inside ``async with open_db(url):``)."""
        self._db = db if db is not None else get_connection("default")
        self._conn: asyncpg.Connection | None = None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[RateRepository]:
        """A repository bound to one connection and one transaction: commit on exit or roll back."""
        if self._conn is not None:
            raise RuntimeError("already in a transaction")
        async with self._db.acquire_connection() as conn, conn.transaction():
            bound = RateRepository(self._db)
            bound._conn = conn  # pylint: disable=protected-access
            yield bound

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        if self._conn is not None:
            yield self._conn
        else:
            async with self._db.acquire_connection() as conn:
                yield conn

    async def save_batch(self, items: Sequence[tuple[str, RateTick]]) -> int:
        """Insert (stream id, tick) pairs in one statement; returns rows inserted (no duplicates).

        The idempotency key is `tick_id`: a redelivered tick is skipped (ON CONFLICT DO NOTHING).
        The candles of every interval are updated from the ticks actually inserted, in the same
        transaction (the caller's, or one of its own).
        """
        if not items:
            return 0
        rows = [
            (t.tick_id, t.exchanger, t.direction, t.value, t.ts_ms, str(t.transport), _legs(t), sid)
            + (t.bid, t.ask)
            for sid, t in items
        ]
        async with self._connection() as conn, conn.transaction():
            inserted = await conn.fetch(_INSERT_TICKS, *_columns(rows))
            folded = fold(tuple(row) for row in inserted)
            if folded:
                candles = [
                    key + (c.open, c.high, c.low, c.close, c.ticks, c.open_ms, c.close_ms)
                    for key, c in sorted(folded.items())
                ]
                await conn.execute(_UPSERT_CANDLES, *_columns(candles))
        return len(inserted)

    async def build_candles(self, from_ms: int, to_ms: int) -> None:
        """Fold the stored ticks with from_ms <= ts_ms < to_ms into the candles (every interval).

        For ticks stored without candles (before migration 3, or bulk-loaded): merging is
        additive, so run it once per range, never over ticks the persister already counted.
        """
        async with self._connection() as conn, conn.transaction():
            for exchanger, direction in await conn.fetch(_PAIRS + "SELECT * FROM pairs"):
                for interval_s in INTERVALS_S.values():
                    await conn.execute(
                        _BUILD_CANDLES, interval_s, from_ms, to_ms, exchanger, direction
                    )

    async def save_events(self, items: Sequence[tuple[str, SourceStatus]]) -> int:
        """Insert (stream id, status) pairs in one statement; returns rows inserted (idempotent)."""
        if not items:
            return 0
        rows = [
            (s.source, str(s.state), str(s.transport), s.reason, s.ts_ms, sid, s.event_id)
            for sid, s in items
        ]
        async with self._connection() as conn:
            return int(await conn.fetchval(_INSERT_EVENTS, *_columns(rows)))

    async def latest_ticks(self) -> list[RateTick]:
        """The newest tick of every (exchanger, direction), legs included, sorted by that pair."""
        async with self._connection() as conn:
            rows = await conn.fetch(_LATEST_TICKS)
        return [tick_from_row(row) for row in rows]

    async def latest_statuses(self) -> list[SourceStatus]:
        """The newest status event of every source, sorted by source."""
        async with self._connection() as conn:
            rows = await conn.fetch(_LATEST_STATUSES)
        return [
            SourceStatus(
                source=row["source"],
                state=SourceState(row["state"]),
                ts_ms=row["ts_ms"],
                transport=Transport(row["transport"]),
                reason=row["reason"],
            )
            for row in rows
        ]

    async def prune(
        self, older_than_ms: int, *, batch_rows: int, candles_older_than_ms: int | None = None
    ) -> int:
        """Delete ticks and events with ts_ms < `older_than_ms`, at most `batch_rows` per statement,
        and candles whose bucket starts before `candles_older_than_ms` (None: keep them all).

        Each batch commits on its own (outside `transaction()`) so locks stay short; the newest
        row of every pair and source is kept. Returns the rows removed.
        """
        removed = 0
        async with self._connection() as conn:
            if candles_older_than_ms is not None:
                # every pair that ever had a candle still has its newest tick (kept above)
                for exchanger, direction in await conn.fetch(_PAIRS + "SELECT * FROM pairs"):
                    for interval_s in INTERVALS_S.values():
                        removed += await _delete_batches(
                            conn,
                            _PRUNE_CANDLES,
                            (exchanger, direction, interval_s, candles_older_than_ms),
                            batch_rows,
                        )
            for exchanger, direction, cutoff in await conn.fetch(
                _PRUNE_TICKS_CUTOFFS, older_than_ms
            ):
                removed += await _delete_batches(
                    conn, _PRUNE_TICKS, (exchanger, direction, cutoff), batch_rows
                )
            for source, cutoff in await conn.fetch(_PRUNE_EVENTS_CUTOFFS, older_than_ms):
                removed += await _delete_batches(conn, _PRUNE_EVENTS, (source, cutoff), batch_rows)
        return removed

    async def count_ticks(self) -> int:
        """Rows in rate_tick (tests, diagnostics)."""
        async with self._connection() as conn:
            return int(await conn.fetchval("SELECT count(*) FROM rate_tick"))

    async def candles(self, exchanger: str, direction: str, interval_s: int) -> list[Candle]:
        """Every stored candle of one pair and interval, oldest first (tests, diagnostics)."""
        async with self._connection() as conn:
            rows = await conn.fetch(
                "SELECT bucket_ms, open, high, low, close, ticks, open_ms, close_ms"
                " FROM rate_candle WHERE exchanger = $1 AND direction = $2 AND interval_s = $3"
                " ORDER BY bucket_ms",
                exchanger,
                direction,
                interval_s,
            )
        return [Candle(*row) for row in rows]

    async def count_events(self) -> int:
        """Rows in source_event (tests, diagnostics)."""
        async with self._connection() as conn:
            return int(await conn.fetchval("SELECT count(*) FROM source_event"))


def _columns(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    """Rows -> one list per column: the arrays the unnest() inserts take."""
    return [list(column) for column in zip(*rows)]


def _legs(tick: RateTick) -> str:
    return orjson.dumps([leg.to_json() for leg in tick.legs]).decode()


async def _delete_batches(
    conn: asyncpg.Connection, sql: str, args: tuple[Any, ...], batch_rows: int
) -> int:
    removed = 0
    while True:
        status = await conn.execute(sql, *args, batch_rows)
        deleted = int(status.rsplit(" ", 1)[-1])  # "DELETE <n>"
        removed += deleted
        if deleted < batch_rows:
            return removed


def tick_from_row(row: asyncpg.Record) -> RateTick:
    """A RateTick from a rate_tick row (legs as JSON text)."""
    return RateTick(
        exchanger=row["exchanger"],
        direction=row["direction"],
        value=row["value"],  # NUMERIC: exactly as written
        ts_ms=row["ts_ms"],
        legs=tuple(Leg.from_json(raw) for raw in orjson.loads(row["legs"])),
        transport=Transport(row["transport"]),
        tick_id=row["tick_id"].rstrip(),  # CHAR(32) pads shorter keys with blanks
        bid=row["bid"],  # NULL: no book, or a row written before books were kept
        ask=row["ask"],
    )
