"""aerich migrations: applied to an empty database, idempotent, serialised, matching the models."""

from __future__ import annotations

import asyncio
import secrets
import shutil
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aerich import Command
from tortoise.context import TortoiseContext

from ratesvc.store.db import APP, connect_args, migrate, migrations_dir, open_db, tortoise_config
from ratesvc.store.models import RateRow, SourceEventRow

pytestmark = pytest.mark.integration


def version_files() -> list[str]:
    """The committed migration files, in the order aerich applies them."""
    names = [p.name for p in (migrations_dir() / APP).glob("*.py") if p.name[0].isdigit()]
    return sorted(names, key=lambda name: int(name.split("_", 1)[0]))


@pytest.fixture(name="empty_url")
async def empty_url_fixture(database_url: str) -> AsyncIterator[str]:
    """URL of a database that does not exist yet on the test server; dropped afterwards."""
    name = f"ratesvc_mig_{secrets.token_hex(4)}"
    yield urlunsplit(urlsplit(database_url)._replace(path=f"/{name}"))
    admin = await asyncpg.connect(**connect_args(database_url))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def table_names(url: str) -> set[str]:
    """Tables of the public schema."""
    conn = await asyncpg.connect(**connect_args(url))
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await conn.close()
    return {row["tablename"] for row in rows}


async def test_migrate_creates_the_database_and_tables_then_applies_nothing(empty_url: str) -> None:
    """First run creates everything from nothing; the second run is a no-op."""
    assert version_files(), "aerich_migrations/models/ holds no migration"

    assert await migrate(empty_url) == version_files()

    assert {"rate_tick", "source_event", "rate_candle", "aerich"} <= await table_names(empty_url)
    assert not await migrate(empty_url)


async def test_concurrent_migrations_apply_each_version_once(empty_url: str) -> None:
    """Three migrators at once serialise on the advisory lock: one applies, two find nothing."""
    results = await asyncio.gather(*(migrate(empty_url) for _ in range(3)))

    assert sorted(results, key=len) == [[], [], version_files()]


async def test_models_round_trip_through_the_migrated_schema(empty_url: str) -> None:
    """The ORM models read and write the tables the migrations created, column for column."""
    await migrate(empty_url)
    legs = [["binance", "BTC/USDT", "64000.5", 1_000, 5_000]]
    async with open_db(empty_url):
        row = await RateRow.create(
            tick_id="a" * 32,
            exchanger="binance",
            direction="BTC-USD",
            value=Decimal("64000.12345678"),
            ts_ms=1_700_000_000_000,
            transport="ws",
            legs=legs,
            stream_id="1700000000000-0",
        )
        await SourceEventRow.create(
            source="binance", state="up", transport="ws", reason="", ts_ms=1, stream_id="1-0"
        )
        loaded = await RateRow.get(id=row.id)
        event = await SourceEventRow.get(stream_id="1-0")
    assert (loaded.tick_id, loaded.value, loaded.legs) == (
        "a" * 32,
        Decimal("64000.12345678"),
        legs,
    )
    assert loaded.created_at is not None and event.state == "up"


async def test_models_have_no_changes_pending_a_migration(tmp_path: Path) -> None:
    """aerich finds nothing to migrate: the last migration's state equals the models."""
    location = tmp_path / "migrations"
    shutil.copytree(migrations_dir(), location)
    config = tortoise_config("postgres://postgres@127.0.0.1:1/offline")  # never connected
    async with TortoiseContext():
        command = Command(tortoise_config=config, app=APP, location=str(location))
        try:
            await command.init(offline=True)
            generated = await command.migrate("pending", no_input=True, offline=True)
        finally:
            await command.aclose()

    assert (
        generated == ""
    ), f"models changed without a migration: run `aerich migrate` ({generated})"
