"""Connections to Redis: one place that builds clients, with bounded retry and a ping."""

from __future__ import annotations

import asyncio

from loguru import logger
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)


def redis_client(url: str, *, timeout_s: float = 5.0) -> Redis:
    """A decoded-responses client for `url`; no I/O until first use."""
    return Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=timeout_s,
        socket_timeout=None,  # blocking XREAD/XREADGROUP wait longer than any fixed timeout
        health_check_interval=15,
        retry_on_timeout=False,
    )


async def connect_redis(url: str, *, attempts: int = 30, delay_s: float = 0.5) -> Redis:
    """Build a client and ping it, retrying `attempts` times (the server may still be starting)."""
    client = redis_client(url)
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
