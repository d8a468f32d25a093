"""Realistic clients of ratesvc for Locust (FastHttpUser): `locust -f locust/locustfile.py`.

- RevalidatingPoller (most users): a dashboard or exchanger site polling the rates it shows,
  revalidating with If-None-Match; 200 and 304 are both success, a 304 must carry no body.
- FilteringClient: one-off reads with mixed `exchanger` / `direction` filters (repeated and
  comma-separated, any case), the version chosen by path or by `Accept-Version`.
- SloppyClient (few): bad requests; the expected 4xx problem+json counts as success, anything
  else (a 200, a 5xx, another problem type) as a failure.
- V2Poller: the same watchlist polling on `/v2/courses` with If-None-Match (exact decimals).
- StreamSubscriber: holds a `/v2/stream` (SSE) open and records, for every event, the delay from
  the newest leg time in its body to its arrival ("/v2/stream event (ms since newest leg)").
Every answer is checked: status, content type, version header, directions in the stable order.
Without class names Locust runs every class; name some to select them, e.g.
`locust -f locust/locustfile.py V2Poller StreamSubscriber`. `locust/run.py` runs it headless
(the v1 mix unless --classes says otherwise) and writes the reports under docs/loadtest/.
"""

from __future__ import annotations

import json
import random
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from locust import FastHttpUser, HttpUser, between, constant, task

from ratesvc.api.etag import etag_for
from ratesvc.domain import DIRECTIONS  # the stable order every answer uses

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # testkit/, from any directory
# pylint: disable-next=wrong-import-position
from testkit.sse import SseEvent, SseParser  # noqa: E402

EXCHANGERS = ("binance", "coingecko")
# What a dashboard shows: everything, the RUB column, one exchanger, one coin.
WATCHLISTS = (
    (None, ()),
    (None, ("BTC-RUB", "ETH-RUB", "USDTTRC-RUB", "USDTERC-RUB")),
    ("binance", ()),
    ("coingecko", ("BTC-USD", "ETH-USD")),
    (None, ("USDTTRC-RUB",)),
)
# (name in the report, path with query, headers, expected status, expected problem slug)
BAD_REQUESTS = (
    ("bad: unknown direction", "/courses?direction=DOGE-USD", {}, 400, "unknown-direction"),
    ("bad: unknown exchanger", "/v1/courses?exchanger=kraken", {}, 400, "unknown-exchanger"),
    ("bad: empty value", "/courses?direction=", {}, 400, "empty-value"),
    ("bad: unknown parameter", "/courses?currency=BTC", {}, 400, "unknown-parameter"),
    ("bad: Accept-Version 3", "/courses", {"Accept-Version": "3"}, 406, "unsupported-version"),
    ("bad: no such route", "/v3/courses", {}, 404, "not-found"),
)


def rates_path(exchanger: str | None, directions: tuple[str, ...], *, versioned: bool) -> str:
    """A /courses URL; directions come as one comma list or as repeated parameters, any case."""
    params = [f"exchanger={exchanger}"] if exchanger else []
    if directions:
        shown = [d.lower() if random.random() < 0.3 else d for d in directions]
        if random.random() < 0.5:
            params.append("direction=" + ",".join(shown))
        else:
            params += [f"direction={d}" for d in shown]
    path = "/v1/courses" if versioned else "/courses"
    return path + ("?" + "&".join(params) if params else "")


def check_rates(response: Any, exchanger: str | None, directions: tuple[str, ...]) -> str | None:
    """Why a 200 answer is wrong, or None when it is right."""
    if response.headers.get("content-type") != "application/json":
        return f"content-type {response.headers.get('content-type')!r}"
    if response.headers.get("api-version") != "1" or not response.headers.get("etag"):
        return "API-Version or ETag missing"
    body = json.loads(response.content)
    wanted = [d for d in DIRECTIONS if d in directions] if directions else list(DIRECTIONS)
    if [c["direction"] for c in body["courses"]] != wanted:
        return f"directions {[c['direction'] for c in body['courses']]} != {wanted}"
    if exchanger and body["exchanger"] != exchanger:
        return f"exchanger {body['exchanger']} != {exchanger}"
    return None


