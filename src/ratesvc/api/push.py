"""PushHub: one per worker, fanning each change of a /v2/courses body out to its live subscribers.

Subscribers of the same query share a Topic. When the snapshot changes, the hub wakes (at most
once per `min_interval_s`: changes meanwhile coalesce, the latest state wins), takes each topic's
answer from the v2 RenderCache (rendered once per snapshot version, the very bytes /v2/courses
serves) and, when its ETag moved, encodes the frames ONCE per topic (the SSE event and the
WebSocket text) and wakes the topic's subscribers. A subscriber holds only the sequence number of
what it last sent and one wake-up future: a 1-slot mailbox (what is pending is always the topic's
newest frame), never a queue, so a slow client costs no memory however far behind it is.

Two ways to the client. An SSE subscriber with a Writer (stream.py gets one from the worker's
HTTP protocol, onewrite.DirectWriter) is written to by the hub itself, in one pass over the topic's
subscribers: one `transport.write` each, no task switch. One whose buffer is above its high-water
mark is skipped and marked blocked: it gets the newest frame when the buffer drains (`drained`),
and is stopped as slow after `slow_close_s` blocked. One whose last event is younger than
`min_interval_s` (it joined, or drained, just before) is deferred to a per-topic catch-up.
Otherwise (a WebSocket; SSE under another server) the hub wakes the subscriber's task, which
writes through ASGI `send` (stream.py). The hub never awaits a client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from loguru import logger

from ratesvc import metrics
from ratesvc.api.onewrite import http_chunk
from ratesvc.api.query import Selection
from ratesvc.api.render import Prepared, RenderCache

TRANSPORTS = ("sse", "ws")


class Pacer(Protocol):
    """Time as the hub sees it (injectable: tests move it by hand)."""

    def now(self) -> float:
        """Monotonic seconds."""

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds`."""


class LoopPacer:
    """The event loop's clock."""

    def now(self) -> float:
        """The loop's monotonic time."""
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        """asyncio.sleep."""
        await asyncio.sleep(seconds)


def sse_frame(prepared: Prepared) -> bytes:
    """The SSE event of one answer: `event: rates`, `id: <ETag>`, `data: <body, one line>`."""
    return b"event: rates\nid: %s\ndata: %s\n\n" % (prepared.etag.encode(), prepared.body)


HEARTBEAT = b":\n\n"  # an SSE comment: keeps proxies and clients from timing the stream out
HEARTBEAT_CHUNK = http_chunk(HEARTBEAT)


class Writer(Protocol):
    """Writes a subscriber's SSE bytes straight to its connection (onewrite.DirectWriter)."""

    on_drain: Callable[[], None] | None  # called when a full write buffer has drained

    @property
    def paused(self) -> bool:
        """The connection's write buffer is above its high-water mark."""

    def write(self, chunk: bytes) -> None:
        """Send `chunk` (an HTTP chunk: onewrite.http_chunk) to the client (buffered by the
        transport, never awaited)."""


@dataclass(slots=True)
class Frame:
    """One state of a topic, encoded once for every subscriber."""

    seq: int
    etag: str
    sse: bytes
    text: str
    chunk: bytes = b""  # the SSE event framed as an HTTP chunk (what a Writer sends)


@dataclass(eq=False, slots=True)
class Subscriber:
    """One live client: what it last sent, and the future that wakes it (None while busy)."""

    topic: Topic
    transport: str
    sent_seq: int = 0
    sent_at: float = float("-inf")
    beats: int = 0  # heartbeat rounds seen
    wake: asyncio.Future[None] | None = None
    stopped: bool = False
    closed_by_peer: bool = False  # the client (or the server for it) closed the connection
    writer: Writer | None = None  # set: the hub writes to it directly
    blocked_since: float | None = None  # a write found its buffer full (direct only)
    slow: bool = False  # stopped for staying blocked past slow_close_s

    def notify(self) -> None:
        """Wake the subscriber's task if it is waiting (a busy one looks again when done)."""
        wake = self.wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def stop(self) -> None:
        """End this stream (worker shutdown, client gone)."""
        self.stopped = True
        self.notify()


async def _woken(subscriber: Subscriber) -> None:
    """Until `subscriber.notify()` (or stop()) is called."""
    subscriber.wake = asyncio.get_running_loop().create_future()
    try:
        await subscriber.wake
    finally:
        subscriber.wake = None


