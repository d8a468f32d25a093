"""Cold start: Redis flushed and every exchange down, the last values come from Postgres."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
import redis as redis_sync

from tests.e2e.harness import (
    Service,
    Sim,
    all_served,
    numeric,
    service_env,
    start_service,
    wait_until,
)

pytestmark = pytest.mark.e2e


async def _rows_per_key(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchval(
            "SELECT count(*) FROM (SELECT DISTINCT exchanger, direction FROM rate_tick) AS k"
        )
    finally:
        await conn.close()


def test_restart_with_redis_flushed_and_exchanges_down_serves_the_last_values_from_postgres(
    service: Service, sim: Sim, redis_url: str, database_url: str, tmp_path_factory
) -> None:
    for exchanger in ("binance", "coingecko"):
        wait_until(lambda e=exchanger: all_served(service, e), what=f"{exchanger} values")
    wait_until(lambda: asyncio.run(_rows_per_key(database_url)) == 16, what="16 keys persisted")
    before = {e: service.values(e) for e in ("binance", "coingecko")}
    assert service.proc.stop(strict=True) == 0
    for target in ("binance_ws", "binance_rest", "coingecko"):
        sim.fault(target, "refuse")
    redis_sync.Redis.from_url(redis_url).flushdb()
    workdir = tmp_path_factory.mktemp("restart")
    try:
        restarted = start_service(
            service_env(sim, redis_url, database_url, workdir / "data"), workdir
        )
        try:
            wait_until(
                lambda: restarted.courses(exchanger="coingecko").status_code == 200,
                what="values from postgres",
            )
            after = {e: restarted.values(e) for e in ("binance", "coingecko")}
            assert {e: numeric(v) for e, v in after.items()} == {
                e: numeric(v) for e, v in before.items()
            }
            assert restarted.http.get("/ready").status_code == 200
        finally:
            restarted.proc.stop(strict=True)
    finally:
        sim.clear()