class RevalidatingPoller(FastHttpUser):
    """Polls one watchlist every 0.5-1.5 s, revalidating with the ETag it was last given."""

    weight = 8
    wait_time = between(0.5, 1.5)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.exchanger, self.directions = random.choice(WATCHLISTS)
        self.versioned = random.random() < 0.5
        self.path = rates_path(self.exchanger, self.directions, versioned=self.versioned)
        self.etag: str | None = None

    @task
    def poll(self) -> None:
        headers = {"If-None-Match": self.etag} if self.etag else {}
        name = ("/v1/courses" if self.versioned else "/courses") + " (poll, If-None-Match)"
        with self.client.get(self.path, headers=headers, name=name, catch_response=True) as r:
            if r.status_code == 304:
                if r.content:
                    r.failure("304 with a body")
                return
            if r.status_code != 200:
                r.failure(f"status {r.status_code}")
                return
            problem = check_rates(r, self.exchanger, self.directions)
            if problem:
                r.failure(problem)
                return
            self.etag = r.headers["etag"]


class FilteringClient(FastHttpUser):
    """One-off reads with random filters; version by path or by Accept-Version."""

    weight = 3
    wait_time = between(0.5, 2.0)

    @task(3)
    def filtered(self) -> None:
        exchanger = random.choice((None, *EXCHANGERS))
        directions = tuple(random.sample(DIRECTIONS, random.randint(0, 4)))
        versioned = random.random() < 0.5
        headers = (
            {}
            if versioned
            else random.choice(({}, {"Accept-Version": "1"}, {"Accept-Version": "v1"}))
        )
        name = "/v1/courses?filters" if versioned else "/courses?filters (Accept-Version)"
        path = rates_path(exchanger, directions, versioned=versioned)
        with self.client.get(path, headers=headers, name=name, catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"status {r.status_code}")
                return
            problem = check_rates(r, exchanger, directions)
            if problem:
                r.failure(problem)

    @task(1)
    def everything(self) -> None:
        with self.client.get("/courses", name="/courses", catch_response=True) as r:
            problem = check_rates(r, None, ()) if r.status_code == 200 else f"{r.status_code}"
            if problem:
                r.failure(problem)


class SloppyClient(FastHttpUser):
    """Sends bad requests; the expected 4xx problem is a success."""

    weight = 1
    wait_time = between(1.0, 3.0)

    @task
    def bad(self) -> None:
        name, path, headers, status, slug = random.choice(BAD_REQUESTS)
        with self.client.get(path, headers=headers, name=name, catch_response=True) as r:
            if r.status_code != status:
                r.failure(f"expected {status}, got {r.status_code}")
                return
            if r.headers.get("content-type") != "application/problem+json":
                r.failure(f"content-type {r.headers.get('content-type')!r}")
                return
            if json.loads(r.content).get("type") != f"/problems/{slug}":
                r.failure(f"problem type {json.loads(r.content).get('type')!r}")
                return
            r.success()  # a 4xx is a failure unless we say otherwise


def v2_path(route: str, exchanger: str | None, directions: tuple[str, ...]) -> str:
    """/v2/courses or /v2/stream with a watchlist's query."""
    params = [f"exchanger={exchanger}"] if exchanger else []
    if directions:
        params.append("direction=" + ",".join(directions))
    return route + ("?" + "&".join(params) if params else "")


def check_v2(body: Any, exchanger: str | None, directions: tuple[str, ...]) -> str | None:
    """Why a v2 body is wrong, or None."""
    wanted = [d for d in DIRECTIONS if d in directions] if directions else list(DIRECTIONS)
    if [c["direction"] for c in body["courses"]] != wanted:
        return f"directions {[c['direction'] for c in body['courses']]} != {wanted}"
    if exchanger and body["exchanger"] != exchanger:
        return f"exchanger {body['exchanger']} != {exchanger}"
    if not all(isinstance(c["value"], str) for c in body["courses"]):
        return "a v2 value is not a decimal string"
    return None


