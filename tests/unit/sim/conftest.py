"""Fixtures for the simulator tests: one in-process sim per test module on free ports, with fast
pings, reset to defaults before every test; an HTTP client and a control API client.

Test modules here must run in the module's event loop:
``pytestmark = pytest.mark.asyncio(loop_scope="module")``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest_asyncio

from ratesvc.sim import SimHandle, SimOptions, running_sim
from ratesvc.sim.testing import SimControl, eventually

# Short server pings so keepalive behaviour shows within a test; long enough to never bite a
# healthy client on a loaded machine. The client's pongs count toward the 5 messages/s limit (as
# on Binance), so one ping a second leaves room for the tests' own messages.
PING_INTERVAL_S = 1.0
PING_TIMEOUT_S = 0.5


@pytest_asyncio.fixture(name="module_sim", scope="module", loop_scope="module")
async def module_sim_fixture() -> AsyncIterator[SimHandle]:
    """One simulator per module: starting and stopping uvicorn costs about 0.25 s."""
    options = SimOptions(ping_interval_s=PING_INTERVAL_S, ping_timeout_s=PING_TIMEOUT_S)
    async with running_sim(options=options) as handle:
        yield handle


@pytest_asyncio.fixture(name="sim", loop_scope="module")
async def sim_fixture(module_sim: SimHandle) -> AsyncIterator[SimHandle]:
    """The module's simulator with no open connections, default prices, options and no faults."""
    module_sim.hub.close_all()
    await eventually(lambda: module_sim.state.ws_open == 0)
    module_sim.state.reset()
    yield module_sim


@pytest_asyncio.fixture(name="http", loop_scope="module")
async def http_fixture() -> AsyncIterator[httpx.AsyncClient]:
    """A plain HTTP client."""
    async with httpx.AsyncClient(timeout=5) as client:
        yield client


@pytest_asyncio.fixture(name="ctl", loop_scope="module")
async def ctl_fixture(sim: SimHandle, http: httpx.AsyncClient) -> SimControl:
    """Control API client of the running simulator."""
    return SimControl(sim.control_url, client=http)
