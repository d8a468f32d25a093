"""The collector lease: who may publish, with a fencing term (scripts in scripts.py)."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from ratesvc.bus.keys import LEASE, LEASE_TERM
from ratesvc.errors import RatesvcError


@dataclass(frozen=True, slots=True)
class LeaseToken:
    """One acquisition of the collector lease: who holds it and its fencing term."""

    holder: str
    term: int

    @property
    def value(self) -> str:
        """The lease key's value, ``<holder>:<term>``."""
        return f"{self.holder}:{self.term}"

    @classmethod
    def parse(cls, raw: str) -> LeaseToken:
        """Inverse of `value` (the holder may itself contain ':'). Raises ValueError."""
        holder, _, term = raw.rpartition(":")
        return cls(holder, int(term))


@dataclass(frozen=True, slots=True)
class LeaseClaim:
    """Answer to an acquisition attempt: our token, or who holds the lease and for how long."""

    token: LeaseToken | None
    holder: str = ""  # the lease's current value when another process holds it
    ttl_ms: int = 0  # its remaining time to live


class FencedOut(RatesvcError):
    """A fenced publish was refused: the lease no longer holds the publisher's token."""

    def __init__(self, token: LeaseToken, holder: str) -> None:
        super().__init__(f"lease {token.value} is gone (now {holder or 'free'}); nothing written")
        self.token = token
        self.holder = holder


class LeaseMixin:
    """RateBus's lease operations."""

    redis: Redis
    _acquire: AsyncScript
    _renew: AsyncScript
    _release: AsyncScript

    async def acquire_lease(
        self, holder: str, *, lease_ms: int, previous: LeaseToken | None = None
    ) -> LeaseClaim:
        """Take the lease when free (new term) or still holding `previous` (same term, extended)."""
        reply = await self._acquire(
            keys=[LEASE, LEASE_TERM],
            args=[holder, lease_ms, previous.value if previous else ""],
        )
        if int(reply[0]) == 1:
            return LeaseClaim(LeaseToken.parse(str(reply[1])))
        return LeaseClaim(None, holder=str(reply[1]), ttl_ms=int(reply[2]))

    async def renew_lease(self, token: LeaseToken, *, lease_ms: int) -> bool:
        """Extend the lease to `lease_ms` from now, only if it still holds `token`."""
        return int(await self._renew(keys=[LEASE], args=[token.value, lease_ms])) == 1

    async def release_lease(self, token: LeaseToken) -> bool:
        """Delete the lease, only if it still holds `token` (clean shutdown: instant takeover)."""
        return int(await self._release(keys=[LEASE], args=[token.value])) == 1

    async def lease_holder(self) -> LeaseToken | None:
        """Who holds the lease now (for tools and tests)."""
        raw = await self.redis.get(LEASE)
        return LeaseToken.parse(str(raw)) if raw else None