def newest_leg_ms(body: Any) -> int:
    """Epoch ms of the newest leg in a v2 body (RFC 3339 UTC with milliseconds)."""
    times = (leg["as_of"] for course in body["courses"] for leg in course["legs"])
    newest = max(times)  # same format throughout: the text order is the time order
    return int(datetime.fromisoformat(newest.replace("Z", "+00:00")).timestamp() * 1000)


class V2Poller(FastHttpUser):
    """Polls one watchlist on /v2/courses every 0.5-1.5 s, revalidating with its ETag."""

    weight = 2
    wait_time = between(0.5, 1.5)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.exchanger, self.directions = random.choice(WATCHLISTS)
        self.path = v2_path("/v2/courses", self.exchanger, self.directions)
        self.etag: str | None = None

    @task
    def poll(self) -> None:
        headers = {"If-None-Match": self.etag} if self.etag else {}
        name = "/v2/courses (poll, If-None-Match)"
        with self.client.get(self.path, headers=headers, name=name, catch_response=True) as r:
            if r.status_code == 304:
                if r.content:
                    r.failure("304 with a body")
                return
            if r.status_code != 200:
                r.failure(f"status {r.status_code}")
                return
            if r.headers.get("content-type") != "application/json":
                r.failure(f"content-type {r.headers.get('content-type')!r}")
                return
            if r.headers.get("api-version") != "2" or not r.headers.get("etag"):
                r.failure("API-Version or ETag missing")
                return
            problem = check_v2(json.loads(r.content), self.exchanger, self.directions)
            if problem:
                r.failure(problem)
                return
            self.etag = r.headers["etag"]


class StreamSubscriber(HttpUser):
    """Holds /v2/stream open for one watchlist; each event is recorded with its delay (ms) from
    the newest leg time in its body to its arrival: exchange quote -> collector -> Redis -> the
    worker's push -> this client."""

    weight = 1
    wait_time = constant(1)  # before reconnecting, should a stream end

    EVENT = "/v2/stream event (ms since newest leg)"

    @task
    def subscribe(self) -> None:
        exchanger, directions = random.choice(WATCHLISTS)
        path = v2_path("/v2/stream", exchanger, directions)
        # Recorded when the head arrives (a catch_response block would report only at its end,
        # which a held stream never reaches); a non-200 counts as a failure by itself.
        r = self.client.get(path, name="/v2/stream (connect)", stream=True, timeout=(5, 60))
        try:
            if r.status_code != 200:
                return
            if r.headers.get("content-type") != "text/event-stream":
                self.fire(0, 0, f"content-type {r.headers.get('content-type')!r}")
                return
            parser, pending = SseParser(), ""
            for chunk in r.raw.stream(None, decode_content=True):  # each chunk as it arrives
                arrived_ms = time.time() * 1000
                *lines, pending = (pending + chunk.decode()).split("\n")
                for line in lines:
                    item = parser.feed(line)
                    if isinstance(item, SseEvent):
                        self.record(item, exchanger, directions, arrived_ms)
        finally:
            r.close()

    def fire(self, delay_ms: float, length: int, problem: str | None) -> None:
        """Report one event (its time: the delay) or a failure of the stream."""
        self.environment.events.request.fire(
            request_type="SSE",
            name=self.EVENT,
            response_time=delay_ms,
            response_length=length,
            exception=AssertionError(problem) if problem else None,
            context={},
        )

    def record(
        self, event: SseEvent, exchanger: str | None, directions: tuple[str, ...], at_ms: float
    ) -> None:
        """One event: checked, and its delay from the newest leg reported as its time."""
        body = json.loads(event.data)
        problem = check_v2(body, exchanger, directions)
        if event.event != "rates" or event.id != etag_for(event.data.encode()):
            problem = f"event {event.event!r} with id {event.id!r}: not the body's ETag"
        self.fire(max(0.0, at_ms - newest_leg_ms(body)), len(event.data), problem)
