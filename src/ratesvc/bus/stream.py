"""The stream and the latest-value hashes: publishing (collector) and following (API mirrors)."""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from ratesvc.bus.codec import DECODE_ERRORS, Event, decode_event, from_json, to_json
from ratesvc.bus.keys import LATEST, LEASE, STATUS, STREAM
from ratesvc.bus.lease import FencedOut, LeaseToken
from ratesvc.domain import RateTick, SourceStatus


class StreamMixin:
    """RateBus's publish and read operations."""

    redis: Redis
    maxlen: int
    _publish_fenced: AsyncScript

    async def publish(
        self, events: Sequence[Event], *, fence: LeaseToken | None = None
    ) -> list[str]:
        """XADD every event (bounded with MAXLEN ~) and update the latest-value hashes atomically.

        With `fence`, the writes happen only while the lease holds exactly that token, in one Lua
        script, and every entry carries the term (field ``term``). Returns the stream ids, in order.

        Raises:
            FencedOut: `fence` was given and the lease holds something else; nothing was written.
        """
        if not events:
            return []
        if fence is not None:
            return await self._publish_with_fence(events, fence)
        async with self.redis.pipeline(transaction=True) as pipe:
            for event in events:
                fields = event.to_fields()
                pipe.xadd(STREAM, fields, maxlen=self.maxlen, approximate=True)
            for event in events:
                if isinstance(event, RateTick):
                    pipe.hset(LATEST, event.key, to_json(event.to_fields()))
                else:
                    pipe.hset(STATUS, event.source, to_json(event.to_fields()))
            results = await pipe.execute()
        return [str(r) for r in results[: len(events)]]

    async def _publish_with_fence(self, events: Sequence[Event], fence: LeaseToken) -> list[str]:
        args: list[str | int] = [fence.value, self.maxlen, fence.term]
        for event in events:
            fields = event.to_fields()
            if isinstance(event, RateTick):
                args += ["t", event.key, to_json(fields)]
            else:
                args += ["s", event.source, to_json(fields)]
            args.append(len(fields))
            for name, value in fields.items():
                args += [name, value]
        reply = await self._publish_fenced(keys=[LEASE, STREAM, LATEST, STATUS], args=args)
        if int(reply[0]) != 1:
            raise FencedOut(fence, str(reply[1]))
        return [str(r) for r in reply[1:]]

    async def seed_latest(self, ticks: Sequence[RateTick]) -> int:
        """Fill the latest-value hash from history (cold start); never overwrites newer values."""
        written = 0
        for tick in ticks:
            written += int(await self.redis.hsetnx(LATEST, tick.key, to_json(tick.to_fields())))
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
                ticks.append(RateTick.from_fields(from_json(raw)))
            except DECODE_ERRORS:
                continue
        for raw in (await self.redis.hgetall(STATUS)).values():
            try:
                statuses.append(SourceStatus.from_fields(from_json(raw)))
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
                out.append((str(entry_id), decode_event(fields)))
        return out
