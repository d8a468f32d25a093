"""Shared fixtures: real Redis and Postgres for integration/e2e tests, and a Settings factory.

Servers come from REDIS_URL / DATABASE_URL when set, else embedded ones started lazily, once per
session, under a temporary directory: a run of unit tests alone starts nothing.
Tests never touch a developer's data: an external Redis is used on a scratch db index (see
`redis_url`), an external Postgres through a fresh database created and dropped per session.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import pytest
import redis.asyncio as aioredis

from ratesvc.embedded import EmbeddedPostgres, EmbeddedRedis
from ratesvc.redis_url import is_sentinel_url
from ratesvc.settings import Settings

# Db index the tests use on an external Redis whose URL names db 0 (or none): keeps a shared
# server's default db safe from the per-test FLUSHDB.
REDIS_TEST_DB = 15


def redis_test_url(url: str) -> str:
    """`url` with db 0 (or no db) replaced by REDIS_TEST_DB; another explicit db is kept."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = dict(parse_qsl(parts.query))
        if query.get("db", "0") == "0":
            query["db"] = str(REDIS_TEST_DB)
        return urlunsplit(parts._replace(query=urlencode(query)))
    if parts.path.strip("/") in ("", "0"):
        return urlunsplit(parts._replace(path=f"/{REDIS_TEST_DB}"))
    return url


def normalise_postgres_url(url: str) -> str:
    """`postgresql://...` -> `postgres://...` (the form DESIGN.md fixes)."""
    return (
        "postgres://" + url.removeprefix("postgresql://") if url.startswith("postgresql:") else url
    )


def with_database(url: str, database: str) -> str:
    """`url` pointing at `database` instead of its own."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{database}"))


async def _admin(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(name="server_dir", scope="session")
def server_dir_fixture() -> Iterator[Path]:
    """A scratch directory for embedded servers (mode 0755), outside pytest's basetemp.

    As root, the embedded Postgres runs as a system user that must reach its cluster; pytest's
    basetemp and mkdtemp's directories are 0700, so a cluster there would be kept under
    /var/lib/ratesvc instead (pg_layout.py). This directory is the tests' own: opening it is
    allowed, and keeps every cluster the tests make inside it.
    """
    path = Path(tempfile.mkdtemp(prefix="ratesvc-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(name="redis_url", scope="session")
def redis_url_fixture(server_dir: Path) -> Iterator[str]:
    """REDIS_URL (on a scratch db, see redis_test_url) or an embedded Redis for the session.

    A Sentinel REDIS_URL is not used: the Sentinel tests start servers of their own
    (tests/integration/sentinel_nodes.py), and the rest need one plain server.
    """
    env_url = os.environ.get("REDIS_URL")
    if env_url and not is_sentinel_url(env_url):
        yield redis_test_url(env_url)
        return
    with EmbeddedRedis(server_dir / "redis") as server:
        yield server.url


@pytest.fixture(name="database_url", scope="session")
def database_url_fixture(server_dir: Path) -> Iterator[str]:
    """A fresh, empty database: `ratesvc_test_<hex>` on DATABASE_URL's server, else embedded.

    On an external server the database is created from the URL's own database and dropped (with
    FORCE, so lingering connections do not block it) when the session ends.
    """
    if env_url := os.environ.get("DATABASE_URL"):
        admin_url = normalise_postgres_url(env_url)
        name = f"ratesvc_test_{secrets.token_hex(4)}"
        asyncio.run(_admin(admin_url, f'CREATE DATABASE "{name}"'))
        try:
            yield with_database(admin_url, name)
        finally:
            asyncio.run(_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        return
    with EmbeddedPostgres(server_dir / "postgres", fsync=False) as server:
        yield server.url


@pytest.fixture(name="redis")
async def redis_fixture(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A `redis.asyncio.Redis` (decode_responses=True) on an empty db (FLUSHDB before the test)."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(name="make_settings")
def make_settings_fixture(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Settings]:
    """Factory: `make_settings(**overrides) -> Settings` reading neither `.env` nor the shell.

    The shell's variables for Settings fields (REDIS_URL, LOG_LEVEL, ...) are hidden while the
    object is built, so a test run with REDIS_URL/DATABASE_URL exported sees the same defaults as
    one without; pass `redis_url=redis_url` etc. explicitly where a test needs a server.
    """
    fields = {name.lower() for name in Settings.model_fields.keys()}

    def make(**overrides: Any) -> Settings:
        with monkeypatch.context() as patch:
            for key in list(os.environ):
                if key.lower() in fields:
                    patch.delenv(key)
            return Settings(_env_file=None, **overrides)  # type: ignore[call-arg]

    return make
