"""`ratesvc run --sim`: what the persister stores comes back from /v2/history and `at=`."""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ratesvc.domain import DIRECTIONS
from ratesvc.embedded import free_port
from testkit.procs import Daemon, process_alive, process_table
from tests.e2e.harness import Service, wait_until
from tests.e2e.test_run_sim import START_TIMEOUT_S, offline_env

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def instant(seconds: float) -> str:
    """RFC 3339 UTC with milliseconds."""
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(seconds * 1000) % 1000:03d}Z"


def test_history_and_at_answer_from_what_the_persister_stored(
    server_dir: Path, tmp_path: Path
) -> None:
    data_dir = server_dir / "history-sim"
    port = free_port()
    proc = Daemon.ratesvc(
        "history-sim",
        ["run", "--sim", "--port", str(port)],
        env=offline_env(data_dir),
        workdir=tmp_path,
    ).start()
    service = Service(proc, port)
    started = time.time()
    try:

        def candles() -> list[dict]:
            response = service.http.get(
                "/v2/history",
                params={
                    "direction": "BTC-USD",
                    "exchanger": "binance",
                    "interval": "1m",
                    "from": instant(started - 120),
                },
            )
            return response.json()["candles"] if response.status_code == 200 else []

        stored = wait_until(candles, timeout_s=START_TIMEOUT_S, what="a stored 1m candle")
        assert all(c["ticks"] >= 1 and c["low"] <= c["high"] for c in stored)
        assert float(stored[-1]["close"]) > 0

        def at_answer() -> dict | None:
            response = service.http.get("/v2/courses", params={"at": instant(time.time() - 1)})
            return response.json() if response.status_code == 200 else None

        body = wait_until(at_answer, timeout_s=START_TIMEOUT_S, what="an at= answer")
        assert [c["direction"] for c in body["courses"]] == list(DIRECTIONS)
        assert body["exchanger"] in ("binance", "coingecko")
        assert all(c["legs"] for c in body["courses"])
        assert proc.stop(signal.SIGINT, strict=True) == 0
    finally:
        proc.stop(strict=True)
        servers = {p for p, (_, _, cmd) in process_table().items() if str(data_dir) in cmd}
        for pid in servers - {os.getpid()}:
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)
