"""Serve the API with uvicorn: one in-process worker, or N worker processes."""

from __future__ import annotations

import os
import resource
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvicorn
from loguru import logger

from ratesvc.api.onewrite import OneWriteHttpToolsProtocol
from ratesvc.logs import uvicorn_log_config
from ratesvc.settings import Settings

APP_FACTORY = "ratesvc.api.app:app_from_env"


def uvicorn_options(
    host: str,
    port: int,
    *,
    log_level: str = "info",
    forwarded_allow_ips: Sequence[str] = ("127.0.0.1", "::1"),
    ws_ping_s: float = 20.0,
) -> dict[str, Any]:
    """uvicorn settings of every API worker (bench/bare_app.py serves its ceiling with them too).

    `forwarded_allow_ips` (FORWARDED_ALLOW_IPS): the peers whose X-Forwarded-For/-Proto set the
    client address and scheme the app sees; from any other peer those headers change nothing.
    """
    return {
        "host": host,
        "port": port,
        # httptools (what uvicorn's "auto" picks) with each answer's head and body in one write
        "http": OneWriteHttpToolsProtocol,
        "log_config": uvicorn_log_config(),
        # An explicit level: uvicorn wraps the app in a per-message TRACE logger whenever its
        # logger's effective level is <= TRACE, which the root level 0 of logs.py would make it.
        "log_level": log_level.lower(),
        "access_log": False,
        # No "server: uvicorn" on every answer (bytes on the wire, and a version hint); Date stays.
        "server_header": False,
        "proxy_headers": True,
        "forwarded_allow_ips": list(forwarded_allow_ips),
        "timeout_graceful_shutdown": 5,
        "backlog": 4096,
        # /v2/ws: a ping every STREAM_WS_PING_S (no pong within as long closes it); no
        # per-message deflate (it would compress each shared frame once per subscriber); clients
        # send nothing that matters, so their messages stay small
        "ws_ping_interval": ws_ping_s,
        "ws_ping_timeout": ws_ping_s,
        "ws_per_message_deflate": False,
        "ws_max_size": 64 * 1024,
    }


def raise_open_file_limit() -> int:
    """Raise the soft open-file limit to the hard one (the workers inherit it): every live
    /v2/stream or /v2/ws subscriber holds a descriptor, and the usual soft default of 1,024
    would refuse connections long before the hard limit does. Returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1_048_576
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as err:
            logger.warning("open-file limit stays at {soft}: {err}", soft=soft, err=err)
    logger.info("open-file limit {soft} (one per live stream subscriber)", soft=soft)
    return soft


def serve_api(
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
    env_file: Path | None = None,
) -> None:
    """Block serving HTTP until SIGINT/SIGTERM (uvicorn handles the signals and drains)."""
    raise_open_file_limit()
    workers = workers or settings.api_workers
    common = uvicorn_options(
        host or settings.api_host,
        port or settings.api_port,
        log_level=settings.log_level,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        ws_ping_s=settings.stream_ws_ping_s,
    )
    if workers == 1:
        # pylint: disable-next=import-outside-toplevel
        from ratesvc.api.app import create_app, worker_app

        uvicorn.run(worker_app(create_app(settings)), **common)
        return
    # Worker processes build their own app from the environment; metrics aggregate on disk.
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="ratesvc-prom-"))
    if env_file is not None:
        os.environ.setdefault("RATESVC_ENV_FILE", str(env_file))
    uvicorn.run(APP_FACTORY, factory=True, workers=workers, **common)
