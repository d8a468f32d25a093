"""The monthly call ledger every collector counts metered API calls into."""

from __future__ import annotations

from redis.asyncio import Redis

from ratesvc.bus.keys import CALLS, CALLS_TTL_S
from ratesvc.connections import REDIS_ERRORS


class CallLedger:
    """Monthly API call counts shared by every collector (CoinGecko's quota is per account).

    Never raises: while Redis is unreachable it answers from, and counts into, a local tally that
    is folded back in when Redis returns, so a quota is never under-counted.
    """

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._local: dict[str, int] = {}  # calls counted while Redis was unreachable

    async def get(self, key: str) -> int:
        """Calls counted under `key` so far."""
        try:
            await self._fold(key)
            return int(await self.redis.get(CALLS + key) or 0)
        except REDIS_ERRORS:
            return self._local.get(key, 0)

    async def incr(self, key: str) -> int:
        """Count one call under `key`; return the new total."""
        try:
            await self._fold(key)
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.incr(CALLS + key)
                pipe.expire(CALLS + key, CALLS_TTL_S)
                total, _ = await pipe.execute()
            return int(total)
        except REDIS_ERRORS:
            self._local[key] = self._local.get(key, 0) + 1
            return self._local[key]

    async def _fold(self, key: str) -> None:
        pending = self._local.pop(key, 0)
        if pending:
            try:
                await self.redis.incrby(CALLS + key, pending)
            except REDIS_ERRORS:
                self._local[key] = self._local.get(key, 0) + pending
                raise
