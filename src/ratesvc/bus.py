"""The rate bus on Redis: the ONLY module that knows Redis key names.

Publishes ticks and source status to the stream `ratesvc:ticks` and, in the same MULTI/EXEC
pipeline (or, fenced by the collector lease, in one Lua script), to the latest-value hashes; holds
the collector lease; reads the stream for the persister (consumer group) and the API mirrors (plain
XREAD). Raises redis errors to its callers; never HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import orjson
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from ratesvc.connections import REDIS_ERRORS
from ratesvc.domain import RateTick, SourceStatus, event_from_fields
from ratesvc.errors import RatesvcError

STREAM = "ratesvc:ticks"
DEAD_LETTER = "ratesvc:ticks:dead"
LATEST = "ratesvc:latest"  # hash: "exchanger:direction" -> tick fields as JSON
STATUS = "ratesvc:status"  # hash: source -> status fields as JSON
GROUP = "persister"
LEASE = "ratesvc:collector:lease"  # string "<holder>:<term>" with a PX expiry: the publisher
LEASE_TERM = "ratesvc:collector:term"  # counter: INCR on every acquisition = the fencing term
CALLS = "ratesvc:calls:"  # + "<source>:<YYYY-MM>": budgeted API calls made by every collector
CALLS_TTL_S = 40 * 24 * 3600  # a month's counter outlives its month, then goes
TERM_FIELD = "term"  # stream field: the lease term a fenced publish was made under

Event = RateTick | SourceStatus
# What decoding a junk entry may raise (missing fields, bad numbers, malformed legs).
DECODE_ERRORS = (KeyError, ValueError, ArithmeticError, TypeError, IndexError)
Entry = tuple[str, dict[str, str]]  # (stream id, raw fields)


def _json(fields: dict[str, str]) -> str:
    return orjson.dumps(fields).decode()


def _unjson(raw: str | bytes) -> dict[str, str]:
    return orjson.loads(raw)


# Acquire: free -> INCR the term and SET the lease; still ours (ARGV[3]) -> extend it, same term;
# held by another -> {0, value, pttl}. One script, so a term is never burnt on a lost race.
_ACQUIRE_LUA = """
local current = redis.call('GET', KEYS[1])
if current then
  if current == ARGV[3] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {1, current}
  end
  return {0, current, redis.call('PTTL', KEYS[1])}
end
local token = ARGV[1] .. ':' .. redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token, 'PX', ARGV[2])
return {1, token}
"""
_RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
# Fenced publish. KEYS: lease, stream, latest hash, status hash. ARGV: token, maxlen, term, then per
# event: hash ('t' latest / 's' status), hash field, hash value, n, n field/value pairs.
# Refuses ({0, current holder}) unless the lease still holds exactly our token: the check and the
# writes are one atomic script, so an old leader can never write after a new term began.
_PUBLISH_LUA = """
local current = redis.call('GET', KEYS[1])
if current ~= ARGV[1] then
  return {0, current or ''}
end
local out = {1}
local i = 4
while i <= #ARGV do
  local n = tonumber(ARGV[i + 3])
  local entry = {}
  for j = 1, 2 * n do
    entry[j] = ARGV[i + 3 + j]
  end
  entry[2 * n + 1] = 'term'
  entry[2 * n + 2] = ARGV[3]
  out[#out + 1] = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(entry))
  local hash = KEYS[3]
  if ARGV[i] == 's' then
    hash = KEYS[4]
  end
  redis.call('HSET', hash, ARGV[i + 1], ARGV[i + 2])
  i = i + 4 + 2 * n
end
return out
"""

# Deletes a consumer of the group only if nothing is pending for it: checked and done atomically,
# because XGROUP DELCONSUMER drops the consumer's pending entries with it (they would never be
# persisted). Returns 1 when deleted.
_DROP_CONSUMER_LUA = """
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then
  return 0
end
return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2]) and 1
"""


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


class RateBus:
    """Typed access to the stream and hashes. `redis` must use decode_responses=True."""

    def __init__(self, redis: Redis, *, maxlen: int = 100_000) -> None:
        self.redis = redis
        self.maxlen = maxlen
        # register_script does no I/O; EVALSHA reloads a script the server lost (restart)
        self._acquire = redis.register_script(_ACQUIRE_LUA)
        self._renew = redis.register_script(_RENEW_LUA)
        self._release = redis.register_script(_RELEASE_LUA)
        self._publish_fenced = redis.register_script(_PUBLISH_LUA)
        self._drop_consumer = redis.register_script(_DROP_CONSUMER_LUA)

    # ---------------------------------------------------------------- collector lease
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

    # ---------------------------------------------------------------- publish side (collector)
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
                    pipe.hset(LATEST, event.key, _json(event.to_fields()))
                else:
                    pipe.hset(STATUS, event.source, _json(event.to_fields()))
            results = await pipe.execute()
        return [str(r) for r in results[: len(events)]]

    async def _publish_with_fence(self, events: Sequence[Event], fence: LeaseToken) -> list[str]:
        args: list[str | int] = [fence.value, self.maxlen, fence.term]
        for event in events:
            fields = event.to_fields()
            if isinstance(event, RateTick):
                args += ["t", event.key, _json(fields)]
            else:
                args += ["s", event.source, _json(fields)]
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
            written += int(await self.redis.hsetnx(LATEST, tick.key, _json(tick.to_fields())))
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
                ticks.append(RateTick.from_fields(_unjson(raw)))
            except DECODE_ERRORS:
                continue
        for raw in (await self.redis.hgetall(STATUS)).values():
            try:
                statuses.append(SourceStatus.from_fields(_unjson(raw)))
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
                out.append((str(entry_id), _decode_event(fields)))
        return out

    # ---------------------------------------------------------------- consumer group (persister)
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
        """Move a poison entry to the dead-letter stream and ack it, atomically."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(DEAD_LETTER, {**fields, "_origin_id": entry_id, "_reason": reason[:500]})
            pipe.xack(STREAM, GROUP, entry_id)
            await pipe.execute()

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

    async def group_info(self) -> tuple[int, int]:
        """(stream length, entries pending in the persister group) for metrics."""
        length = int(await self.redis.xlen(STREAM))
        try:
            pending = await self.redis.xpending(STREAM, GROUP)
        except ResponseError:
            return length, 0
        return length, int(pending["pending"])


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


def decode_entry(fields: dict[str, str]) -> Event:
    """Decode one raw stream entry. Raises one of DECODE_ERRORS on junk."""
    return event_from_fields(fields)


def _decode_event(fields: dict[str, str] | None) -> Event | None:
    if not fields:
        return None
    try:
        return event_from_fields(fields)
    except DECODE_ERRORS:
        return None
