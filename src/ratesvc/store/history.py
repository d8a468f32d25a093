"""HistoryReader: the API's read-only view of Postgres for /v2/history and `at=` answers.

A small asyncpg pool of its own, created lazily on the first request that needs it (a worker
that never serves history never connects), and two direct index queries, no ORM: a range of
rate_candle through its unique key, and one backward probe of rate_tick_pair_ts_idx per
(exchanger, direction). Any failure to reach or query Postgres is raised as HistoryUnavailable,
which the API turns into a 503 problem.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import asyncpg

from ratesvc.domain import RateTick
from ratesvc.errors import describe
from ratesvc.store.db import DB_ERRORS, connect_args
from ratesvc.store.repository import tick_from_row

POOL_MAX_SIZE = 4
CONNECT_TIMEOUT_S = 2.0
QUERY_TIMEOUT_S = 5.0
# After a failed connection attempt, requests fail at once for this long instead of each one
# waiting for its own connect timeout (a down database must not pile up requests).
RETRY_CONNECT_AFTER_S = 1.0

_CANDLES = """
SELECT bucket_ms, open, high, low, close, ticks, open_ms, close_ms FROM rate_candle
WHERE exchanger = $1 AND direction = $2 AND interval_s = $3 AND bucket_ms >= $4 AND bucket_ms < $5
ORDER BY bucket_ms LIMIT $6
"""

# The same rows rendered by Postgres as the JSON array of /v2/history, one text value: the
# per-row decoding of NUMERIC into Decimal (and back to text) would cost ten times the query.
# Byte for byte api.history.render_candles of the rows above (tests/integration/test_history_api):
# trim_scale()::text is decimals.plain (NUMERIC text never has an exponent), buckets are whole
# seconds, so `t` ends in ".000Z".
_CANDLES_JSON = f"""
SELECT coalesce(string_agg(format(
    '{{"t":"%s.000Z","open":"%s","high":"%s","low":"%s","close":"%s","ticks":%s}}',
    to_char(to_timestamp(bucket_ms / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS'),
    trim_scale(open), trim_scale(high), trim_scale(low), trim_scale(close), ticks),
    ',' ORDER BY bucket_ms), '')
FROM ({_CANDLES}) page
"""

# One backward probe of rate_tick_pair_ts_idx per requested pair.
_TICKS_AT = """
SELECT t.* FROM unnest($1::text[], $2::text[]) AS p(exchanger, direction)
CROSS JOIN LATERAL (
    SELECT tick_id, exchanger, direction, value, bid, ask, ts_ms, transport, legs::text AS legs
    FROM rate_tick r
    WHERE r.exchanger = p.exchanger AND r.direction = p.direction AND r.ts_ms <= $3
    ORDER BY r.ts_ms DESC LIMIT 1
) t
"""


class HistoryUnavailable(Exception):
    """Postgres cannot answer now (not configured, unreachable, failing, too slow)."""


class HistoryReader:
    """Candles and point-in-time ticks from Postgres at `database_url` (None: not configured)."""

    def __init__(self, database_url: str | None, *, pool_max_size: int = POOL_MAX_SIZE) -> None:
        self.database_url = database_url
        self.pool_max_size = pool_max_size
        self._pool: asyncpg.Pool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        self._failed_at = -RETRY_CONNECT_AFTER_S

    async def candles_json(
        self,
        exchanger: str,
        direction: str,
        interval_s: int,
        first_bucket_ms: int,
        to_ms: int,
        *,
        limit: int,
    ) -> bytes:
        """Stored candles with first_bucket_ms <= start < to_ms, oldest first, at most `limit`,
        as the JSON array elements of /v2/history (no brackets), rendered by Postgres."""
        rows = await self._fetch(
            _CANDLES_JSON, exchanger, direction, interval_s, first_bucket_ms, to_ms, limit
        )
        return rows[0][0].encode()

    async def ticks_at(self, pairs: Sequence[tuple[str, str]], at_ms: int) -> list[RateTick]:
        """The last tick at or before `at_ms` of each (exchanger, direction) that has one."""
        if not pairs:
            return []
        exchangers, directions = zip(*pairs)
        rows = await self._fetch(_TICKS_AT, list(exchangers), list(directions), at_ms)
        return [tick_from_row(row) for row in rows]

    async def close(self) -> None:
        """Close the pool if one was opened."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        pool = await self._ready_pool()
        try:
            return await pool.fetch(sql, *args, timeout=QUERY_TIMEOUT_S)
        except DB_ERRORS as err:
            raise HistoryUnavailable(describe(err)) from err

    async def _ready_pool(self) -> asyncpg.Pool:
        loop = asyncio.get_running_loop()
        if self._pool is not None and self._loop is loop:
            return self._pool
        if self.database_url is None:
            raise HistoryUnavailable("DATABASE_URL is not set: no history is stored")
        if self._loop is not loop:
            # A pool serves the event loop that opened it. A worker has one loop; a caller that
            # runs each request on a loop of its own (a test client) gets a pool per loop.
            if self._pool is not None:
                self._pool.terminate()
            self._pool, self._loop, self._lock = None, loop, asyncio.Lock()
        assert self._lock is not None
        async with self._lock:
            if self._pool is not None:
                return self._pool
            if time.monotonic() - self._failed_at < RETRY_CONNECT_AFTER_S:
                raise HistoryUnavailable("postgres unreachable (last attempt under 1 s ago)")
            args = connect_args(self.database_url)
            args["timeout"] = CONNECT_TIMEOUT_S
            try:
                self._pool = await asyncpg.create_pool(
                    **args, min_size=1, max_size=self.pool_max_size
                )
            except DB_ERRORS as err:
                self._failed_at = time.monotonic()
                raise HistoryUnavailable(describe(err)) from err
            return self._pool
