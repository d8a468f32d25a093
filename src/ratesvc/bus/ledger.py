"""The call ledger every collector records metered API calls in: counts, schedule, last answer."""

from __future__ import annotations

from redis.asyncio import Redis

from ratesvc.bus.keys import CALLS, CALLS_TTL_S, METERED
from ratesvc.connections import REDIS_ERRORS
from ratesvc.domain import Answer


class CallLedger:
    """Monthly API call counts, the last call's time and its answer, shared by every collector.

    CoinGecko's quota is per account: one count for the deployment, one schedule (the time of the
    last call, whoever made it) and one answer (the lease holder's, read by the standbys). Never
    raises: while Redis is unreachable it answers from, and records into, local state; counts
    are folded back in when Redis returns, so a quota is never under-counted.
    """

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._local: dict[str, int] = {}  # calls counted while Redis was unreachable
        self._last_calls: dict[str, float] = {}  # our own calls' times (the fallback)
        self._answers: dict[str, Answer] = {}  # our own answers (the fallback)

    async def get(self, source: str, month: str) -> int:
        """Calls counted for `source` in `month` so far."""
        key = f"{source}:{month}"
        try:
            await self._fold(key)
            return int(await self.redis.get(CALLS + key) or 0)
        except REDIS_ERRORS:
            return self._local.get(key, 0)

    async def incr(self, source: str, month: str, *, at_s: float) -> int:
        """Count one call made at `at_s` (epoch s); return the new total."""
        key = f"{source}:{month}"
        self._last_calls[source] = at_s
        try:
            await self._fold(key)
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.incr(CALLS + key)
                pipe.expire(CALLS + key, CALLS_TTL_S)
                pipe.hset(METERED + source, "called_ms", str(int(at_s * 1000)))
                pipe.expire(METERED + source, CALLS_TTL_S)
                total, *_ = await pipe.execute()
            return int(total)
        except REDIS_ERRORS:
            self._local[key] = self._local.get(key, 0) + 1
            return self._local[key]

    async def last_call_s(self, source: str) -> float | None:
        """Epoch seconds of the source's last call by any collector."""
        try:
            raw = await self.redis.hget(METERED + source, "called_ms")
        except REDIS_ERRORS:
            return self._last_calls.get(source)
        return int(raw) / 1000 if raw else self._last_calls.get(source)

    async def share(self, source: str, answer: Answer) -> None:
        """Keep `answer` as the source's latest for every collector."""
        self._answers[source] = answer
        try:
            await self.redis.hset(
                METERED + source,
                mapping={"body": answer.body, "received_ms": str(answer.received_ms)},
            )
        except REDIS_ERRORS:
            pass  # standbys keep the previous answer; ours is still served from _answers

    async def shared(self, source: str) -> Answer | None:
        """The source's latest good answer, whoever made the call."""
        try:
            body, received_ms = await self.redis.hmget(METERED + source, ["body", "received_ms"])
        except REDIS_ERRORS:
            return self._answers.get(source)
        if body is None or received_ms is None:
            return self._answers.get(source)
        return Answer(body, int(received_ms))

    async def _fold(self, key: str) -> None:
        pending = self._local.pop(key, 0)
        if pending:
            try:
                await self.redis.incrby(CALLS + key, pending)
            except REDIS_ERRORS:
                self._local[key] = self._local.get(key, 0) + pending
                raise
