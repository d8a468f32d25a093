"""Leadership: which collector publishes, decided by the Redis lease (bus.acquire/renew/release).

The holder renews every lease_ms/3 and trusts its lease locally only until LOCAL_VALIDITY of the
lease time has passed since the last successful renewal was SENT (so it stops before Redis expires
the key); the fenced publish (bus/stream.py) guarantees it, this only stops pointless attempts.
A standby retries the acquisition when the holder's lease is due to expire. An acquisition the
Redis replicas did not acknowledge (bus/lease.py: a failover could hand its term out again) is
kept pending, not led with: it is re-taken, same term, until they do. Knows no key names.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from loguru import logger

from ratesvc import metrics
from ratesvc.bus import LeaseClaim, LeaseToken
from ratesvc.connections import REDIS_ERRORS
from ratesvc.errors import describe

LOCAL_VALIDITY = 0.9  # headroom for clock-rate differences between us and Redis


def default_holder() -> str:
    """``<hostname>-<pid>``: unique per process, the default COLLECTOR_ID."""
    return f"{socket.gethostname()}-{os.getpid()}"


class LeaseStore(Protocol):
    """The lease operations of RateBus (fakes in unit tests)."""

    async def acquire_lease(
        self, holder: str, *, lease_ms: int, previous: LeaseToken | None = None
    ) -> LeaseClaim:
        """Take the lease if free, or extend it if it still holds `previous`."""

    async def renew_lease(self, token: LeaseToken, *, lease_ms: int) -> bool:
        """Extend the lease only if it still holds `token`."""

    async def release_lease(self, token: LeaseToken) -> bool:
        """Delete the lease only if it still holds `token`."""


class LeaseListener(Protocol):
    """What the collector does when leadership changes (see workers/collector.py)."""

    def on_gain(self, token: LeaseToken, *, continues: bool) -> None:
        """We hold the lease; `continues`: no other process held it since our last term."""

    def on_loss(self, token: LeaseToken, reason: str) -> None:
        """We may no longer publish under `token`."""

    def on_superseded(self, holder: str) -> None:
        """Another process holds the lease: what we buffered can never be published."""


class Leadership:
    """Acquires and renews the collector lease for `holder` and reports changes to `listener`.

    `token()` is the fence to publish with, or None when this process is not (or no longer
    provably) the leader. `clock` (monotonic seconds) and `sleep` are injectable for tests.
    """

    def __init__(  # pylint: disable=too-many-arguments
        self,
        store: LeaseStore,
        holder: str,
        *,
        lease_ms: int,
        listener: LeaseListener,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.store = store
        self.holder = holder
        self.lease_ms = lease_ms
        self.listener = listener
        self.clock = clock
        self.sleep = sleep
        self._token: LeaseToken | None = None
        self._last: LeaseToken | None = None  # the last token we held (continuity check)
        self._pending: LeaseToken | None = None  # taken on the master, not yet on its replicas
        self._valid_until = 0.0
        self._superseded = False
        self.log = logger.bind(role="collector", holder=holder)

    @property
    def interval_s(self) -> float:
        """Renewal period: a third of the lease, so two renewals may fail before it expires."""
        return self.lease_ms / 3000

    def token(self) -> LeaseToken | None:
        """The lease token while it is locally valid; loses leadership at once when it is not."""
        if self._token is not None and self.clock() >= self._valid_until:
            self._lose("lease expired before it could be renewed (redis unreachable?)")
        return self._token

    def is_leader(self) -> bool:
        """True while this process may publish."""
        return self.token() is not None

    def fenced(self, token: LeaseToken, reason: str) -> None:
        """A publish with `token` was refused: if it is still our current one, stop publishing."""
        if self._token is not None and self._token == token:
            self._lose(reason)

    async def run(self, stop: asyncio.Event) -> None:
        """Acquire or renew until `stop` is set; the caller releases with `release()` after."""
        while not stop.is_set():
            try:
                delay_s = await self.step()
            except Exception:  # pylint: disable=broad-exception-caught
                # an unexpected reply (e.g. a read-only replica) must not end leadership attempts
                self.log.exception("lease attempt failed unexpectedly")
                self.token()
                delay_s = self.interval_s
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay_s)
            except TimeoutError:
                pass

    async def step(self) -> float:
        """One acquisition or renewal attempt; returns seconds until the next one."""
        try:
            if self.token() is None:
                return await self._try_acquire()
            return await self._renew()
        except REDIS_ERRORS as err:
            self.token()  # re-check validity: the attempt may have taken a while
            self.log.debug("lease attempt failed: {err}", err=describe(err))
            return self.interval_s * random.uniform(0.5, 1.0)

    async def release(self) -> None:
        """Give the lease up (clean shutdown) so a standby can take over at once."""
        token, self._token = self._token or self._pending, None
        self._pending = None
        if token is None:
            return
        metrics.COLLECTOR_LEADER.set(0)
        try:
            async with asyncio.timeout(self.lease_ms / 1000):
                await self.store.release_lease(token)
            self.log.info("released the collector lease (term {term})", term=token.term)
        except REDIS_ERRORS as err:
            self.log.warning("could not release the lease, it expires by itself: {err}", err=err)

    async def _try_acquire(self) -> float:
        sent = self.clock()
        async with asyncio.timeout(self.lease_ms / 1000):
            claim = await self.store.acquire_lease(
                self.holder, lease_ms=self.lease_ms, previous=self._pending or self._last
            )
        if claim.token is not None and not claim.confirmed:
            self._unconfirmed(claim)
            return self.interval_s
        self._pending = None
        if claim.token is None:
            if not self._superseded:
                self._superseded = True
                self.log.info("standing by: {holder} holds the lease", holder=claim.holder)
                self.listener.on_superseded(claim.holder)
            # retry when the holder's lease would expire, but at least every interval
            ttl_s = claim.ttl_ms / 1000 if claim.ttl_ms > 0 else self.interval_s
            return min(ttl_s + 0.005, self.interval_s)
        self._gain(claim.token, sent)
        return self.interval_s

    async def _renew(self) -> float:
        token = self._token
        assert token is not None
        sent = self.clock()
        async with asyncio.timeout(max(self._valid_until - sent, 0.001)):
            renewed = await self.store.renew_lease(token, lease_ms=self.lease_ms)
        if self._token != token:
            return 0.0  # lost while the renewal was in flight
        if not renewed:
            self._lose("the lease is no longer ours")
            return 0.0
        self._valid_until = sent + self.lease_ms / 1000 * LOCAL_VALIDITY
        return self.interval_s

    def _unconfirmed(self, claim: LeaseClaim) -> None:
        assert claim.token is not None
        metrics.COLLECTOR_LEASE_UNCONFIRMED.inc()
        if self._pending != claim.token:
            self.log.warning(
                "took the lease as term {term}, but only {acked} of {n} redis replicas "
                "acknowledged it: not publishing until they do (a failover could lose it)",
                term=claim.token.term,
                acked=claim.acked,
                n=claim.replicas,
            )
        self._pending = claim.token

    def _gain(self, token: LeaseToken, sent: float) -> None:
        last = self._last
        # terms only grow on acquisitions: ours again, or the very next one, means nobody else
        # published since our last term, so what we buffered meanwhile may follow in order
        continues = last is not None and not self._superseded and token.term - last.term in (0, 1)
        self._token, self._last, self._superseded = token, token, False
        self._valid_until = sent + self.lease_ms / 1000 * LOCAL_VALIDITY
        metrics.COLLECTOR_LEADER.set(1)
        metrics.COLLECTOR_LEASE_TERM.set(token.term)
        if last is None or token.term != last.term:
            metrics.COLLECTOR_TAKEOVERS.inc()
        self.log.info(
            "acquired the collector lease: publishing as term {term}{cont}",
            term=token.term,
            cont=" (continuing)" if continues else "",
        )
        self.listener.on_gain(token, continues=continues)

    def _lose(self, reason: str) -> None:
        token, self._token = self._token, None
        if token is None:
            return
        metrics.COLLECTOR_LEADER.set(0)
        self.log.info(
            "lost the collector lease (term {term}): {reason}", term=token.term, reason=reason
        )
        self.listener.on_loss(token, reason)
