"""connections.redis_client: one factory for both REDIS_URL forms (no I/O until first use)."""

from redis.asyncio import Redis
from redis.asyncio.sentinel import MasterNotFoundError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MasterDownError, ReadOnlyError

from ratesvc.connections import REDIS_ERRORS, SENTINEL_TIMEOUT_S, SentinelRedis, redis_client


async def test_a_sentinel_url_gives_a_client_of_the_services_master():
    client = redis_client(
        "redis+sentinel://:data-pw@127.0.0.1:26379,127.0.0.1:26380/ratesvc/2",
        sentinel_password="sentinel-pw",
    )
    try:
        assert isinstance(client, SentinelRedis) and client.sentinel is not None
        pool = client.connection_pool
        assert pool.service_name == "ratesvc" and pool.is_master
        # the URL's password and db are the data nodes'; the sentinels get their own password
        assert pool.connection_kwargs["password"] == "data-pw"
        assert pool.connection_kwargs["db"] == 2
        assert pool.connection_kwargs["decode_responses"] is True
        sentinels = [s.connection_pool.connection_kwargs for s in client.sentinel.sentinels]
        assert [(s["host"], s["port"]) for s in sentinels] == [
            ("127.0.0.1", 26379),
            ("127.0.0.1", 26380),
        ]
        assert {s["password"] for s in sentinels} == {"sentinel-pw"}
        assert {s["socket_timeout"] for s in sentinels} == {SENTINEL_TIMEOUT_S}
    finally:
        await client.aclose()
    assert client.sentinel is None


async def test_a_plain_url_gives_a_plain_client():
    client = redis_client("redis://:pw@127.0.0.1:6379/4")
    try:
        assert type(client) is Redis  # pylint: disable=unidiomatic-typecheck
        assert client.connection_pool.connection_kwargs["db"] == 4
    finally:
        await client.aclose()


def test_what_a_failover_raises_counts_as_redis_unavailable():
    # no master named yet / a demoted master / a replica that lost its master / a dead node
    raised = (
        MasterNotFoundError(),
        ReadOnlyError(),
        MasterDownError("down"),
        RedisConnectionError(),
    )
    assert all(isinstance(err, REDIS_ERRORS) for err in raised)
