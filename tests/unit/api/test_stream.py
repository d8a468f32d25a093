"""Live push through a real uvicorn worker (worker_app, ratesvc's uvicorn options): GET /v2/stream
(Server-Sent Events) and the /v2/ws WebSocket."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable

import httpx
import pytest
from prometheus_client import REGISTRY
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from ratesvc.api.app import create_app
from ratesvc.api.mirror import RateMirror
from ratesvc.api.push import PushHub, Subscriber
from ratesvc.settings import Settings
from testkit.sse import Comment, SseEvent
from tests.unit.api.api_helpers import T0, tick
from tests.unit.api.stream_helpers import WAIT_S, FakePacer, PingRecorder, serve, sse

QUERY = "?exchanger=binance&direction=btc-usd,ETH-RUB"


class Market:
    """Moves BTC-USD on binance: each call a new value with a newer leg."""

    def __init__(self, mirror: RateMirror) -> None:
        self.mirror = mirror
        self.n = 0

    def move(self) -> str:
        self.n += 1
        value = f"54000.{self.n:06d}"
        self.mirror.apply([tick("binance", "BTC-USD", value, ts_ms=T0 + self.n)])
        return value


async def courses(url: str, query: str = QUERY) -> httpx.Response:
    async with httpx.AsyncClient(timeout=WAIT_S) as client:
        return await client.get(f"{url}/v2/courses{query}")


def as_event(answer: httpx.Response) -> SseEvent:
    """The event /v2/stream sends for this /v2/courses answer."""
    return SseEvent("rates", answer.headers["etag"], answer.text)


def metric(name: str, transport: str) -> float:
    return REGISTRY.get_sample_value(name, {"transport": transport}) or 0.0


def only_subscriber(hub: PushHub) -> Subscriber:
    (topic,) = hub.topics.values()
    (subscriber,) = topic.subscribers
    return subscriber


@pytest.fixture(params=["hub-writes", "asgi-send"])
def http(request: pytest.FixtureRequest) -> dict[str, str]:
    """The worker's HTTP protocol (the hub writes SSE events itself) or stock uvicorn's (each
    stream's task writes its events through ASGI send): both must keep the contract."""
    return {} if request.param == "hub-writes" else {"http": "httptools"}


async def until(condition: Callable[[], bool]) -> None:
    """Wait (bounded) for a condition the server's tasks make true."""
    async with asyncio.timeout(WAIT_S):
        while not condition():
            await asyncio.sleep(0.01)


async def test_the_first_event_comes_at_once_with_the_body_and_etag_of_v2_courses(
    settings: Settings, mirror: RateMirror
) -> None:
    async with serve(create_app(settings, mirror=mirror)) as served:
        answer = await courses(served.url)
        async with sse(served.url, QUERY) as stream:
            headers = stream.response.headers
            assert stream.response.status_code == 200
            assert headers["content-type"] == "text/event-stream"
            assert headers["cache-control"] == "no-cache"
            assert headers["x-accel-buffering"] == "no"
            assert headers["api-version"] == "2"
            assert await stream.next() == as_event(answer)
            assert "\n" not in answer.text


async def test_a_change_sends_the_new_body_and_etag(
    settings: Settings, mirror: RateMirror, http: dict[str, str]
) -> None:
    market = Market(mirror)
    async with serve(create_app(settings, mirror=mirror), **http) as served:
        async with sse(served.url, QUERY) as stream:
            first = await stream.event()
            value = market.move()
            event = await stream.event()
            answer = await courses(served.url)
            assert event == as_event(answer) != first
            assert json.loads(event.data)["courses"][0]["value"] == value


async def test_under_the_worker_protocol_the_hub_writes_the_events_itself(
    settings: Settings, mirror: RateMirror, http: dict[str, str]
) -> None:
    market = Market(mirror)
    app = create_app(settings, mirror=mirror)
    hub: PushHub = app.state.push
    async with serve(app, **http) as served, sse(served.url, QUERY) as stream:
        await stream.event()
        await until(lambda: bool(hub.topics))
        subscriber = only_subscriber(hub)
        # the fan-out path (one transport write per event) only where the protocol offers it
        await until(lambda: (subscriber.writer is not None) == (not http))
        value = market.move()
        event = await stream.event()
        assert json.loads(event.data)["courses"][0]["value"] == value
        assert subscriber.sent_seq == subscriber.topic.frame.seq  # type: ignore[union-attr]


async def test_last_event_id_equal_to_the_current_etag_skips_the_first_event(
    settings: Settings, mirror: RateMirror, http: dict[str, str]
) -> None:
    market = Market(mirror)
    async with serve(create_app(settings, mirror=mirror), **http) as served:
        etag = (await courses(served.url)).headers["etag"]
        async with sse(served.url, QUERY, {"Last-Event-ID": etag}) as stream:
            assert stream.response.status_code == 200
            market.move()
            event = await stream.event()  # the change, not the state the client holds
            assert event == as_event(await courses(served.url))
            assert event.id != etag


async def test_a_burst_of_changes_gives_one_event_per_interval_with_the_newest_state(
    make_settings: Callable[..., Settings], mirror: RateMirror, http: dict[str, str]
) -> None:
    settings = make_settings(stream_min_interval_ms=250)
    pacer = FakePacer()
    market = Market(mirror)
    app = create_app(settings, mirror=mirror, push_pacer=pacer)
    coalesced = metric("ratesvc_push_coalesced_total", "sse")
    async with serve(app, **http) as served, sse(served.url, QUERY) as stream:
        first = await stream.event()  # at t=0
        market.move()
        # the hub published it and holds its window; the subscriber holds it until t=0.25
        await pacer.sleepers_until(0.25, count=2)
        for _ in range(20):
            newest = market.move()
        pacer.advance(0.25)
        burst = await stream.event()
        assert json.loads(burst.data)["courses"][0]["value"] == newest
        assert burst == as_event(await courses(served.url))
        # nothing else was pending: the next event is the next change
        await pacer.sleepers_until(0.5)
        after = market.move()
        pacer.advance(0.25)
        following = await stream.event()
        assert json.loads(following.data)["courses"][0]["value"] == after
        assert len({first.id, burst.id, following.id}) == 3
    assert metric("ratesvc_push_coalesced_total", "sse") > coalesced


async def test_an_idle_stream_gets_a_heartbeat_comment(
    settings: Settings, mirror: RateMirror, http: dict[str, str]
) -> None:
    pacer = FakePacer()
    app = create_app(settings, mirror=mirror, push_pacer=pacer)
    async with serve(app, **http) as served, sse(served.url, QUERY) as stream:
        await stream.event()
        await pacer.sleepers_until(settings.stream_heartbeat_s)
        pacer.advance(settings.stream_heartbeat_s)
        assert isinstance(await stream.next(), Comment)


def stalled_reader(port: int, query: str = "") -> socket.socket:
    """A client that sends its request and then reads nothing (a tiny receive buffer)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET /v2/stream{query} HTTP/1.1\r\nHost: ratesvc\r\n\r\n".encode())
    return sock


async def stall(market: Market, hub: PushHub) -> Subscriber:
    """Move prices until the stalled subscriber is 50 states behind (its writes are blocked)."""
    await until(lambda: len(hub.topics) == 1)
    subscriber = only_subscriber(hub)
    for _ in range(20_000):
        market.move()
        await asyncio.sleep(0)  # let the hub and the subscriber run
        frame = subscriber.topic.frame
        assert frame is not None
        if frame.seq - subscriber.sent_seq >= 50:
            return subscriber
    raise AssertionError("the server never stopped writing to a client that reads nothing")


async def test_a_client_that_does_not_read_costs_no_backlog_and_gets_the_newest_state(
    make_settings: Callable[..., Settings], mirror: RateMirror, http: dict[str, str]
) -> None:
    settings = make_settings(stream_min_interval_ms=0)
    market = Market(mirror)
    app = create_app(settings, mirror=mirror)
    hub: PushHub = app.state.push
    async with serve(app, **http) as served:
        sock = stalled_reader(served.port)
        try:
            subscriber = await stall(market, hub)
            written = subscriber.sent_seq
            for _ in range(500):  # much more change while it still reads nothing
                market.move()
                await asyncio.sleep(0)
            assert subscriber.sent_seq == written  # nothing more was written or queued for it
            newest = (await courses(served.url, "")).text
            received: list[str] = []
            reader = asyncio.create_task(asyncio.to_thread(read_events_until, sock, newest))
            received = await asyncio.wait_for(reader, WAIT_S)
        finally:
            sock.close()
    assert received[-1] == newest
    # far fewer events than changes: what it missed while stalled was never queued
    assert len(received) < market.n - 500


def read_events_until(sock: socket.socket, body: str) -> list[str]:
    """Read the raw response until an event whose data is `body`; the events' data in order."""
    sock.settimeout(WAIT_S)
    data = b""
    while f"data: {body}\n\n".encode() not in data:
        chunk = sock.recv(1 << 20)
        if not chunk:
            raise EOFError("closed before the newest state arrived")
        data += chunk
    return [line[6:] for line in data.decode().split("\n") if line.startswith("data: ")]


async def test_a_client_that_stays_stalled_is_closed(
    make_settings: Callable[..., Settings], mirror: RateMirror, http: dict[str, str]
) -> None:
    settings = make_settings(stream_min_interval_ms=0, stream_slow_close_s=0.5)
    market = Market(mirror)
    app = create_app(settings, mirror=mirror)
    hub: PushHub = app.state.push
    closes = metric("ratesvc_push_slow_closes_total", "sse")
    async with serve(app, **http) as served:
        sock = stalled_reader(served.port)
        try:
            await stall(market, hub)
            await until(lambda: metric("ratesvc_push_slow_closes_total", "sse") > closes)
            await until(lambda: not hub.topics)  # the subscriber is gone
            assert await asyncio.to_thread(read_to_end, sock)
        finally:
            sock.close()


def read_to_end(sock: socket.socket) -> bool:
    """True once the server has closed the connection (EOF or reset)."""
    sock.settimeout(WAIT_S)
    try:
        while sock.recv(1 << 20):
            pass
    except ConnectionResetError:
        pass
    return True


BAD_QUERIES = [
    ("?direction=BTC-XXX", 400, "unknown-direction"),
    ("?exchanger=kraken", 400, "unknown-exchanger"),
    ("?at=2026-12-01T17:59:10Z", 400, "unknown-parameter"),
    ("?direction=", 400, "empty-value"),
    ("?exchanger=binance&exchanger=coingecko", 400, "repeated-parameter"),
    ("?direction=" + "BTC-USD," * 200, 414, "query-too-long"),
]


@pytest.mark.parametrize(("query", "status", "slug"), BAD_QUERIES)
async def test_a_bad_query_is_a_4xx_problem_on_both_transports(
    settings: Settings, mirror: RateMirror, query: str, status: int, slug: str
) -> None:
    async with serve(create_app(settings, mirror=mirror)) as served:
        async with sse(served.url, query) as stream:
            await stream.response.aread()
            answer = stream.response
        assert answer.status_code == status
        assert answer.headers["content-type"] == "application/problem+json"
        problem = answer.json()
        assert problem["type"] == f"/problems/{slug}" and problem["allowed"]
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"ws://127.0.0.1:{served.port}/v2/ws{query}"):
                pass
        response = refused.value.response
        assert response.status_code == status
        assert response.headers["content-type"] == "application/problem+json"
        assert json.loads(response.body)["type"] == f"/problems/{slug}"


