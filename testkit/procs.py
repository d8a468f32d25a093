"""Background processes of the tests and benchmarks: `Daemon`, one process and its log file.

A daemon runs in its own session, so it can be signalled alone and its whole process group
killed; its stdout and stderr are appended to `<workdir>/<name>.log`. Used by the e2e harness
(tests/e2e/harness.py), the native deployment tests (tests/deploy/native.py), the compose test's
engine (testkit/engine.py) and the benchmarks (bench/faults_stack.py, bench/topology.py,
bench/core.py). Every wait is bounded. The process table helpers below find what a process tree
left behind (Linux /proc).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

KILL_WAIT_S = 10.0  # how long reaping a SIGKILLed process may take


class Daemon:
    """A background process in its own session, its output appended to `workdir/name.log`."""

    def __init__(
        self, name: str, args: list[str], *, env: Mapping[str, str], workdir: Path
    ) -> None:
        self.name, self.args, self.env, self.workdir = name, list(args), dict(env), workdir
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    @classmethod
    def ratesvc(
        cls, name: str, args: list[str], *, env: Mapping[str, str], workdir: Path
    ) -> Daemon:
        """`python -m ratesvc ARGS` with this interpreter (not started yet)."""
        return cls(name, [sys.executable, "-m", "ratesvc", *args], env=env, workdir=workdir)

    def start(self) -> Daemon:
        """Spawn it in its own session, in `workdir`, output appended to the log; returns self."""
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(  # pylint: disable=consider-using-with
                self.args,
                env=self.env,
                cwd=self.workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        """Its process id (also its process group's id); it must have been started."""
        assert self.proc is not None, f"{self.name} was not started"
        return self.proc.pid

    @property
    def alive(self) -> bool:
        """Started and not exited yet."""
        return self.proc is not None and self.proc.poll() is None

    def kill(self, *, group: bool = True) -> None:
        """SIGKILL, as a crash would, and reap it; nothing happens if it was never started.

        `group=True` kills its whole process group (its children too); `group=False` only the
        process itself, its children left running, as after a crash of that one process.
        """
        if self.proc is None:
            return
        if group:
            with contextlib.suppress(ProcessLookupError):  # the whole group is gone already
                os.killpg(self.proc.pid, signal.SIGKILL)
        else:
            self.proc.send_signal(signal.SIGKILL)  # Popen does nothing once it has exited
        self.proc.wait(timeout=KILL_WAIT_S)

    def stop(
        self, sig: int = signal.SIGTERM, timeout_s: float = 30.0, *, strict: bool = False
    ) -> int:
        """Send `sig`, wait up to `timeout_s`, else SIGKILL its process group; the exit code.

        0 if it was never started, the exit code it already had if it exited by itself. With
        `strict`, a process that did not exit in time is still killed, then TimeoutExpired raised.
        """
        if self.proc is None:
            return 0
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            if strict:
                raise
        return self.proc.returncode

    def output(self) -> str:
        """Everything it has written so far (empty before the log exists)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self, chars: int = 3000) -> str:
        """The last `chars` characters of its output."""
        return self.output()[-chars:]


def process_table() -> dict[int, tuple[int, str, str]]:
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


def tree_and_matching(root: int, marker: Path | str) -> set[int]:
    """Descendants of `root` plus every process whose command line contains `marker`."""
    table = process_table()
    found = {pid for pid, (_, _, cmd) in table.items() if str(marker) in cmd}
    frontier = {root}
    while frontier:
        children = {pid for pid, (ppid, _, _) in table.items() if ppid in frontier}
        frontier = children - found
        found |= children
    return found


def process_alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    state = process_table().get(pid)
    return state is not None and state[1] != "Z"
