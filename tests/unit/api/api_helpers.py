"""Helpers of the API unit tests: a fake clock, tick factories, an in-process client."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

import httpx
from fastapi import FastAPI

from ratesvc.domain import DIRECTIONS, Leg, RateTick, SourceState, SourceStatus

T0 = 1_700_000_000_000  # fake "now" at the start of every test (ms)
MAX_AGE_MS = 30_000


class FakeClock:
    """Milliseconds that only move when a test says so."""

    def __init__(self, now_ms: int = T0) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now_ms += int(seconds * 1000)


def tick(
    exchanger: str,
    direction: str,
    value: str = "100",
    *,
    ts_ms: int = T0,
    max_age_ms: int = MAX_AGE_MS,
) -> RateTick:
    """A one-leg tick whose leg comes from the exchanger itself."""
    leg = Leg(exchanger, direction.replace("-", "/"), Decimal(value), ts_ms, max_age_ms)
    return RateTick(exchanger, direction, Decimal(value), ts_ms, (leg,))


def full_set(
    exchanger: str, *, ts_ms: int = T0, value: str = "100", directions: Iterable[str] = DIRECTIONS
) -> list[RateTick]:
    """A tick per direction for one exchanger."""
    return [tick(exchanger, d, value, ts_ms=ts_ms) for d in directions]


def status(source: str, state: SourceState, ts_ms: int) -> SourceStatus:
    """A collector status event."""
    return SourceStatus(source, state, ts_ms)


def client_for(app: FastAPI) -> httpx.AsyncClient:
    """An httpx client calling the app in-process (no lifespan: the tests own the mirror)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ratesvc")
