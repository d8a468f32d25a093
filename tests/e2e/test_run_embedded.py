"""`ratesvc run` on a machine with no Redis or Postgres configured: embedded servers, clean stop."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.e2e.harness import Sim, all_served, service_env, start_service, wait_until

pytestmark = pytest.mark.e2e


def _processes() -> dict[int, tuple[int, str, str]]:
    """pid -> (parent pid, state, command line) for every process we can read."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        table[int(entry.name)] = (int(fields[1]), fields[0], cmdline)
    return table


def _tree_and_servers(root: int, data_dir: Path) -> set[int]:
    """Descendants of `root` plus every process whose command line names `data_dir`."""
    table = _processes()
    found = {pid for pid, (_, _, cmd) in table.items() if str(data_dir) in cmd}
    frontier = {root}
    while frontier:
        children = {pid for pid, (ppid, _, _) in table.items() if ppid in frontier}
        frontier = children - found
        found |= children
    return found


def _alive(pid: int) -> bool:
    state = _processes().get(pid)
    return state is not None and state[1] != "Z"


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
        pids = _tree_and_servers(service.proc.proc.pid, data_dir)
        commands = " ".join(_processes()[p][2] for p in pids if p in _processes())
        assert "redis-server" in commands and "postgres" in commands
        assert all(role in commands for role in ("collector", "persister", "api"))
        assert service.proc.stop(signal.SIGINT, strict=True) == 0
        wait_until(lambda: not any(_alive(p) for p in pids), timeout_s=10, what="no process left")
        assert "all roles stopped" in service.proc.output()
    finally:
        service.proc.stop(strict=True)
        for pid in _tree_and_servers(os.getpid(), data_dir) - {os.getpid()}:
            if str(data_dir) in _processes().get(pid, (0, "", ""))[2]:
                os.kill(pid, signal.SIGKILL)
