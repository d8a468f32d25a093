"""A TCP proxy in front of Redis that tests can cut (outage) or blackhole (partition)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit, urlunsplit

# What a replica sends its master (RESP): a connection that carries one is a replication link.
_REPLICATION_COMMAND = re.compile(rb"\r\n(REPLCONF|PSYNC|SYNC)\r\n", re.IGNORECASE)


@dataclass
class _Link:
    replication: bool = False


class RedisProxy:
    """`cut()` drops and refuses connections, `open()` listens again on the same port,
    `blackhole()` holds bytes in flight until `heal()` delivers them late, `hold_replication()`
    does so only for what the server sends its replicas (a replica that stopped keeping up while
    clients are served). `cut()` drops whatever is held: it never arrives."""

    def __init__(self, redis_url: str) -> None:
        self.parts = urlsplit(redis_url)
        self.unix_path = self.parts.path if self.parts.scheme == "unix" else None
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._replicating = asyncio.Event()
        self._replicating.set()

    @property
    def url(self) -> str:
        """URL of the proxy: same credentials and db as the target."""
        if self.unix_path:
            db = parse_qs(self.parts.query).get("db", ["0"])[0]
            return f"redis://127.0.0.1:{self.port}/{db}"
        auth = self.parts.netloc.rpartition("@")[0]
        netloc = f"{auth}@127.0.0.1:{self.port}" if auth else f"127.0.0.1:{self.port}"
        return urlunsplit(self.parts._replace(netloc=netloc))

    async def open(self) -> RedisProxy:
        """Listen (again, on the same port once it is known)."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def cut(self) -> None:
        """The network is gone: every proxied connection closed, new ones refused."""
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        self._flowing.set()  # held bytes meet closed writers: dropped
        self._replicating.set()
        await self._server.wait_closed()

    def blackhole(self) -> None:
        """A partition: connections stay open, bytes wait here (for `heal`)."""
        self._flowing.clear()

    def hold_replication(self) -> None:
        """Hold what the server sends on replication links (clients and sentinels still flow)."""
        self._replicating.clear()

    def heal(self) -> None:
        """Deliver everything held, late, and flow again."""
        self._flowing.set()
        self._replicating.set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.unix_path:
            up_reader, up_writer = await asyncio.open_unix_connection(self.unix_path)
        else:
            up_reader, up_writer = await asyncio.open_connection(
                self.parts.hostname or "127.0.0.1", self.parts.port or 6379
            )
        self._writers.update((writer, up_writer))
        link = _Link()
        # Python 3.11's stream callback logs a cancelled handler as an error: end quietly.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(
                self._pipe(reader, up_writer, link, upstream=True),
                self._pipe(up_reader, writer, link, upstream=False),
                return_exceptions=True,
            )

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        link: _Link,
        *,
        upstream: bool,
    ) -> None:
        try:
            while data := await reader.read(65536):
                if upstream and not link.replication:
                    link.replication = bool(_REPLICATION_COMMAND.search(data))
                await self._flowing.wait()
                if link.replication and not upstream:
                    await self._replicating.wait()
                if writer.is_closing():
                    return  # cut meanwhile: what was held is dropped
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()
            self._writers.discard(writer)
