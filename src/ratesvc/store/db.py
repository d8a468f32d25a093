"""Postgres wiring: the Tortoise config, an open-database context, and applying aerich migrations.

Tables are created and changed ONLY by the migrations in `aerich_migrations/` (never
`generate_schemas`). To add one after changing store/models.py, with a migrated database reachable
at DATABASE_URL: ``aerich migrate --name <what_changed>`` (or ``--offline`` without a database),
then commit the new file under ``aerich_migrations/models/``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg
from aerich import Command
from loguru import logger
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.backends.base.config_generator import expand_db_url
from tortoise.context import TortoiseContext
from tortoise.exceptions import DBConnectionError, OperationalError

APP = "models"
MODELS_MODULE = "ratesvc.store.models"
# pg_advisory_lock key shared by every `ratesvc migrate`: "ratesvc" in ASCII, fits a bigint.
MIGRATION_LOCK_KEY = int.from_bytes(b"ratesvc", "big")
CONNECT_TIMEOUT_S = 10.0
POOL_MAX_SIZE = 5

# What a lost, refused or failing database raises through this package: asyncpg's own errors
# (the repository uses it raw), Tortoise's wrappers (pool creation, e.g. a missing database),
# and the socket errors of a refused or broken connection.
DB_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    DBConnectionError,
    OperationalError,
    OSError,
    TimeoutError,
)


def migrations_dir() -> Path:
    """The `aerich_migrations/` folder at the repository root (or in the working directory)."""
    beside_src = Path(__file__).resolve().parents[3] / "aerich_migrations"
    return beside_src if beside_src.is_dir() else Path.cwd() / "aerich_migrations"


def tortoise_config(database_url: str) -> dict[str, Any]:
    """Tortoise config for `database_url` (postgres://user:pass@host:port/db); app "models"

    Query parameters of the URL (``?maxsize=10&timeout=5``) override the pool defaults.
    """
    connection = expand_db_url(database_url)
    credentials = connection["credentials"]
    credentials.setdefault("timeout", CONNECT_TIMEOUT_S)  # asyncpg's default is 60 s
    credentials.setdefault("maxsize", POOL_MAX_SIZE)
    credentials.setdefault("application_name", "ratesvc")
    return {
        "connections": {"default": connection},
        "apps": {
            APP: {"models": [MODELS_MODULE, "aerich.models"], "default_connection": "default"}
        },
        "use_tz": True,
        "timezone": "UTC",
    }


@asynccontextmanager
async def open_db(database_url: str) -> AsyncIterator[BaseDBAsyncClient]:
    """Initialise Tortoise in a context of its own and yield the default connection client.

    No I/O happens here: the pool is created on first use, so a database that is down surfaces
    as DB_ERRORS from the first query, not from open_db. The ORM models work inside the block
    (and in tasks started from it); connections are closed on exit.
    """
    async with TortoiseContext() as ctx:
        await ctx.init(config=tortoise_config(database_url))
        yield ctx.db()


def connect_args(database_url: str) -> dict[str, Any]:
    """Keyword arguments for a raw `asyncpg.connect` to the same database as `database_url`."""
    credentials = expand_db_url(database_url)["credentials"]
    keys = ("host", "port", "user", "password", "database")
    args = {key: credentials[key] for key in keys if credentials.get(key) is not None}
    args["timeout"] = float(credentials.get("timeout", CONNECT_TIMEOUT_S))
    return args


async def ensure_database(database_url: str) -> bool:
    """Create the database named in `database_url` when it does not exist; True if created."""
    args = connect_args(database_url)
    try:
        conn = await asyncpg.connect(**args)
    except asyncpg.InvalidCatalogNameError:
        pass
    else:
        await conn.close()
        return False
    name = args["database"]
    admin = await asyncpg.connect(**{**args, "database": "postgres"})
    try:
        await admin.execute(f'CREATE DATABASE "{name.replace(chr(34), chr(34) * 2)}"')
    except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
        return False  # another process created it meanwhile
    finally:
        await admin.close()
    logger.info("created database {name}", name=name)
    return True


async def migrate(database_url: str, *, location: Path | None = None) -> list[str]:
    """Apply every aerich migration not yet applied; returns the applied version files.

    Idempotent (a second run applies nothing) and safe when several processes run it at once:
    they serialise on a Postgres advisory lock held on a separate session.
    """
    await ensure_database(database_url)
    lock = await asyncpg.connect(**connect_args(database_url))
    try:
        await lock.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        try:
            applied = await _upgrade(database_url, location or migrations_dir())
        finally:
            await lock.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    finally:
        await lock.close()
    for version in applied:
        logger.info("applied migration {version}", version=version)
    return applied


async def _upgrade(database_url: str, location: Path) -> list[str]:
    # A context of our own: aerich calls Tortoise.init(), which would otherwise re-initialise
    # (and close the connections of) a context the caller already has open.
    async with TortoiseContext():
        command = Command(
            tortoise_config=tortoise_config(database_url), app=APP, location=str(location)
        )
        try:
            await command.init()
            return await command.upgrade(run_in_transaction=True)
        finally:
            await command.aclose()
