"""A steady request loop against `/v1/courses` that records and checks every answer.

A background thread asks all the time (every `interval_s`), alternating a plain GET, whose body
must hold all eight directions, with a conditional one (If-None-Match: the last ETag), which may
answer 304. An answer is *failed* when no HTTP answer came (refused, reset, time-out), its status
is neither 200 nor 304, or its body is incomplete or malformed. Tests mark a point in the record
and look at what came after it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import orjson

from ratesvc.domain import DIRECTIONS


@dataclass(frozen=True)
class Answer:
    """One request of the loop and what came back."""

    at: float  # time.monotonic() when it was sent
    elapsed_s: float
    status: int | None  # None: no HTTP answer at all
    problem: str = ""  # why it failed; "" when it is a good answer
    exchanger: str = ""
    stale: bool | None = None
    values: dict[str, float] = field(default_factory=dict)
    etag: str = ""

    @property
    def failed(self) -> bool:
        """No answer, an error status, or an incomplete body."""
        return bool(self.problem)

    @property
    def fresh(self) -> bool:
        """A full 200 body of all eight directions, not marked stale."""
        return self.status == 200 and not self.problem and self.stale is False


def check_answer(response: httpx.Response, *, at: float, elapsed_s: float) -> Answer:
    """The Answer for one HTTP response, with the reason when it is not a good one."""
    etag = response.headers.get("etag", "")
    stale_header = response.headers.get("x-rates-stale")
    stale = None if stale_header is None else stale_header == "true"
    if response.status_code == 304:
        problem = "" if etag and not response.content else "304 without ETag or with a body"
        return Answer(at, elapsed_s, 304, problem, etag=etag)
    if response.status_code != 200:
        return Answer(at, elapsed_s, response.status_code, f"status {response.status_code}")
    try:
        body = orjson.loads(response.content)
        values = {c["direction"]: float(c["value"]) for c in body["courses"]}
        order = tuple(c["direction"] for c in body["courses"])
        exchanger = body["exchanger"]
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        return Answer(at, elapsed_s, 200, f"malformed body: {err!r}: {response.content[:200]!r}")
    problem = ""
    if order != DIRECTIONS:
        problem = f"incomplete body: directions {order}"
    elif not etag or stale is None:
        problem = "200 without ETag or X-Rates-Stale"
    return Answer(at, elapsed_s, 200, problem, exchanger, stale, values, etag)


class Poller:
    """The request loop (a daemon thread) and its record of answers."""

    def __init__(self, url: str, *, interval_s: float = 0.02, timeout_s: float = 5.0) -> None:
        self.url, self.interval_s = url, interval_s
        self.client = httpx.Client(timeout=timeout_s)
        self.answers: list[Answer] = []  # appended by the thread only
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="poller", daemon=True)

    def start(self) -> Poller:
        """Start asking; returns self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop asking and close the client."""
        self._stop.set()
        self._thread.join(timeout=10)
        self.client.close()

    def _loop(self) -> None:
        etag = ""
        conditional = False
        while not self._stop.is_set():
            headers = {"If-None-Match": etag} if conditional and etag else {}
            began = time.monotonic()
            try:
                response = self.client.get(self.url, headers=headers)
                answer = check_answer(response, at=began, elapsed_s=time.monotonic() - began)
            except httpx.HTTPError as err:
                answer = Answer(began, time.monotonic() - began, None, f"no answer: {err!r}")
            self.answers.append(answer)
            etag = answer.etag or etag
            conditional = not conditional
            # pacing of the loop (not a synchronisation): about 1 / interval_s requests a second
            self._stop.wait(self.interval_s)

    # ------------------------------------------------------------------------- reading
    def mark(self) -> int:
        """A point in the record: answers after it are `since(mark)`."""
        return len(self.answers)

    def since(self, mark: int, until: int | None = None) -> list[Answer]:
        """Answers recorded after `mark` (and before `until`)."""
        return self.answers[mark:until]

    def wait_for(
        self, predicate: Callable[[Answer], bool], *, after: int, timeout_s: float, what: str
    ) -> Answer:
        """The first answer after `after` that satisfies `predicate`; fails after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        seen = after
        while time.monotonic() < deadline:
            upto = len(self.answers)
            for answer in self.answers[seen:upto]:
                if predicate(answer):
                    return answer
            seen = upto
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def summary(answers: list[Answer]) -> str:
    """'N answers (x 200, y 304), k failed, s stale; by exchanger' for a report."""
    by_status: dict[str, int] = {}
    exchangers: dict[str, int] = {}
    for answer in answers:
        key = str(answer.status) if answer.status else "none"
        by_status[key] = by_status.get(key, 0) + 1
        if answer.exchanger:
            exchangers[answer.exchanger] = exchangers.get(answer.exchanger, 0) + 1
    failed = sum(1 for a in answers if a.failed)
    stale = sum(1 for a in answers if a.stale)
    statuses = ", ".join(f"{n} x {s}" for s, n in sorted(by_status.items()))
    served = ", ".join(f"{n} {e}" for e, n in sorted(exchangers.items()))
    return f"{len(answers)} answers ({statuses}), {failed} failed, {stale} stale; {served}"
