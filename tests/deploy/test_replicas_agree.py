"""Every replica gives the same answer, a worker restarted during the failback hold-down included.

Two API workers behind HAProxy (tests/deploy/topology.py) with the default 10 s hold-down:
Binance goes down (CoinGecko serves), comes back, and one worker is restarted while the hold-down
runs. The restarted worker must not treat Binance as "fresh for the first time" and serve it at
once: the hold-down's start travels with the data (the collector's `since_ms`), so both workers
name the same exchanger throughout. Both are sampled directly for 25 s; the seconds in which
they disagreed are reported.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import redis as redis_sync

from testkit.poller import Poller, summary
from tests.deploy.topology import Stack, ratesvc, running_stack
from tests.e2e.harness import PRICES, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

HOLD_DOWN_S = 10  # the default FAILBACK_HOLD_DOWN_S
SAMPLE_S = 25.0


@pytest.fixture(name="stack", scope="module")
def stack_fixture(
    redis_url: str, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    redis_sync.Redis.from_url(redis_url).flushdb()
    with running_stack(
        tmp_path_factory.mktemp("replicas"),
        redis_url=redis_url,
        database_url=database_url,
        FAILBACK_HOLD_DOWN_S=str(HOLD_DOWN_S),
    ) as stack:
        yield stack


class Sampler:
    """Asks every worker directly, in turn, what it serves: (time, worker, exchanger, ETag)."""

    def __init__(self, addresses: list[str]) -> None:
        self.addresses = addresses
        self.rows: list[tuple[float, str, str, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=2) as http:
            while not self._stop.is_set():
                for address in self.addresses:
                    try:
                        response = http.get(f"http://{address}/courses")
                        row = response.json()["exchanger"], response.headers["etag"]
                    except (httpx.HTTPError, ValueError, KeyError):
                        row = "unavailable", ""
                    self.rows.append((time.monotonic(), address, *row))
                time.sleep(0.02)

    def first_answer(self, address: str, after_s: float) -> str:
        """The exchanger `address` named in its first answer after `after_s`."""
        return wait_until(
            lambda: next(
                (r[2] for r in self.rows if r[1] == address and r[0] > after_s and r[3]), None
            ),
            what=f"an answer from {address}",
        )

    def disagreement_s(self) -> tuple[float, float]:
        """(seconds both answered and disagreed, seconds one of them did not answer)."""
        latest: dict[str, tuple[str, str]] = {}
        disagree = missing = 0.0
        previous_at: float | None = None
        for at_s, address, exchanger, etag in self.rows:
            if previous_at is not None and len(latest) == len(self.addresses):
                span = at_s - previous_at
                if any(not tag for _ex, tag in latest.values()):
                    missing += span
                elif len(set(latest.values())) > 1:
                    disagree += span
            latest[address] = (exchanger, etag)
            previous_at = at_s
        return disagree, missing

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def serving(address: str) -> str:
    return httpx.get(f"http://{address}/courses", timeout=2).json()["exchanger"]


def restart(stack: Stack, address: str) -> None:
    """Stop the worker at `address` and start it again on the same address."""
    stack.workers[address].stop(timeout_s=10)
    host, port = address.rsplit(":", 1)
    args = ratesvc("api", "--host", host, "--port", port)
    stack.workers[address] = stack.launcher.start("api-restarted", args, stack.env)


def test_a_worker_restarted_during_the_hold_down_agrees_with_the_others(stack):
    steady, restarted = sorted(stack.workers)
    stack.sim.post("/prices", PRICES)
    stack.wait(lambda: serving(steady) == serving(restarted) == "binance", "binance serving")
    at: dict[str, float] = {}  # monotonic times of the steps
    poller = Poller(f"{str(stack.lb.base_url).rstrip('/')}/v1/courses").start()
    with Sampler(sorted(stack.workers)) as sampler:
        stack.sim.fault("binance_ws", "refuse")
        stack.sim.fault("binance_rest", "refuse")
        stack.sim.fault("binance_ws", "disconnect")
        stack.wait(lambda: serving(steady) == serving(restarted) == "coingecko", "failover")
        stack.sim.clear()
        at["back"] = time.monotonic()
        wait_until(
            lambda: httpx.get(f"http://{steady}/courses?exchanger=binance").headers.get(
                "x-rates-stale"
            )
            == "false",
            what="binance fresh again",
        )
        at["fresh"] = time.monotonic()
        restart(stack, restarted)  # a second or so into the hold-down
        at["restart"] = time.monotonic()
        first = sampler.first_answer(restarted, at["restart"])
        at["answer"] = time.monotonic()
        steady_then = serving(steady)
        wait_until(
            lambda: time.monotonic() - at["back"] >= SAMPLE_S, timeout_s=SAMPLE_S + 5, what="25 s"
        )
        final = serving(steady), serving(restarted)
    poller.stop()
    disagree_s, missing_s = sampler.disagreement_s()
    failed = [a for a in poller.answers if a.failed]
    print(
        f"\nBinance back; fresh at the steady worker after {at['fresh'] - at['back']:.2f} s; the "
        f"other worker restarted {at['restart'] - at['back']:.2f} s after, answering again after "
        f"{at['answer'] - at['restart']:.2f} s with {first!r} (steady worker: {steady_then!r}); "
        f"over {SAMPLE_S:.0f} s the two disagreed for {disagree_s:.2f} s (one of them restarting "
        f"{missing_s:.2f} s); through HAProxy: {summary(poller.answers)}"
    )
    assert steady_then == "coingecko", "the restarted worker must answer inside the hold-down"
    assert first == steady_then, "a restarted worker keeps to the hold-down like the others"
    assert final == ("binance", "binance")
    assert not failed, failed[:10]
