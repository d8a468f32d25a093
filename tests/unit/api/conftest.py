"""Fixtures of the API unit tests: fake clock, hand-filled mirror (no Redis), app, client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from fastapi import FastAPI

from ratesvc.api.app import create_app
from ratesvc.api.mirror import RateMirror
from ratesvc.domain import EXCHANGERS
from ratesvc.settings import Settings
from tests.unit.api.api_helpers import FakeClock, client_for, full_set


@pytest.fixture(name="clock")
def clock_fixture() -> FakeClock:
    """The fake clock shared by the mirror and the endpoint."""
    return FakeClock()


@pytest.fixture(name="settings")
def settings_fixture(make_settings: Callable[..., Settings]) -> Settings:
    """Default settings: neither .env nor the shell's variables."""
    return make_settings()


@pytest.fixture(name="mirror")
def mirror_fixture(clock: FakeClock, settings: Settings) -> RateMirror:
    """A mirror without Redis, loaded with fresh values of both exchangers."""
    mirror = RateMirror(
        preference=settings.exchanger_preference,
        hold_down_s=settings.failback_hold_down_s,
        clock=clock,
    )
    mirror.load(full_set("binance", value="54000.000123") + full_set("coingecko", value="53999.5"))
    mirror.set_following(True)
    return mirror


@pytest.fixture(name="empty_mirror")
def empty_mirror_fixture(clock: FakeClock) -> RateMirror:
    """A mirror that has not loaded anything."""
    return RateMirror(preference=EXCHANGERS, clock=clock)


@pytest.fixture(name="app")
def app_fixture(settings: Settings, mirror: RateMirror) -> FastAPI:
    """The app over the hand-filled mirror."""
    return create_app(settings, mirror=mirror)


@pytest.fixture(name="client")
async def client_fixture(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Client of `app`."""
    async with client_for(app) as client:
        yield client
