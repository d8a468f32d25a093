"""Exchange faults injected into the simulator while `ratesvc run` serves: what clients see."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from tests.e2e.harness import PRICES, Service, Sim, all_served, wait_until

pytestmark = pytest.mark.e2e


def counters(sim: Sim) -> dict[str, int]:
    return sim.control.get("/state").json()["counters"]


def serving(service: Service) -> str:
    return service.courses().json()["exchanger"]


@pytest.fixture(autouse=True)
def healthy(service: Service, sim: Sim) -> Iterator[None]:
    """Every test starts and ends with no fault and Binance serving."""
    sim.clear()
    sim.post("/prices", PRICES)
    wait_until(lambda: all_served(service, "binance"), what="binance values")
    wait_until(lambda: serving(service) == "binance", timeout_s=30, what="binance serving")
    yield
    sim.clear()


class Watcher:
    """Polls GET /courses in the background and records (exchanger, stale, status) per answer."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.seen: list[tuple[str, str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            response = self.service.courses()
            body = response.json() if response.status_code == 200 else {}
            self.seen.append(
                (
                    body.get("exchanger", ""),
                    response.headers.get("x-rates-stale", ""),
                    response.status_code,
                )
            )
            time.sleep(0.02)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def test_stall_with_the_socket_open_fails_over_to_coingecko(service: Service, sim: Sim) -> None:
    sim.fault("binance_ws", "stall")
    sim.fault("binance_rest", "refuse")
    wait_until(lambda: serving(service) == "coingecko", timeout_s=20, what="failover on stall")
    assert service.courses().headers["x-rates-stale"] == "false"


def test_a_flickering_binance_does_not_flap_the_default_exchanger(
    service: Service, sim: Sim
) -> None:
    with Watcher(service) as watcher:
        for _ in range(3):
            sim.fault("binance_ws", "refuse")
            sim.fault("binance_rest", "refuse")
            sim.fault("binance_ws", "disconnect")
            wait_until(lambda: serving(service) == "coingecko", timeout_s=10, what="failover")
            sim.clear()
            time.sleep(0.5)  # Binance may reconnect, but for less than the 2 s hold-down
        wait_until(lambda: serving(service) == "binance", timeout_s=30, what="failback")
        # The watcher samples on its own thread: let it record the failback too before it stops.
        wait_until(lambda: watcher.seen[-1][0] == "binance", what="watcher saw the failback")
    served = [e for e, _, status in watcher.seen if status == 200]
    switches = [b for a, b in zip(served, served[1:]) if a != b]
    # Binance flickered three times, but it came back only once: after the hold-down.
    assert switches == ["coingecko", "binance"]
    assert all(status == 200 for _, _, status in watcher.seen)


def test_garbage_frames_are_skipped_without_dropping_the_connection(
    service: Service, sim: Sim
) -> None:
    before = counters(sim)
    sim.fault("binance_ws", "garbage", count=5)
    sim.post("/prices", {"binance": {"BTCUSDT": "70500"}})
    wait_until(lambda: service.values("binance")["BTC-USD"] == "70500", what="price after garbage")
    after = counters(sim)
    assert after.get("binance_ws_attempts", 0) == before.get("binance_ws_attempts", 0)
    assert serving(service) == "binance"


def test_accept_and_drop_reconnects_with_backoff_far_below_the_connection_limit(
    service: Service, sim: Sim
) -> None:
    sim.fault("binance_ws", "accept_and_drop")
    sim.fault("binance_ws", "disconnect")
    start = counters(sim).get("binance_ws_attempts", 0)
    time.sleep(10)
    attempts = counters(sim).get("binance_ws_attempts", 0) - start
    # Backoff from 1 s doubling, full jitter: a handful in 10 s; Binance allows 300 per 5 min.
    assert 1 <= attempts <= 12
    sim.clear()
    wait_until(lambda: serving(service) == "binance", timeout_s=60, what="binance back")


def test_server_shutdown_rotates_the_connection_without_a_gap(service: Service, sim: Sim) -> None:
    before = counters(sim).get("binance_ws_attempts", 0)
    with Watcher(service) as watcher:
        sim.fault("binance_ws", "shutdown", delay_s=1.0)
        wait_until(
            lambda: counters(sim).get("binance_ws_attempts", 0) > before, what="new connection"
        )
        time.sleep(2.0)  # past the old connection's close
    assert watcher.seen and all(e == "binance" and s == "false" for e, s, _ in watcher.seen)
