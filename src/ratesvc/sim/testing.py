"""Helpers for tests that drive the simulator: a control API client, websocket frame readers and
bounded polling. Works against an in-process sim (`running_sim`) or a `ratesvc sim` subprocess.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection


class SimControl:
    """Async client of the control API at `control_url` (e.g. ``http://127.0.0.1:18443/_sim``).

    Every call returns the decoded JSON answer and raises httpx.HTTPStatusError on a 400.
    """

    def __init__(self, control_url: str, *, client: httpx.AsyncClient | None = None) -> None:
        self.control_url = control_url.rstrip("/")
        self._own = client is None
        self._client = client or httpx.AsyncClient(timeout=5)

    async def __aenter__(self) -> SimControl:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._own:
            await self._client.aclose()

    async def _call(self, path: str, body: dict[str, Any] | None = None) -> Any:
        url = f"{self.control_url}/{path}"
        if body is None:
            response = await self._client.get(url)
        else:
            response = await self._client.post(url, json=body)
        response.raise_for_status()
        return response.json()

    async def state(self) -> dict[str, Any]:
        """GET /_sim/state."""
        return await self._call("state")

    async def calls(self, target: str = "coingecko") -> list[dict[str, Any]]:
        """GET /_sim/calls: recorded calls of `coingecko`, `binance_rest` or `binance_ws`."""
        return await self._call(f"calls?target={target}")

    async def set_prices(self, **body: Any) -> dict[str, Any]:
        """POST /_sim/prices with keys binance, binance_status, coingecko and/or assets."""
        return await self._call("prices", body)

    async def fault(self, target: str, kind: str, **params: Any) -> dict[str, Any]:
        """POST /_sim/fault."""
        return await self._call("fault", {"target": target, "kind": kind, **params})

    async def clear(self, target: str | None = None) -> dict[str, Any]:
        """POST /_sim/clear: every fault, or one target's."""
        return await self._call("clear", {} if target is None else {"target": target})

    async def options(self, **changes: float) -> dict[str, Any]:
        """POST /_sim/options."""
        return await self._call("options", changes)

    async def reset(self) -> dict[str, Any]:
        """POST /_sim/reset."""
        return await self._call("reset", {})


async def recv_json(ws: ClientConnection, timeout_s: float = 2.0) -> Any:
    """The next frame, decoded; TimeoutError after `timeout_s`."""
    return json.loads(await asyncio.wait_for(ws.recv(), timeout_s))


async def recv_until(
    ws: ClientConnection, match: Callable[[Any], bool], timeout_s: float = 2.0
) -> Any:
    """The first decoded frame for which `match` is true, skipping others."""
    async with asyncio.timeout(timeout_s):
        while True:
            frame = json.loads(await ws.recv())
            if match(frame):
                return frame


async def eventually(check: Callable[[], Awaitable[bool] | bool], timeout_s: float = 2.0) -> None:
    """Poll `check` (sync or async) every 10 ms until it is true; TimeoutError after `timeout_s`."""
    async with asyncio.timeout(timeout_s):
        while True:
            result = check()
            if isinstance(result, Awaitable):
                result = await result
            if result:
                return
            await asyncio.sleep(0.01)
