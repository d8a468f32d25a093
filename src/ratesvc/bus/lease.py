"""The collector lease: who may publish, with a fencing term (scripts in scripts.py).

Replication to Redis replicas is asynchronous, so a failover can lose the newest writes. Losing a
renewal is harmless (the promoted replica's copy of the lease expires sooner, and every publish is
fenced against the lease on whichever node is master). Losing an acquisition is not: the promoted
replica would hand the same term to another collector. So an acquisition counts only once every
replica online on the master acknowledged it (WAIT, on the connection that wrote it); a master
without replicas confirms at once, so a single-node Redis never waits.
"""

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


# How long an acquisition waits for the replicas' acknowledgement (WAIT timeout): a share of the
# lease time, capped (a replica this far behind is retried at the next attempt anyway).
REPLICA_WAIT_FRACTION = 0.25
REPLICA_WAIT_MAX_MS = 2_000


@dataclass(frozen=True, slots=True)
class LeaseClaim:
    """Answer to an acquisition attempt: our token, or who holds the lease and for how long.

    `confirmed` is False when the master wrote our token but not every replica online on it
    acknowledged the write in time (`acked` of `replicas`): a failover now could lose it, so the
    caller must not publish under it yet (it re-takes the same token later as `previous`).
    """

    token: LeaseToken | None
    holder: str = ""  # the lease's current value when another process holds it
    ttl_ms: int = 0  # its remaining time to live
    confirmed: bool = True
    replicas: int = 0
    acked: int = 0


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
        """Take the lease when free (new term) or still holding `previous` (same term, extended).

        A taken lease is `confirmed` once every replica online on the master acknowledged it
        within REPLICA_WAIT_FRACTION of `lease_ms` (at most REPLICA_WAIT_MAX_MS).
        """
        # One connection for all of it: WAIT waits for the writes of the connection it is sent on.
        # CLIENT ID before and after tells that no reconnect (redis-py retries) came in between.
        async with self.redis.client() as conn:
            before = await conn.client_id()
            reply = await self._acquire(
                keys=[LEASE, LEASE_TERM],
                args=[holder, lease_ms, previous.value if previous else ""],
                client=conn,
            )
            if int(reply[0]) != 1:
                return LeaseClaim(None, holder=str(reply[1]), ttl_ms=int(reply[2]))
            token, replicas = LeaseToken.parse(str(reply[1])), int(reply[2])
            if replicas == 0:
                return LeaseClaim(token)
            wait_ms = max(1, min(int(lease_ms * REPLICA_WAIT_FRACTION), REPLICA_WAIT_MAX_MS))
            acked = int(await conn.wait(replicas, wait_ms))
            same = await conn.client_id() == before
        confirmed = same and acked >= replicas
        return LeaseClaim(token, confirmed=confirmed, replicas=replicas, acked=acked)

    async def renew_lease(self, token: LeaseToken, *, lease_ms: int) -> bool:
        """Extend the lease to `lease_ms` from now, only if it still holds `token`.

        No WAIT: a renewal lost in a failover only shortens the lease on the promoted replica,
        and a slow replica must not cost a running leader its lease.
        """
        return int(await self._renew(keys=[LEASE], args=[token.value, lease_ms])) == 1

    async def release_lease(self, token: LeaseToken) -> bool:
        """Delete the lease, only if it still holds `token` (clean shutdown: instant takeover)."""
        return int(await self._release(keys=[LEASE], args=[token.value])) == 1

    async def lease_holder(self) -> LeaseToken | None:
        """Who holds the lease now (for tools and tests)."""
        raw = await self.redis.get(LEASE)
        return LeaseToken.parse(str(raw)) if raw else None
