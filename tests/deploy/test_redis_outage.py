"""Redis away behind HAProxy: clients keep their answers, and an emptied Redis heals by itself.

The compose topology natively (tests/deploy/topology.py) on a Redis of its own that the tests stop
and start: HAProxy checks `/serving`, so a worker holding a snapshot stays in rotation while Redis
is away and serves it, stale-marked once REDIS_STALE_AFTER_S passes; `/ready` still tells an
operator that the stream is not followed. Clients are the fast path's, through HAProxy.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg
import httpx
import pytest
import redis as redis_sync

from ratesvc.embedded import EmbeddedRedis, free_port
from testkit.poller import Poller, summary
from tests.deploy.topology import Stack, running_stack
from tests.e2e.harness import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

# The default run proves 15 s; the long one is (docs/fault-tolerance.md)
#   REDIS_OUTAGE_S=120 python -m pytest tests/deploy/test_redis_outage.py -s
OUTAGE_S = float(os.environ.get("REDIS_OUTAGE_S", "15"))
REDIS_STALE_AFTER_S = 5  # the workers mark every value stale after this long without the stream


@pytest.fixture(name="redis_server", scope="module")
def redis_server_fixture(server_dir, tmp_path_factory) -> Iterator[EmbeddedRedis]:
    """A Redis of this module's own (AOF on, fixed port): the tests stop and start it."""
    server = EmbeddedRedis(server_dir / tmp_path_factory.mktemp("outage").name, port=free_port())
    with server:
        yield server


@pytest.fixture(name="stack", scope="module")
def stack_fixture(
    redis_server: EmbeddedRedis, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    with running_stack(
        tmp_path_factory.mktemp("outage-stack"),
        redis_url=redis_server.url,
        database_url=database_url,
        REDIS_STALE_AFTER_S=str(REDIS_STALE_AFTER_S),
    ) as stack:
        yield stack


def ready(stack: Stack) -> dict[str, int]:
    """Each worker's own /ready status (the operator's view; HAProxy never asks it)."""
    return {a: httpx.get(f"http://{a}/ready", timeout=2).status_code for a in stack.workers}


def rows(database_url: str) -> int:
    async def count() -> int:
        conn = await asyncpg.connect(database_url)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM rate_tick"))
        finally:
            await conn.close()

    return asyncio.run(count())


def group_exists(client: redis_sync.Redis) -> bool:
    try:
        return any(g["name"] == "persister" for g in client.xinfo_groups("ratesvc:ticks"))
    except redis_sync.ResponseError:  # no stream yet
        return False


@contextmanager
def polling(stack: Stack) -> Iterator[Poller]:
    """testkit's request loop (every answer checked) through HAProxy's port, for the block."""
    poller = Poller(f"{str(stack.lb.base_url).rstrip('/')}/v1/courses").start()
    try:
        yield poller
    finally:
        poller.stop()


def traffic(poller: Poller, count: int, what: str) -> None:
    """Let `count` more answers come (the loop is paced, about 50 a second)."""
    mark = poller.mark()
    wait_until(lambda: len(poller.answers) >= mark + count, timeout_s=60, what=what)


def fresh_after(poller: Poller, at_s: float) -> bool:
    """The newest answer is a fresh 200 asked after `at_s`."""
    newest = [a for a in poller.answers[-4:] if a.status == 200]
    return bool(newest) and newest[-1].at > at_s and newest[-1].fresh


def test_a_redis_outage_fails_no_request_through_haproxy(stack, redis_server):
    with polling(stack) as poller:
        traffic(poller, 100, "traffic before the outage")
        redis_server.stop()
        down_at = time.monotonic()
        wait_until(lambda: set(ready(stack).values()) == {503}, what="/ready 503 on every worker")
        in_rotation = []
        while time.monotonic() - down_at < OUTAGE_S:  # the fault's length, not a synchronisation
            in_rotation.append(stack.active_servers())
            time.sleep(0.5)
        redis_server.start()
        up_at = time.monotonic()
        wait_until(lambda: set(ready(stack).values()) == {200}, what="/ready 200 again")
        ready_after_s = time.monotonic() - up_at
        wait_until(lambda: fresh_after(poller, up_at), what="fresh answers again")
        fresh_after_s = time.monotonic() - up_at
        traffic(poller, 100, "traffic after the outage")
    during = [a for a in poller.answers if down_at <= a.at < up_at]
    failed = [a for a in poller.answers if a.failed]
    print(
        f"\nRedis down {up_at - down_at:.1f} s, through HAProxy meanwhile: {summary(during)}; "
        f"whole run: {summary(poller.answers)}; HAProxy kept {min(in_rotation):g}-"
        f"{max(in_rotation):g} of {len(stack.workers)} workers in rotation; /ready 200 again "
        f"{ready_after_s:.2f} s and fresh answers {fresh_after_s:.2f} s after Redis came back"
    )
    assert not failed, failed[:10]
    assert min(in_rotation) == len(stack.workers), "a Redis blip must not empty the balancer"
    assert any(a.stale for a in during), "answers kept coming, marked stale once unverifiable"
    first_full = next(a for a in during if a.status == 200)
    assert first_full.stale is False, "a fresh snapshot is not marked stale at once"


def test_redis_back_empty_heals_the_stack_by_itself(stack, redis_server, database_url):
    client = redis_sync.Redis.from_url(redis_server.url, decode_responses=True)
    with polling(stack) as poller:
        traffic(poller, 50, "traffic before")
        redis_server.stop()
        shutil.rmtree(redis_server.dir)  # no AOF: Redis comes back with nothing
        before = rows(database_url)
        redis_server.start()
        up_at = time.monotonic()
        steps = {}
        wait_until(lambda: client.hlen("ratesvc:latest") == 16, what="collector republished")
        steps["latest values republished"] = time.monotonic() - up_at
        wait_until(lambda: group_exists(client), what="consumer group recreated")
        wait_until(lambda: rows(database_url) > before, what="rows stored again")
        steps["rows stored again"] = time.monotonic() - up_at
        wait_until(lambda: set(ready(stack).values()) == {200}, what="workers re-synced")
        steps["every worker ready"] = time.monotonic() - up_at
        wait_until(lambda: fresh_after(poller, up_at), what="fresh answers again")
        steps["fresh answers through HAProxy"] = time.monotonic() - up_at
        traffic(poller, 50, "traffic after")
        wait_until(
            lambda: client.xpending("ratesvc:ticks", "persister")["pending"] == 0,
            what="the persister keeping up (nothing left pending)",
        )
    client.close()
    failed = [a for a in poller.answers if a.failed]
    print(
        "\nRedis back empty, healed after: "
        + ", ".join(f"{what} {s:.2f} s" for what, s in steps.items())
        + f"; through HAProxy: {summary(poller.answers)}"
    )
    assert not failed, failed[:10]
