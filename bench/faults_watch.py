"""A 20 ms poller of GET /courses for bench/faults.py, and what its answers show.

Each answer is recorded as a Sample (monotonic time, status, exchanger, X-Rates-Stale); scenarios
ask for the answers in a time window and for the longest run of answers that were not "binance,
fresh, 200".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

MAX_SAMPLES = 100_000  # 20 ms for over half an hour: bounded memory


@dataclass(frozen=True)
class Sample:
    """One GET /courses answer (status 0: no answer)."""

    at: float
    status: int
    exchanger: str
    stale: str

    @property
    def good(self) -> bool:
        """Binance serving fresh values."""
        return self.status == 200 and self.exchanger == "binance" and self.stale == "false"


class Watcher:
    """Polls GET /courses every `period_s` in a daemon thread until stopped."""

    def __init__(self, base_url: str, period_s: float = 0.02) -> None:
        self.base_url, self.period_s = base_url, period_s
        self.samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="courses-watcher", daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=2) as http:
            while not self._stop.is_set() and len(self.samples) < MAX_SAMPLES:
                at = time.monotonic()
                try:
                    response = http.get("/courses")
                    body = response.json() if response.status_code == 200 else {}
                    sample = Sample(
                        at,
                        response.status_code,
                        body.get("exchanger", ""),
                        response.headers.get("x-rates-stale", ""),
                    )
                except (httpx.HTTPError, ValueError):
                    sample = Sample(at, 0, "", "")
                with self._lock:
                    self.samples.append(sample)
                self._stop.wait(max(0.0, self.period_s - (time.monotonic() - at)))

    def start(self) -> Watcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def window(self, start: float, end: float | None = None) -> list[Sample]:
        """Answers recorded from `start` to `end` (now when None)."""
        end = time.monotonic() if end is None else end
        with self._lock:
            return [s for s in self.samples if start <= s.at <= end]

    def first(self, start: float, predicate: Callable[[Sample], bool]) -> float | None:
        """Seconds from `start` to the first answer matching `predicate`, None if none yet."""
        for sample in self.window(start):
            if predicate(sample):
                return sample.at - start
        return None


def longest_bad_run(samples: list[Sample]) -> tuple[float, int]:
    """(seconds, answers) of the longest run of answers that were not binance/fresh/200.

    A run lasts from its first bad answer to the next good one (or to its last bad answer).
    """
    best_s, best_n = 0.0, 0
    run_start: float | None = None
    run_n = 0
    for sample in samples:
        if not sample.good:
            run_start = sample.at if run_start is None else run_start
            run_n += 1
            best_s, best_n = max(best_s, sample.at - run_start), max(best_n, run_n)
        elif run_start is not None:
            best_s = max(best_s, sample.at - run_start)
            run_start, run_n = None, 0
    return best_s, best_n


def describe(samples: list[Sample]) -> str:
    """What the poller saw, e.g. '812 answers: 800 binance, 12 coingecko; 0 stale; 0 non-200'."""
    by_exchanger: dict[str, int] = {}
    for sample in samples:
        if sample.status == 200:
            by_exchanger[sample.exchanger] = by_exchanger.get(sample.exchanger, 0) + 1
    stale = sum(1 for s in samples if s.stale == "true")
    errors = sum(1 for s in samples if s.status != 200)
    served = ", ".join(f"{n} {name}" for name, n in sorted(by_exchanger.items()))
    return f"{len(samples)} answers: {served or 'none served'}; {stale} stale; {errors} non-200"
