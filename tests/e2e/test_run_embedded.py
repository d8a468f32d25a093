"""`ratesvc run` on a machine with no Redis or Postgres configured: embedded servers, clean stop."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from testkit.procs import process_alive, process_table, tree_and_matching
from tests.e2e.harness import Sim, all_served, service_env, start_service, wait_until

pytestmark = pytest.mark.e2e


def test_run_without_urls_starts_embedded_servers_and_sigint_leaves_no_process(
    sim: Sim, server_dir: Path, tmp_path: Path
) -> None:
    sim.post("/reset", {})
    data_dir = server_dir / "run-embedded"
    env = service_env(sim, None, None, data_dir)
    assert "REDIS_URL" not in env and "DATABASE_URL" not in env
    service = start_service(env, tmp_path)
    try:
        wait_until(lambda: all_served(service, "binance", expected=False), what="eight directions")
        assert (data_dir / "redis").is_dir() and (data_dir / "postgres" / "PG_VERSION").exists()
        assert service.proc.proc is not None
        pids = tree_and_matching(service.proc.proc.pid, data_dir)
        commands = " ".join(process_table()[p][2] for p in pids if p in process_table())
        assert "redis-server" in commands and "postgres" in commands
        assert all(role in commands for role in ("collector", "persister", "api"))
        assert service.proc.stop(signal.SIGINT, strict=True) == 0
        wait_until(
            lambda: not any(process_alive(p) for p in pids), timeout_s=10, what="no process left"
        )
        assert "all roles stopped" in service.proc.output()
    finally:
        service.proc.stop(strict=True)
        for pid in tree_and_matching(os.getpid(), data_dir) - {os.getpid()}:
            if str(data_dir) in process_table().get(pid, (0, "", ""))[2]:
                os.kill(pid, signal.SIGKILL)
