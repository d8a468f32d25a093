"""`ratesvc run --sim`: the whole service offline in one command; Ctrl-C leaves nothing behind."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import httpx
import pytest

from ratesvc.domain import DIRECTIONS
from ratesvc.embedded import free_port
from testkit.procs import Daemon, process_alive, process_table, tree_and_matching
from tests.e2e.harness import Service, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

START_TIMEOUT_S = 90.0  # initdb of a fresh embedded Postgres included, on a busy 2-core machine


def offline_env(data_dir: Path) -> dict[str, str]:
    """A shell without internet settings: only DATA_DIR, and URLs that --sim must not use."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("BINANCE_", "COINGECKO_", "PROMETHEUS_MULTIPROC_DIR"))
    }
    env.update(
        DATA_DIR=str(data_dir),
        LOG_LEVEL="INFO",
        # nothing listens on port 1: had --sim used them, nothing would start
        REDIS_URL="redis://127.0.0.1:1/0",
        DATABASE_URL="postgres://ratesvc:pw@127.0.0.1:1/ratesvc",
        # metrics of the collector and persister: off, so a concurrent run cannot collide
        COLLECTOR_METRICS_PORT="0",
        PERSISTER_METRICS_PORT="0",
    )
    return env


def served(service: Service, exchanger: str) -> dict[str, float]:
    response = service.courses(exchanger=exchanger)
    if response.status_code != 200 or response.headers.get("x-rates-stale") != "false":
        return {}
    return {c["direction"]: c["value"] for c in response.json()["courses"]}


def test_run_sim_serves_every_direction_offline_and_ctrl_c_leaves_no_process(
    server_dir: Path, tmp_path: Path
) -> None:
    data_dir = server_dir / "run-sim"
    port = free_port()
    proc = Daemon.ratesvc(
        "run-sim",
        ["run", "--sim", "--port", str(port)],
        env=offline_env(data_dir),
        workdir=tmp_path,
    ).start()
    service = Service(proc, port)
    pids: set[int] = set()
    try:
        banner = wait_until(
            lambda: re.search(r"simulator (http://\S+/_sim)/state", proc.output()),
            timeout_s=START_TIMEOUT_S,
            what="the banner naming the simulator",
        )
        for exchanger in ("binance", "coingecko"):
            values = wait_until(
                lambda e=exchanger: len(served(service, e)) == len(DIRECTIONS)
                and served(service, e),
                timeout_s=START_TIMEOUT_S,
                what=f"{exchanger} serving all eight directions, fresh",
            )
            assert list(values) == list(DIRECTIONS)

        # The example of the banner: a price moved on the simulator is what the API serves.
        control = banner[1]
        assert f"curl -X POST {control}/prices" in proc.output()
        httpx.post(f"{control}/prices", json={"assets": {"ETH": "4321"}}, timeout=5)
        wait_until(
            lambda: served(service, "binance").get("ETH-USD") == 4321,
            what="the moved price served",
        )
        output = proc.output()
        assert f"http://127.0.0.1:{port}/courses" in output and f"{port}/docs" in output
        assert f"data in {data_dir / 'sim' / 'postgres'}" in output
        assert (data_dir / "sim" / "postgres" / "PG_VERSION").exists()
        shown = output.split("ratesvc is running:")[1]
        assert "redis://127.0.0.1:1/" not in shown and "@127.0.0.1:1/" not in shown

        pids = tree_and_matching(proc.pid, data_dir)
        commands = " ".join(process_table()[p][2] for p in pids if p in process_table())
        for part in ("ratesvc sim", "collector", "persister", "api", "redis-server", "postgres"):
            assert part in commands, part
        assert proc.stop(signal.SIGINT, strict=True) == 0
        wait_until(
            lambda: not any(process_alive(p) for p in pids), timeout_s=15, what="no process left"
        )
        assert "all roles stopped" in proc.output()
    finally:
        proc.stop(strict=True)
        # whatever this run left behind: its tree as seen while it ran, and its embedded servers
        servers = {p for p, (_, _, cmd) in process_table().items() if str(data_dir) in cmd}
        for pid in (pids | servers) - {os.getpid()}:
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)
