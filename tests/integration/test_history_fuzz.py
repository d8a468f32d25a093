"""Schemathesis fuzzes /v2/history and `at=` on /v2/courses and /courses (with `Accept-Version:
2`) against /openapi.json, on a real Postgres holding a day of ticks and candles
(tests/unit/api/test_schema_fuzz.py fuzzes every route without Postgres)."""

# pylint: disable=missing-function-docstring

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.config import SchemathesisConfig

from ratesvc.api.app import create_app, worker_app
from ratesvc.api.mirror import RateMirror
from ratesvc.domain import DIRECTIONS, EXCHANGERS, Leg, RateTick
from ratesvc.settings import Settings
from ratesvc.store.db import open_db
from ratesvc.store.repository import RateRepository

pytestmark = pytest.mark.integration

EXAMPLES_PER_ROUTE = 80
NOW = 1_796_144_400_000  # 2026-12-01T17:00:00Z, the schemas' example instant
MIN = 60_000

# Schema-valid input the schema cannot refuse: a range over 1,500 candles, `from` after `to`, a
# future or too old `at` (400); nothing stored before `at` (404); on /courses, `at` under version 1
# (400: v1 knows no `at`). Never a 5xx: Postgres is up.
CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {
            "positive_data_acceptance": {"expected-statuses": ["2xx", "3xx", "400", "404", "414"]},
            "negative_data_rejection": {"expected-statuses": ["400", "404", "405", "406", "414"]},
        }
    }
)


class Clock:
    """Fixed milliseconds."""

    def __call__(self) -> int:
        return NOW


async def fill(url: str) -> list[RateTick]:
    """Every pair holds a tick every 7 minutes over the last day (candles kept by save_batch)."""
    ticks = []
    for exchanger in EXCHANGERS:
        for direction in DIRECTIONS:
            for i in range(0, 1_440, 7):
                ts_ms = NOW - i * MIN
                value = Decimal(1000 + i) / 7
                leg = Leg(exchanger, direction.replace("-", "/"), value, ts_ms, 30_000)
                ticks.append(RateTick(exchanger, direction, value, ts_ms, (leg,)))
    async with open_db(url) as db:
        await db.execute_script("TRUNCATE rate_tick, source_event, rate_candle RESTART IDENTITY")
        await RateRepository(db).save_batch([(f"{t.ts_ms}-{n}", t) for n, t in enumerate(ticks)])
    return [t for t in ticks if t.ts_ms == NOW]


@pytest.fixture(name="history_app")
def history_app_fixture(make_settings: Callable[..., Settings], migrated_url: str) -> object:
    """What a worker serves, reading the filled test database."""
    newest = asyncio.run(fill(migrated_url))
    mirror = RateMirror(clock=Clock())
    mirror.load(newest)  # the live answers: the newest values
    mirror.set_following(True)
    return worker_app(create_app(make_settings(database_url=migrated_url), mirror=mirror))


def test_history_routes_answer_as_the_schema_says_on_real_postgres(history_app: object) -> None:
    """Generated valid and invalid requests to /v2/history, /v2/courses and /courses (with `at`):
    no 5xx, every answer as documented."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", history_app, config=CONFIG)
    operations = [
        result.ok()
        for result in schema.include(path_regex="^(/v2)?/(history|courses)$").get_all_operations()
    ]
    assert len(operations) == 3
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_ROUTE,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
        )
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate()

        check()  # pylint: disable=no-value-for-parameter  # hypothesis supplies `case`
