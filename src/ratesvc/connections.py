"""Connections to Redis: the one place that builds clients, for every role, with retry and a ping.

REDIS_URL is a plain URL (redis://, rediss://, unix://: one server) or the Sentinel form
(redis+sentinel://, see redis_url.py): a client of whichever node the sentinels name master now,
re-asking them on every new connection, so a client follows a failover by reconnecting. The
password inside a Sentinel URL authenticates to the data nodes (master and replicas); the
sentinels get `sentinel_password` (REDIS_SENTINEL_PASSWORD) or none, because a sentinel without
`requirepass` refuses an AUTH.
"""

from __future__ import annotations

import asyncio

from loguru import logger
from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MasterDownError, ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ratesvc.redis_url import is_sentinel_url, parse_sentinel_url

# "Redis is unavailable, retry later" for every role. ConnectionError covers a refused or broken
# connection, BusyLoadingError (a node loading its data) and MasterNotFoundError (no sentinel names
# a healthy master: a failover is under way). ReadOnlyError: the node we reached was demoted to a
# replica (a Sentinel client turns it into a ConnectionError and reconnects; a plain URL pointing
# at a replica gets it as is). MasterDownError: a replica that lost its master refuses reads.
REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, MasterDownError, OSError)

# Each query to one sentinel (connect and reply): a dead sentinel host costs this much once, then
# redis-py asks the one that answered first.
SENTINEL_TIMEOUT_S = 1.0


# Redis is made of ~30 command mixins, some declaring server commands abstract: nothing to add.
class SentinelRedis(Redis):  # pylint: disable=too-many-ancestors,abstract-method
    """A client of a Sentinel service's current master; closing it closes the sentinel clients."""

    sentinel: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        sentinel, self.sentinel = self.sentinel, None
        if sentinel is not None:
            await sentinel.aclose()


def redis_client(
    url: str, *, timeout_s: float = 5.0, sentinel_password: str | None = None
) -> Redis:
    """A decoded-responses client for `url` (plain or Sentinel form); no I/O until first use."""
    options = {
        "decode_responses": True,
        "socket_connect_timeout": timeout_s,
        "socket_timeout": None,  # blocking XREAD/XREADGROUP wait longer than any fixed timeout
        "health_check_interval": 15,
    }
    if not is_sentinel_url(url):
        return Redis.from_url(url, retry_on_timeout=False, **options)
    target = parse_sentinel_url(url)
    sentinel = Sentinel(
        list(target.sentinels),
        sentinel_kwargs={
            "password": sentinel_password,
            "socket_connect_timeout": SENTINEL_TIMEOUT_S,
            "socket_timeout": SENTINEL_TIMEOUT_S,
        },
        db=target.db,
        username=target.username,
        password=target.password,
        **options,
    )
    # No retries inside redis-py: a command that fails during a failover raises at once and the
    # role's own loop (outbox, persister, mirror, lease) backs off and reconnects, which re-asks
    # the sentinels for the master.
    client = sentinel.master_for(target.service, redis_class=SentinelRedis)
    client.sentinel = sentinel
    return client


async def connect_redis(
    url: str, *, attempts: int = 30, delay_s: float = 0.5, sentinel_password: str | None = None
) -> Redis:
    """Build a client and ping it, retrying `attempts` times (the server may still be starting)."""
    client = redis_client(url, sentinel_password=sentinel_password)
    for attempt in range(1, attempts + 1):
        try:
            await client.ping()
            return client
        except REDIS_ERRORS as err:
            if attempt == attempts:
                await client.aclose()
                raise
            logger.warning(
                "redis not reachable ({err}); retry {n}/{total}", err=err, n=attempt, total=attempts
            )
            await asyncio.sleep(delay_s)
    raise AssertionError("unreachable")
