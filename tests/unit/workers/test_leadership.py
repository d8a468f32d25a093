"""Leadership: acquire, renew, lose, stand by, regain the collector lease (fake store and clock)."""

from __future__ import annotations

from prometheus_client import REGISTRY
from redis.exceptions import ConnectionError as RedisConnectionError

from ratesvc.bus import LeaseClaim, LeaseToken
from ratesvc.workers.lease import LOCAL_VALIDITY, Leadership

LEASE_MS = 3_000


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class FakeStore:
    """The lease as Redis holds it, expiring on the shared fake clock."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.value: str | None = None
        self.expires_at = 0.0
        self.term = 0
        self.down = False
        self.replicas_ack = True  # False: the replicas do not acknowledge an acquisition
        self.released: list[LeaseToken] = []

    def _current(self) -> str | None:
        if self.value is not None and self.clock() >= self.expires_at:
            self.value = None
        return self.value

    def _check(self) -> None:
        if self.down:
            raise RedisConnectionError("down")

    def grab(self, holder: str, *, ttl_s: float = 60.0) -> LeaseToken:
        """Another process acquires the lease (a new term)."""
        self.term += 1
        token = LeaseToken(holder, self.term)
        self.value, self.expires_at = token.value, self.clock() + ttl_s
        return token

    async def acquire_lease(
        self, holder: str, *, lease_ms: int, previous: LeaseToken | None = None
    ) -> LeaseClaim:
        self._check()
        current = self._current()
        if current is not None:
            if previous is not None and current == previous.value:
                self.expires_at = self.clock() + lease_ms / 1000
                return self._claim(previous)
            ttl_ms = int((self.expires_at - self.clock()) * 1000)
            return LeaseClaim(None, holder=current, ttl_ms=ttl_ms)
        return self._claim(self.grab(holder, ttl_s=lease_ms / 1000))

    def _claim(self, token: LeaseToken) -> LeaseClaim:
        acked = 1 if self.replicas_ack else 0
        return LeaseClaim(token, confirmed=self.replicas_ack, replicas=1, acked=acked)

    async def renew_lease(self, token: LeaseToken, *, lease_ms: int) -> bool:
        self._check()
        if self._current() != token.value:
            return False
        self.expires_at = self.clock() + lease_ms / 1000
        return True

    async def release_lease(self, token: LeaseToken) -> bool:
        self._check()
        self.released.append(token)
        if self._current() == token.value:
            self.value = None
            return True
        return False


class Listener:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def on_gain(self, token: LeaseToken, *, continues: bool) -> None:
        self.calls.append(("gain", token.term, continues))

    def on_loss(self, token: LeaseToken, reason: str) -> None:
        self.calls.append(("loss", token.term))
        assert reason

    def on_superseded(self, holder: str) -> None:
        self.calls.append(("superseded", holder))


def make(holder: str = "alpha"):
    clock = Clock()
    store, listener = FakeStore(clock), Listener()
    leadership = Leadership(store, holder, lease_ms=LEASE_MS, listener=listener, clock=clock)
    return leadership, store, listener, clock


async def test_a_free_lease_is_acquired_as_a_fresh_term():
    leadership, store, listener, _ = make()
    delay_s = await leadership.step()
    assert leadership.token() == LeaseToken("alpha", 1) and leadership.is_leader()
    assert store.value == "alpha:1"
    assert listener.calls == [("gain", 1, False)]
    assert delay_s == leadership.interval_s == LEASE_MS / 3000


async def test_the_leader_renews_and_stays_leader_across_many_lease_times():
    leadership, store, listener, clock = make()
    await leadership.step()
    for _ in range(20):
        clock.now += leadership.interval_s
        await leadership.step()
    assert leadership.is_leader() and store.value == "alpha:1"
    assert listener.calls == [("gain", 1, False)]


async def test_a_standby_waits_for_the_holders_lease_and_is_told_once():
    leadership, store, listener, clock = make("bravo")
    store.grab("alpha", ttl_s=0.4)
    first = await leadership.step()
    second = await leadership.step()
    assert not leadership.is_leader()
    assert listener.calls == [("superseded", "alpha:1")]
    assert 0.4 <= first <= 0.41 and second <= leadership.interval_s
    clock.now += 0.4  # alpha died: its lease runs out
    await leadership.step()
    assert leadership.token() == LeaseToken("bravo", 2)
    assert listener.calls[-1] == ("gain", 2, False)


async def test_a_renewal_refused_loses_at_once_and_the_new_holder_means_no_continuation():
    leadership, store, listener, clock = make()
    await leadership.step()
    store.grab("intruder", ttl_s=2.0)
    clock.now += leadership.interval_s
    await leadership.step()
    assert not leadership.is_leader()
    await leadership.step()
    clock.now += 2.0
    await leadership.step()
    assert leadership.token() == LeaseToken("alpha", 3)
    assert listener.calls == [
        ("gain", 1, False),
        ("loss", 1),
        ("superseded", "intruder:2"),
        ("gain", 3, False),
    ]


async def test_redis_unreachable_past_the_local_validity_loses_then_the_next_term_continues():
    leadership, store, listener, clock = make()
    await leadership.step()
    store.down = True
    clock.now += leadership.interval_s
    await leadership.step()  # renewal fails, but the lease is still valid here
    assert leadership.is_leader()
    clock.now = 1_000.0 + LEASE_MS / 1000 * LOCAL_VALIDITY
    assert leadership.token() is None  # stops before Redis would expire the key
    clock.now += 5.0  # ... which it has by the time Redis is back
    store.down = False
    await leadership.step()
    assert leadership.token() == LeaseToken("alpha", 2)
    assert listener.calls == [("gain", 1, False), ("loss", 1), ("gain", 2, True)]


async def test_a_lease_still_holding_our_token_is_taken_back_in_the_same_term():
    leadership, store, listener, clock = make()
    await leadership.step()
    store.down = True
    clock.now += LEASE_MS / 1000 * LOCAL_VALIDITY
    assert not leadership.is_leader()
    store.down = False  # back before Redis expired the key: still "alpha:1"
    await leadership.step()
    assert leadership.token() == LeaseToken("alpha", 1)
    assert listener.calls == [("gain", 1, False), ("loss", 1), ("gain", 1, True)]


async def test_a_term_taken_and_given_up_by_another_process_in_between_breaks_continuity():
    leadership, store, listener, clock = make()
    await leadership.step()
    clock.now += LEASE_MS / 1000  # paused past the lease
    assert not leadership.is_leader()
    store.grab("bravo", ttl_s=0.1)  # bravo's term 2, expired before we look again
    clock.now += 0.1
    await leadership.step()
    assert leadership.token() == LeaseToken("alpha", 3)
    assert listener.calls[-1] == ("gain", 3, False)


async def test_a_fenced_refusal_loses_only_for_the_current_token():
    leadership, _, listener, _ = make()
    await leadership.step()
    leadership.fenced(LeaseToken("alpha", 0), "refused")  # an old in-flight publish
    assert leadership.is_leader()
    leadership.fenced(LeaseToken("alpha", 1), "refused")
    assert not leadership.is_leader()
    assert listener.calls == [("gain", 1, False), ("loss", 1)]


async def test_release_gives_the_lease_up_for_an_instant_takeover():
    leadership, store, _, _ = make()
    await leadership.step()
    await leadership.release()
    assert store.value is None and store.released == [LeaseToken("alpha", 1)]
    assert not leadership.is_leader()
    await leadership.release()  # idempotent
    assert store.released == [LeaseToken("alpha", 1)]


async def test_release_while_redis_is_down_leaves_the_lease_to_expire():
    leadership, store, _, _ = make()
    await leadership.step()
    store.down = True
    await leadership.release()
    assert not leadership.is_leader() and store.value == "alpha:1"


def unconfirmed_total() -> float:
    return REGISTRY.get_sample_value("ratesvc_collector_lease_unconfirmed_total") or 0.0


async def test_an_acquisition_the_replicas_did_not_acknowledge_is_not_led_with():
    leadership, store, listener, clock = make()
    store.replicas_ack = False
    before = unconfirmed_total()
    for _ in range(5):  # however long the replicas lag, and past the lease time
        await leadership.step()
        assert not leadership.is_leader() and leadership.token() is None
        clock.now += leadership.interval_s
    assert not listener.calls and unconfirmed_total() == before + 5
    # the same term is kept (re-taken as ours), so no other collector gets the lease meanwhile
    assert store.value == "alpha:1" and store.term == 1

    store.replicas_ack = True  # the replicas caught up
    await leadership.step()
    assert leadership.token() == LeaseToken("alpha", 1)
    assert listener.calls == [("gain", 1, False)]


async def test_a_pending_acquisition_lost_to_another_holder_stands_by():
    leadership, store, listener, clock = make()
    store.replicas_ack = False
    await leadership.step()
    clock.now += LEASE_MS / 1000  # the pending lease expired (e.g. a failover lost it)
    store.grab("bravo")
    await leadership.step()
    assert not leadership.is_leader()
    assert listener.calls == [("superseded", "bravo:2")]


async def test_release_gives_up_a_pending_acquisition_too():
    leadership, store, _, _ = make()
    store.replicas_ack = False
    await leadership.step()
    await leadership.release()
    assert store.value is None and store.released == [LeaseToken("alpha", 1)]


def test_lease_tokens_round_trip_holders_with_colons():
    token = LeaseToken("host:1234", 7)
    assert token.value == "host:1234:7"
    assert LeaseToken.parse(token.value) == token