def requests_counted(path: str, status: int) -> float:
    labels = {"app_name": "ratesvc", "method": "GET", "path": path, "status_code": str(status)}
    return REGISTRY.get_sample_value("ratesvc_http_requests_total", labels) or 0.0


async def test_streams_are_counted_in_the_request_metrics_once_their_answer_starts(
    settings: Settings, mirror: RateMirror
) -> None:
    """Operators see /v2/stream and /v2/ws in ratesvc_http_requests_total by status like every
    other route, counted while the stream is still open (not hours later when it ends)."""
    bad = "?direction=DOGE-USD"
    cases = [("/v2/stream", 200), ("/v2/stream", 400), ("/v2/ws", 101), ("/v2/ws", 400)]
    before = {case: requests_counted(*case) for case in cases}

    def counted(path: str, status: int) -> Callable[[], bool]:
        return lambda: requests_counted(path, status) == before[(path, status)] + 1

    async with serve(create_app(settings, mirror=mirror)) as served:
        async with sse(served.url, QUERY) as stream:
            await stream.event()
            await until(counted("/v2/stream", 200))
        async with sse(served.url, bad) as stream:
            await stream.response.aread()
        await until(counted("/v2/stream", 400))
        async with connect(f"ws://127.0.0.1:{served.port}/v2/ws{QUERY}") as ws:
            await asyncio.wait_for(ws.recv(), WAIT_S)
            await until(counted("/v2/ws", 101))
        with pytest.raises(InvalidStatus):
            async with connect(f"ws://127.0.0.1:{served.port}/v2/ws{bad}"):
                pass
        await until(counted("/v2/ws", 400))
    assert {case: requests_counted(*case) - before[case] for case in cases} == dict.fromkeys(
        cases, 1
    )


