"""Operational routes: liveness, the balancer's check, readiness and Prometheus metrics.

Two questions, two routes. `/serving` is what HAProxy asks: can this worker answer /courses? It
can as soon as it holds a snapshot, and keeps answering while Redis is away (values marked stale as
they age), so a Redis blip never empties the balancer. `/ready` is what an operator asks: is this
worker loaded AND following the stream? It goes 503 while Redis is away.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.responses import Response
from starlette_exporter import handle_metrics

from ratesvc.api.deps import MirrorDep

router = APIRouter(tags=["operations"])


class Readiness(BaseModel):
    """Readiness of this worker, with the reasons when it is not ready."""

    status: str
    snapshot_version: int
    reasons: list[str]


def _json(payload: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


@router.get("/health", response_model=None, responses={200: {"description": "Process alive"}})
async def health() -> Response:
    """Liveness: 200 while the process runs."""
    return _json({"status": "ok"})


class Serving(BaseModel):
    """Whether this worker can answer: it holds a snapshot (stale or not)."""

    status: str
    following: bool
    snapshot_version: int


@router.get(
    "/serving",
    response_model=None,
    responses={
        200: {"model": Serving, "description": "Holds a snapshot: in the balancer's rotation"},
        503: {"model": Serving, "description": "No snapshot loaded yet: keep out of rotation"},
    },
)
async def serving(mirror: MirrorDep) -> Response:
    """The balancer's check: 200 while this worker holds a snapshot, even with Redis away."""
    payload = {
        "status": "serving" if mirror.loaded else "not serving",
        "following": mirror.following,
        "snapshot_version": mirror.version,
    }
    return _json(payload, 200 if mirror.loaded else 503)


@router.get(
    "/ready",
    response_model=None,
    responses={
        200: {"model": Readiness, "description": "Snapshot loaded and stream followed"},
        503: {"model": Readiness, "description": "Not ready; `reasons` says why"},
    },
)
async def ready(mirror: MirrorDep) -> Response:
    """Readiness: 200 when the snapshot is loaded and the Redis stream is followed, else 503."""
    reasons = []
    if not mirror.loaded:
        reasons.append("snapshot not loaded")
    if not mirror.following:
        reasons.append("redis stream not followed")
    payload = {
        "status": "not ready" if reasons else "ready",
        "snapshot_version": mirror.version,
        "reasons": reasons,
    }
    return _json(payload, 503 if reasons else 200)


@router.get("/metrics", response_model=None, responses={200: {"content": {"text/plain": {}}}})
def metrics(request: Request) -> Response:
    """Prometheus metrics of this worker (all workers in multiprocess mode)."""
    return handle_metrics(request)
