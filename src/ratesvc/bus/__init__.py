"""The rate bus on Redis: the ONLY package that knows Redis key names (keys.py holds them all).

Publishes ticks and source status to the stream `ratesvc:ticks` and, in the same MULTI/EXEC
pipeline (or, fenced by the collector lease, in one Lua script), to the latest-value hashes; holds
the collector lease; reads the stream for the persister (consumer group) and the API mirrors (plain
XREAD); counts metered API calls. Raises redis errors to its callers; never HTTP.

keys.py      every key and field name
codec.py     events <-> stream entries and hash values
scripts.py   the Lua scripts (lease, fenced publish, safe consumer drop)
lease.py     the collector lease and its fencing token
stream.py    publish (collector) and follow (API mirrors)
group.py     the persister's consumer group
bans.py      the ban board (a venue's ban, shared by every collector)
ledger.py    the call ledger of metered APIs (counts, schedule, last answer)
"""

from __future__ import annotations

from redis.asyncio import Redis

from ratesvc.bus.bans import BanBoard
from ratesvc.bus.codec import DECODE_ERRORS, Entry, Event, decode_entry
from ratesvc.bus.group import GroupMixin
from ratesvc.bus.keys import (
    BAN,
    CALLS,
    CALLS_TTL_S,
    DEAD_LETTER,
    DEAD_LETTER_MAXLEN,
    GROUP,
    LATEST,
    LEASE,
    LEASE_TERM,
    METERED,
    STATUS,
    STREAM,
    TERM_FIELD,
)
from ratesvc.bus.lease import FencedOut, LeaseClaim, LeaseMixin, LeaseToken
from ratesvc.bus.ledger import CallLedger
from ratesvc.bus.scripts import (
    ACQUIRE_LUA,
    DROP_CONSUMER_LUA,
    PUBLISH_LUA,
    RELEASE_LUA,
    RENEW_LUA,
)
from ratesvc.bus.stream import StreamMixin

__all__ = [
    "BAN",
    "BanBoard",
    "CALLS",
    "CALLS_TTL_S",
    "DEAD_LETTER",
    "DEAD_LETTER_MAXLEN",
    "DECODE_ERRORS",
    "GROUP",
    "LATEST",
    "LEASE",
    "LEASE_TERM",
    "METERED",
    "STATUS",
    "STREAM",
    "TERM_FIELD",
    "CallLedger",
    "Entry",
    "Event",
    "FencedOut",
    "LeaseClaim",
    "LeaseToken",
    "RateBus",
    "decode_entry",
]


class RateBus(LeaseMixin, StreamMixin, GroupMixin):
    """Typed access to the stream and hashes. `redis` must use decode_responses=True."""

    def __init__(self, redis: Redis, *, maxlen: int = 100_000) -> None:
        self.redis = redis
        self.maxlen = maxlen
        # register_script does no I/O; EVALSHA reloads a script the server lost (restart)
        self._acquire = redis.register_script(ACQUIRE_LUA)
        self._renew = redis.register_script(RENEW_LUA)
        self._release = redis.register_script(RELEASE_LUA)
        self._publish_fenced = redis.register_script(PUBLISH_LUA)
        self._drop_consumer = redis.register_script(DROP_CONSUMER_LUA)