async def test_nothing_known_yet_is_a_503_problem(
    settings: Settings, empty_mirror: RateMirror
) -> None:
    async with serve(create_app(settings, mirror=empty_mirror)) as served:
        async with sse(served.url) as stream:
            await stream.response.aread()
            assert stream.response.status_code == 503
            assert stream.response.headers["retry-after"]
            assert stream.response.json()["type"] == "/problems/no-data"


async def test_the_websocket_sends_the_same_bodies_as_text_frames(
    settings: Settings, mirror: RateMirror
) -> None:
    market = Market(mirror)
    async with serve(create_app(settings, mirror=mirror)) as served:
        async with connect(f"ws://127.0.0.1:{served.port}/v2/ws{QUERY}") as ws:
            assert ws.response.headers["api-version"] == "2"
            first = await asyncio.wait_for(ws.recv(), WAIT_S)
            assert isinstance(first, str)
            assert first == (await courses(served.url)).text
            value = market.move()
            changed = await asyncio.wait_for(ws.recv(), WAIT_S)
            assert changed == (await courses(served.url)).text
            assert json.loads(changed)["courses"][0]["value"] == value


async def test_the_server_pings_the_websocket(
    make_settings: Callable[..., Settings], mirror: RateMirror
) -> None:
    settings = make_settings(stream_ws_ping_s=0.2)
    async with serve(create_app(settings, mirror=mirror)) as served:
        url = f"ws://127.0.0.1:{served.port}/v2/ws"
        async with connect(url, create_connection=PingRecorder, ping_interval=None) as ws:
            await asyncio.wait_for(ws.recv(), WAIT_S)
            assert isinstance(ws, PingRecorder)
            await until(lambda: ws.pings >= 2)  # type: ignore[attr-defined]


async def test_stopping_the_worker_ends_streams_at_once_and_cleanly(
    settings: Settings, mirror: RateMirror
) -> None:
    app = create_app(settings, mirror=mirror)
    async with serve(app) as served:
        async with (
            sse(served.url, QUERY) as stream,
            connect(f"ws://127.0.0.1:{served.port}/v2/ws{QUERY}") as ws,
        ):
            await stream.event()
            await asyncio.wait_for(ws.recv(), WAIT_S)
            stopping = asyncio.create_task(served.stop())
            # the response ends with its last chunk (a cut connection would raise here)
            assert await stream.rest() == []
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), WAIT_S)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
            await stopping
    assert not app.state.push.topics
