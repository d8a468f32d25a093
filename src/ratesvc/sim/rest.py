"""HTTP helpers shared by the simulated REST servers: JSON responses, call records and the
request-level faults (slow, 429, 5xx). Connection-level `refuse` lives in server.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from starlette.requests import HTTPConnection
from starlette.responses import Response

from ratesvc.sim.state import CallRecord, MarketState, now_ms


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response encoded with orjson."""
    return Response(orjson.dumps(body), status, headers=headers, media_type="application/json")


def record_call(state: MarketState, target: str, request: HTTPConnection, status: int) -> None:
    """Count one call of `target` (a request or a handshake) and keep its path, query, headers."""
    state.counters[f"{target}_calls"] += 1
    state.counters[f"{target}_status_{status}"] += 1
    state.call_log(target).append(
        CallRecord(
            ts_ms=now_ms(),
            path=request.url.path,
            query=request.url.query,
            headers={k.lower(): v for k, v in request.headers.items()},
            status=status,
        )
    )


async def rest_fault(
    state: MarketState,
    target: str,
    *,
    too_many: Any,
    down: Any,
    headers: dict[str, str] | None = None,
) -> Response | None:
    """Apply the target's active slow/429/5xx faults; a response means "send this instead".

    Args:
        too_many: body of the 429 answer, in the venue's own error shape.
        down: body of the 5xx answer.
        headers: sent with either answer too (Binance's used weight is on every response).
    """
    headers = headers or {}
    slow = state.faults.take(target, "slow")
    if slow is not None:
        await asyncio.sleep(float(slow.params["delay_s"]))
    limited = state.faults.take(target, "429")
    if limited is not None:
        retry_after = limited.params.get("retry_after_s")
        if retry_after is not None:
            headers = {**headers, "Retry-After": str(int(retry_after))}
        return json_response(too_many, int(limited.params["status"]), headers)
    broken = state.faults.take(target, "5xx")
    if broken is not None:
        return json_response(down, int(broken.params["status"]), headers)
    return None