@dataclass(eq=False, slots=True)
class Topic:
    """Subscribers of one Selection and the newest frame of its answer."""

    selection: Selection
    frame: Frame | None = None
    subscribers: set[Subscriber] = field(default_factory=set)
    deferred: set[Subscriber] = field(default_factory=set)  # direct, inside their interval
    catch_up: asyncio.Task[None] | None = None  # delivers to `deferred` when their interval ends


@dataclass(slots=True)
class Counts:
    """Events counted locally and flushed to Prometheus in batches (cheap per event)."""

    sent: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TRANSPORTS, 0))
    coalesced: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TRANSPORTS, 0))

    def flush(self) -> None:
        """Add the counts to the metrics and reset them."""
        for transport in TRANSPORTS:
            if self.sent[transport]:
                metrics.PUSH_EVENTS.labels(transport).inc(self.sent[transport])
                self.sent[transport] = 0
            if self.coalesced[transport]:
                metrics.PUSH_COALESCED.labels(transport).inc(self.coalesced[transport])
                self.coalesced[transport] = 0


class PushHub:  # pylint: disable=too-many-instance-attributes  # settings, topics, tasks
    """The worker's fan-out of /v2/courses bodies.

    Args:
        cache: the v2 RenderCache (shared with /v2/courses: one render per snapshot version).
        min_interval_s: at most one event per subscriber per interval (STREAM_MIN_INTERVAL_MS).
        heartbeat_s: SSE comment period (STREAM_HEARTBEAT_S).
        slow_close_s: a client that takes no write for this long is closed (STREAM_SLOW_CLOSE_S).
        pacer: time for the coalescing window and the heartbeat.
    """

    def __init__(
        self,
        cache: RenderCache,
        *,
        min_interval_s: float = 0.25,
        heartbeat_s: float = 15.0,
        slow_close_s: float = 30.0,
        pacer: Pacer | None = None,
    ) -> None:
        self.cache = cache
        self.min_interval_s = min_interval_s
        self.heartbeat_s = heartbeat_s
        self.slow_close_s = slow_close_s
        self.pacer: Pacer = pacer or LoopPacer()
        self.topics: dict[Selection, Topic] = {}
        self.blocked: set[Subscriber] = set()  # direct subscribers waiting for a drain
        self.beats = 0
        self.counts = Counts()
        self._changed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._seq = 0
        self.stopping = False  # set for good by close_all (worker shutdown)
        for transport in TRANSPORTS:  # every series exists (at zero) before the first subscriber
            for metric in (
                metrics.PUSH_SUBSCRIBERS,
                metrics.PUSH_EVENTS,
                metrics.PUSH_COALESCED,
                metrics.PUSH_SLOW_CLOSES,
            ):
                metric.labels(transport)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Follow the mirror's changes; call inside the worker's event loop."""
        if self._tasks:
            return
        self._changed = asyncio.Event()
        self.cache.mirror.on_change.append(self._changed.set)
        self._tasks = [
            asyncio.create_task(self._publish_forever(), name="push-publish"),
            asyncio.create_task(self._beat_forever(), name="push-heartbeat"),
            asyncio.create_task(self._sweep_forever(), name="push-slow-sweep"),
        ]

    async def stop(self) -> None:
        """End every stream and stop the hub's tasks."""
        self.close_all()
        if self._changed.set in self.cache.mirror.on_change:
            self.cache.mirror.on_change.remove(self._changed.set)
        tasks, self._tasks = self._tasks, []
        tasks += [t.catch_up for t in self.topics.values() if t.catch_up is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.counts.flush()

    def close_all(self) -> None:
        """Ask every stream to end now (worker shutdown)."""
        self.stopping = True
        for topic in self.topics.values():
            for subscriber in topic.subscribers:
                subscriber.stop()

    # ------------------------------------------------------------------ subscribers
    def current(self, selection: Selection) -> Prepared:
        """The answer for `selection` now (what /v2/courses would serve)."""
        mirror = self.cache.mirror
        mirror.catch_up(mirror.clock())  # staleness judged now
        return self.cache.get(selection)

    def subscribe(self, selection: Selection, transport: str) -> Subscriber:
        """A new subscriber of `selection`; its topic holds the current frame."""
        topic = self.topics.get(selection)
        if topic is None:
            topic = self.topics[selection] = Topic(selection)
        if topic.frame is None:
            self._refresh(topic)
        subscriber = Subscriber(topic, transport, beats=self.beats)
        topic.subscribers.add(subscriber)
        metrics.PUSH_SUBSCRIBERS.labels(transport).inc()
        if self.stopping:
            subscriber.stopped = True
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Forget `subscriber` (its topic goes when empty)."""
        topic = subscriber.topic
        if subscriber in topic.subscribers:
            topic.subscribers.discard(subscriber)
            metrics.PUSH_SUBSCRIBERS.labels(subscriber.transport).dec()
        topic.deferred.discard(subscriber)
        self.blocked.discard(subscriber)
        if not topic.subscribers and self.topics.get(topic.selection) is topic:
            del self.topics[topic.selection]
            if topic.catch_up is not None:
                topic.catch_up.cancel()

    def mark_sent(self, subscriber: Subscriber, frame: Frame) -> None:
        """Record that `frame` went to `subscriber`; count the states it never saw."""
        self._mark(subscriber, frame, self.pacer.now())

    def _mark(self, subscriber: Subscriber, frame: Frame, now: float) -> None:
        if subscriber.sent_seq:
            skipped = frame.seq - subscriber.sent_seq - 1
            if skipped > 0:
                self.counts.coalesced[subscriber.transport] += skipped
        subscriber.sent_seq = frame.seq
        subscriber.sent_at = now
        self.counts.sent[subscriber.transport] += 1

    # ------------------------------------------------------------------ direct subscribers
    def attach(self, subscriber: Subscriber, writer: Writer) -> None:
        """From now on the hub writes `subscriber`'s events and heartbeats to `writer` itself."""
        subscriber.writer = writer
        frame = subscriber.topic.frame
        if frame is not None:
            self._deliver(subscriber, frame, self.pacer.now())  # a change since its first event

    async def until_stopped(self, subscriber: Subscriber) -> None:
        """Until `subscriber` is stopped (client gone, worker stopping, or too slow)."""
        while not subscriber.stopped:
            await _woken(subscriber)

    def drained(self, subscriber: Subscriber) -> None:
        """`subscriber`'s write buffer fell below its low-water mark: the newest frame, if due."""
        if subscriber.blocked_since is None:
            return
        subscriber.blocked_since = None
        self.blocked.discard(subscriber)
        frame = subscriber.topic.frame
        if frame is not None:
            self._deliver(subscriber, frame, self.pacer.now())

    def _deliver(self, subscriber: Subscriber, frame: Frame, now: float) -> None:
        """Write `frame` to a direct subscriber, or arrange that it gets the newest one later:
        when its buffer drains (blocked) or its interval ends (deferred)."""
        if subscriber.stopped or frame.seq == subscriber.sent_seq:
            return
        if subscriber.blocked_since is not None:
            return  # drained() delivers
        writer: Writer = subscriber.writer  # type: ignore[assignment]
        if writer.paused:
            subscriber.blocked_since = now
            self.blocked.add(subscriber)
        elif now < subscriber.sent_at + self.min_interval_s:
            self._defer(subscriber)
        else:
            writer.write(frame.chunk)
            self._mark(subscriber, frame, now)

    def _defer(self, subscriber: Subscriber) -> None:
        topic = subscriber.topic
        topic.deferred.add(subscriber)
        if topic.catch_up is None:
            topic.catch_up = asyncio.create_task(self._catch_up(topic), name="push-catch-up")

    async def _catch_up(self, topic: Topic) -> None:
        """Deliver the newest frame to the topic's deferred subscribers as their intervals end."""
        try:
            while topic.deferred:
                due = min(s.sent_at for s in topic.deferred) + self.min_interval_s
                if due > self.pacer.now():
                    await self.pacer.sleep(due - self.pacer.now())
                waiting, topic.deferred = topic.deferred, set()
                if self._refresh(topic):  # a newer state: every subscriber of the topic gets it
                    self._fan_out(topic)
                frame = topic.frame
                now = self.pacer.now()
                for subscriber in waiting:
                    if frame is not None:
                        self._deliver(subscriber, frame, now)  # may defer it again
        finally:
            topic.catch_up = None

    def _fan_out(self, topic: Topic, now: float | None = None) -> None:
        """The topic's newest frame to each subscriber: written (direct) or its task woken.

        `now`: the publish round's start, one instant for every topic of the round (a subscriber
        served in one round is due again in the next, however long the rounds take)."""
        frame = topic.frame
        if frame is None:
            return
        now = self.pacer.now() if now is None else now
        cutoff = now - self.min_interval_s
        seq, chunk = frame.seq, frame.chunk
        written = skipped = 0
        # The hot loop of a fan-out (thousands of subscribers per change): the usual case, a
        # direct subscriber due for this frame with room in its buffer, costs one write; every
        # other case goes through _deliver.
        for subscriber in topic.subscribers:
            writer = subscriber.writer
            if writer is None:
                subscriber.notify()
            elif (
                subscriber.sent_at > cutoff
                or subscriber.stopped
                or subscriber.blocked_since is not None
                or writer.paused
                or subscriber.sent_seq == seq
            ):
                self._deliver(subscriber, frame, now)
            else:
                writer.write(chunk)
                if subscriber.sent_seq:
                    skipped += seq - subscriber.sent_seq - 1
                subscriber.sent_seq, subscriber.sent_at = seq, now
                written += 1
        self.counts.sent["sse"] += written
        self.counts.coalesced["sse"] += skipped

    async def wait(self, subscriber: Subscriber) -> None:
        """Until something is due for `subscriber`: a newer frame, a heartbeat, or its end.

        A newer frame is held until `min_interval_s` after the subscriber's last event.
        """
        while not subscriber.stopped:
            frame = subscriber.topic.frame
            if frame is not None and frame.seq != subscriber.sent_seq:
                due = subscriber.sent_at + self.min_interval_s
                if self.pacer.now() >= due:
                    return
                await self.pacer.sleep(due - self.pacer.now())
                self.refresh(subscriber.topic)  # the latest state when the hold ends
                continue
            if subscriber.beats != self.beats:
                return
            await _woken(subscriber)

    # ------------------------------------------------------------------ the hub's loops
    def _refresh(self, topic: Topic) -> bool:
        prepared = self.current(topic.selection)
        if prepared.status != 200:
            return False
        frame = topic.frame
        if frame is not None and frame.etag == prepared.etag:
            return False
        self._seq += 1
        sse = sse_frame(prepared)
        topic.frame = Frame(self._seq, prepared.etag, sse, prepared.body.decode(), http_chunk(sse))
        return True

    def refresh(self, topic: Topic, now: float | None = None) -> None:
        """Re-read `topic`'s answer; send it to (or wake) its subscribers if it changed."""
        if self._refresh(topic):
            self._fan_out(topic, now)

    def publish(self, now: float | None = None) -> None:
        """Re-read every topic's answer; send it to (or wake) the subscribers of those that
        changed. `now`: the round's start (default: the pacer's now)."""
        now = self.pacer.now() if now is None else now
        for topic in list(self.topics.values()):
            self.refresh(topic, now)
        self.counts.flush()

    async def _publish_forever(self) -> None:
        while True:
            await self._changed.wait()
            self._changed.clear()
            started = self.pacer.now()
            # The loop's one broad except: a bug in one publish must not stop the streams.
            try:
                self.publish(started)
            except Exception:  # pylint: disable=broad-exception-caught
                logger.exception("push publish failed")
            # Changes meanwhile coalesce. The window runs from the publish's start, not its end,
            # so a long fan-out neither slows the cadence nor moves it out of step with the
            # other workers' (they see the same changes at the same moments).
            await self.pacer.sleep(max(0.0, started + self.min_interval_s - self.pacer.now()))

    async def _beat_forever(self) -> None:
        while True:
            await self.pacer.sleep(self.heartbeat_s)
            self.beats += 1
            for topic in self.topics.values():
                for subscriber in topic.subscribers:
                    writer = subscriber.writer
                    if writer is None:
                        subscriber.notify()
                    elif not (
                        subscriber.stopped or writer.paused or subscriber.blocked_since is not None
                    ):
                        writer.write(HEARTBEAT_CHUNK)
            self.counts.flush()

    async def _sweep_forever(self) -> None:
        """Stop direct subscribers blocked for longer than `slow_close_s` (counted)."""
        every_s = min(1.0, self.slow_close_s / 2)
        while True:
            await self.pacer.sleep(every_s)
            now = self.pacer.now()
            for subscriber in list(self.blocked):
                since = subscriber.blocked_since
                if since is not None and now - since >= self.slow_close_s:
                    self.blocked.discard(subscriber)
                    subscriber.slow = True
                    subscriber.stop()
