"""The persister's consumer group on the stream: read, claim, ack, dead-letter, housekeeping."""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import ResponseError

from ratesvc.bus.codec import Entry, stream_id_key
from ratesvc.bus.keys import DEAD_LETTER, DEAD_LETTER_MAXLEN, GROUP, STREAM


class GroupMixin:
    """RateBus's consumer-group operations."""

    redis: Redis
    _drop_consumer: AsyncScript

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
        """Move a poison entry to the dead-letter stream and ack it, atomically.

        The dead-letter stream keeps its newest DEAD_LETTER_MAXLEN entries (about) at most.
        """
        entry = {**fields, "_origin_id": entry_id, "_reason": reason[:500]}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(DEAD_LETTER, entry, maxlen=DEAD_LETTER_MAXLEN, approximate=True)
            pipe.xack(STREAM, GROUP, entry_id)
            await pipe.execute()

    async def trim_persisted(self, *, keep_after_ms: int) -> int:
        """Trim the stream up to the persister group's position, never past it; entries removed.

        Everything before the group's first pending entry (or, with nothing pending, its last
        delivered one) is acknowledged, so stored: XTRIM MINID removes only those, and only those
        older than `keep_after_ms` (epoch ms), so API workers that follow a little behind still
        find their entries. With no group yet, nothing is trimmed. The group only moves forward
        between the reads and the XTRIM, so a concurrent delivery can never be trimmed.
        """
        try:
            groups = await self.redis.xinfo_groups(STREAM)
        except ResponseError:  # no stream yet
            return 0
        group = next((g for g in groups if str(g["name"]) == GROUP), None)
        if group is None:
            return 0
        safe = str(group["last-delivered-id"])
        if int(group["pending"]):
            summary = await self.redis.xpending(STREAM, GROUP)
            if summary["min"]:
                safe = min(safe, str(summary["min"]), key=stream_id_key)
        minid = min(safe, f"{keep_after_ms}-0", key=stream_id_key)
        return int(await self.redis.xtrim(STREAM, minid=minid, approximate=True))

    async def drop_idle_consumers(self, *, keep: str, min_idle_ms: int) -> list[str]:
        """Delete the group's consumers idle for `min_idle_ms` with nothing pending; their names.

        Consumer names are per process (``<host>-<pid>``), so every restart leaves one behind.
        A consumer with pending entries is kept: claiming moves those to a live consumer first.
        """
        try:
            consumers = await self.redis.xinfo_consumers(STREAM, GROUP)
        except ResponseError:  # no stream or no group yet
            return []
        dropped = []
        for info in consumers:
            name = str(info["name"])
            if name == keep or int(info["pending"]) or int(info["idle"]) < min_idle_ms:
                continue
            if await self._drop_consumer(keys=[STREAM], args=[GROUP, name]):
                dropped.append(name)
        return dropped

    async def memory(self) -> tuple[int, int]:
        """(used_memory, maxmemory) of the Redis server, in bytes (maxmemory 0: no limit)."""
        info = await self.redis.info("memory")
        return int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))

    async def group_info(self) -> tuple[int, int]:
        """(stream length, entries pending in the persister group) for metrics."""
        length = int(await self.redis.xlen(STREAM))
        try:
            pending = await self.redis.xpending(STREAM, GROUP)
        except ResponseError:
            return length, 0
        return length, int(pending["pending"])
