"""Serve the API with uvicorn: one in-process worker, or N worker processes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import uvicorn

from ratesvc.logs import uvicorn_log_config
from ratesvc.settings import Settings

APP_FACTORY = "ratesvc.api.app:app_from_env"


def serve_api(
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
    env_file: Path | None = None,
) -> None:
    """Block serving HTTP until SIGINT/SIGTERM (uvicorn handles the signals and drains)."""
    host = host or settings.api_host
    port = port or settings.api_port
    workers = workers or settings.api_workers
    common = {
        "host": host,
        "port": port,
        "log_config": uvicorn_log_config(),
        "access_log": False,
        "proxy_headers": True,
        "forwarded_allow_ips": "*",
        "timeout_graceful_shutdown": 5,
        "backlog": 4096,
    }
    if workers == 1:
        from ratesvc.api.app import create_app  # pylint: disable=import-outside-toplevel

        uvicorn.run(create_app(settings), **common)
        return
    # Worker processes build their own app from the environment; metrics aggregate on disk.
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="ratesvc-prom-"))
    if env_file is not None:
        os.environ.setdefault("RATESVC_ENV_FILE", str(env_file))
    uvicorn.run(APP_FACTORY, factory=True, workers=workers, **common)
