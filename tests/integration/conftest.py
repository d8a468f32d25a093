"""Store fixtures: the session database migrated once, and per test a clean, open database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from tortoise.backends.base.client import BaseDBAsyncClient

from ratesvc.store.db import migrate, open_db
from ratesvc.store.repository import RateRepository


@pytest.fixture(name="migrated_url", scope="session")
def migrated_url_fixture(database_url: str) -> str:
    """`database_url` with every aerich migration applied (once per session)."""
    asyncio.run(migrate(database_url))
    return database_url


@pytest.fixture(name="db")
async def db_fixture(migrated_url: str) -> AsyncIterator[BaseDBAsyncClient]:
    """The open, migrated database with rate_tick and source_event emptied."""
    async with open_db(migrated_url) as client:
        await client.execute_script(
            "TRUNCATE rate_tick, source_event, rate_candle RESTART IDENTITY"
        )
        yield client


@pytest.fixture(name="repo")
def repo_fixture(db: BaseDBAsyncClient) -> RateRepository:
    """A RateRepository on the clean database."""
    return RateRepository(db)
