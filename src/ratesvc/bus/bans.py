"""The ban board: a venue's ban end, told to one collector, honoured by every collector.

Binance bans and rate-limits per IP, and the collectors of a deployment share it: a ban one of
them was told (418, a 429 with Retry-After) is posted here with a PX expiry at its end, and every
collector reads it before each request or handshake (sources/gate.py), so the deployment as a
whole draws one request during a ban, not one per collector.
"""

from __future__ import annotations

import asyncio

from loguru import logger
from redis.asyncio import Redis

from ratesvc.bus.keys import BAN
from ratesvc.bus.scripts import POST_BAN_LUA
from ratesvc.connections import REDIS_ERRORS

READ_TIMEOUT_S = 0.25  # a request must not wait long on Redis: the local gate still holds
QUIET_AFTER_ERROR_S = 5.0  # after a failed read, requests go out on the local gate alone


class BanBoard:
    """Bans by venue in Redis. Never raises and never delays a request for long: while Redis is
    unreachable each collector keeps its own gate (what it was told itself)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._post = redis.register_script(POST_BAN_LUA)
        self._quiet_until = 0.0  # loop time until which reads are skipped

    async def post(self, venue: str, *, until_s: float, hold_s: float, why: str) -> None:
        """Tell every collector: no request to `venue` until `until_s` (epoch s, `hold_s` on)."""
        hold_ms = int(hold_s * 1000)
        if hold_ms <= 0:
            return
        try:
            async with asyncio.timeout(READ_TIMEOUT_S * 4):
                await self._post(keys=[BAN + venue], args=[int(until_s * 1000), why, hold_ms])
        except (*REDIS_ERRORS, TimeoutError) as err:
            logger.bind(source=venue).warning("could not share the ban: {err}", err=err)

    async def read(self, venue: str) -> tuple[float, str] | None:
        """The ban on `venue` any collector posted: (end epoch s, why), or None."""
        loop = asyncio.get_running_loop()
        if loop.time() < self._quiet_until:
            return None
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                raw = await self.redis.get(BAN + venue)
        except (*REDIS_ERRORS, TimeoutError):
            self._quiet_until = loop.time() + QUIET_AFTER_ERROR_S
            return None
        if not raw:
            return None
        end_ms, _, why = str(raw).partition(" ")
        try:
            return int(end_ms) / 1000, why
        except ValueError:
            return None
