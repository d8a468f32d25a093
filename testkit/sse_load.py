"""Many Server-Sent Events subscribers from one machine: the load generator of bench/push.py.

`Fleet` starts `processes` client processes; each opens its share of plain HTTP/1.1 connections
to one URL (one after the other, so the listen backlog never overflows) and reads the streams with
select.epoll and recv_into: no event loop, no HTTP library, no JSON parsing, so that 10,000
subscribers cost the load generator as little CPU as possible on the machine it shares with the
service.

What a subscriber holds is read from a marker in each event: the price of one market, which the
benchmark moves to `base + k` for its k-th change (`Marker`). A subscriber holds change k from
the first event carrying any change >= k (coalescing may skip intermediate states: the latest
state wins). Times are `time.monotonic()`, one clock for every process on a Linux machine, so
the controller's change times and the clients' arrival times compare directly.
"""

from __future__ import annotations

import multiprocessing
import re
import resource
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

TAIL_BYTES = 256  # a marker split across two reads is found in the joined tail


@dataclass(frozen=True)
class Marker:
    """Change k sets the market `symbol` to the integer price `base + k` (k >= 1).

    Any other price of `symbol` (the state before the first change) counts as change 0.
    """

    symbol: str
    base: int

    def price(self, k: int) -> str:
        """The price the controller sets for change k."""
        return str(self.base + k)

    def pattern(self) -> re.Pattern[bytes]:
        """Finds the price of `symbol` in a v2 body (its legs: source, symbol, price, ...)."""
        return re.compile(rb'"symbol":"' + self.symbol.encode() + rb'","price":"([0-9]+)"')


@dataclass
class ClientReport:
    """What one client process saw."""

    connected: int = 0
    failed: int = 0  # connections refused, reset or closed by the server
    events: int = 0
    heartbeats: int = 0
    bytes: int = 0
    # change k -> when each subscriber first held it (monotonic seconds)
    held: dict[int, list[float]] = field(default_factory=dict)
    first_event: int = 0  # subscribers that received their first event

    def progress(self) -> Progress:
        """The counts of this report."""
        return Progress(self.first_event, {k: len(v) for k, v in self.held.items()}, self.events)


@dataclass
class Progress:
    """How far the subscribers are: cheap to send while they receive (no times)."""

    first_event: int = 0
    held: dict[int, int] = field(default_factory=dict)  # change k -> subscribers holding it
    events: int = 0  # events received


class _Client:
    """One client process's subscribers, read with select.epoll (edge-triggered): per ready socket
    one recv_into and a search for the marker in place (no event loop, no HTTP library, no JSON,
    no copy). The load generator shares the cores with the service it measures, so every
    microsecond per event here is one taken from the service."""

    def __init__(self, host: str, port: int, path: str, marker: Marker) -> None:
        self.host, self.port, self.marker = host, port, marker
        self.pattern = marker.pattern()
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n"
            "Cache-Control: no-cache\r\n\r\n"
        ).encode()
        self.report = ClientReport()
        self.epoll = select.epoll()
        self.socks: dict[int, socket.socket] = {}
        self.holds: dict[int, int] = {}  # fd -> the highest change held; -1 before any event
        self.tails: dict[int, bytes] = {}  # fd -> the end of a read that ended mid-event
        self.buffer = bytearray(1 << 16)
        self.view = memoryview(self.buffer)

    def connect(self, count: int) -> None:
        """Open `count` connections one after the other (the listen backlog never overflows),
        each sending its request at once."""
        for _ in range(count):
            try:
                sock = socket.create_connection((self.host, self.port), timeout=10)
                sock.sendall(self.request)
                sock.setblocking(False)
            except OSError:
                self.report.failed += 1
                continue
            fd = sock.fileno()
            self.socks[fd], self.holds[fd], self.tails[fd] = sock, -1, b""
            self.epoll.register(fd, select.EPOLLIN | select.EPOLLET)
            self.report.connected += 1

    def read(self, fd: int) -> None:
        """Read subscriber `fd` until it is drained (edge-triggered: the next arrival is a new
        epoll event; a read shorter than the buffer has taken everything there was)."""
        sock, buffer = self.socks[fd], self.buffer
        while True:
            try:
                size = sock.recv_into(buffer)
            except BlockingIOError:
                return
            except OSError:
                size = 0
            now = time.monotonic()
            if not size:
                self.report.failed += 1  # closed by the server (or reset)
                self.epoll.unregister(fd)
                self.socks.pop(fd).close()
                return
            self.take(fd, size, now)
            if size < len(buffer):
                return

    def take(self, fd: int, size: int, now: float) -> None:
        """What a read of `size` bytes (at the start of the buffer) brought: counts, and the
        changes the subscriber now holds. Searched in place: no copy of the usual read."""
        report, data = self.report, self.buffer
        report.bytes += size
        events = data.count(b"event: rates", 0, size)
        report.events += events
        if not events:  # a heartbeat comes alone: its own chunk, `3\r\n:\n\n\r\n`
            report.heartbeats += data.count(b"\r\n:\n\n", 0, size)
        tail = self.tails[fd]
        whole = data.endswith(b"\n\n\r\n", 0, size)  # the read ends an event and its chunk
        if events == 1 and whole and not tail:
            # The usual read: one whole event, whose legs of the marker's market all carry the
            # same price: the first match is enough.
            match = self.pattern.search(data, 0, size)
            prices = [match.group(1)] if match else []
            self.tails[fd] = b""
        else:  # several events, or one split across reads: the highest price of them all
            joined = tail + bytes(self.view[:size])
            prices = [m.group(1) for m in self.pattern.finditer(joined)]
            self.tails[fd] = b"" if whole else joined[-TAIL_BYTES:]
        if not prices:
            return
        best = max(max(int(p) for p in prices) - self.marker.base, 0)
        holds = self.holds[fd]
        if best > holds:
            if holds < 0:
                report.first_event += 1
            for k in range(max(holds + 1, 1), best + 1):
                report.held.setdefault(k, []).append(now)
            self.holds[fd] = best

    def serve(self, pipe: Connection) -> None:
        """Read every stream and answer the controller's commands until "stop"."""
        control = pipe.fileno()
        self.epoll.register(control, select.EPOLLIN)
        while True:
            for fd, _ in self.epoll.poll():
                if fd != control:
                    self.read(fd)
                    continue
                command = pipe.recv()
                if command == "progress":  # small: polled while the streams run
                    pipe.send(("progress", self.report.progress()))
                elif command == "report":
                    pipe.send(("report", self.report))
                elif command == "stop":
                    for sock in self.socks.values():
                        sock.close()  # no longer counted as failures
                    pipe.send(("report", self.report))
                    return


def _client_main(
    pipe: Connection, host: str, port: int, path: str, count: int, marker: Marker
) -> None:
    """One client process: connect, report, serve the controller until "stop", exit."""
    _raise_nofile()
    client = _Client(host, port, path, marker)
    client.connect(count)
    pipe.send(("connected", client.report.connected, client.report.failed))
    client.serve(pipe)


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Fleet:
    """`subscribers` SSE connections to `path` over `processes` client processes; process i
    connects to `targets[i % len(targets)]` (host, port)."""

    def __init__(
        self,
        targets: list[tuple[str, int]],
        path: str,
        subscribers: int,
        marker: Marker,
        processes: int = 2,
    ) -> None:
        self.targets, self.path = targets, path
        self.marker = marker
        shares = [
            subscribers // processes + (i < subscribers % processes) for i in range(processes)
        ]
        self.shares = [s for s in shares if s]
        self.pipes: list[Connection] = []
        self.procs: list[multiprocessing.Process] = []

    def start(self, timeout_s: float = 300.0) -> tuple[int, int]:
        """Open every connection; returns (connected, failed) once all processes are done."""
        context = multiprocessing.get_context("spawn")
        for index, share in enumerate(self.shares):
            parent, child = context.Pipe()
            host, port = self.targets[index % len(self.targets)]
            args = (child, host, port, self.path, share, self.marker)
            proc = context.Process(target=_client_main, args=args, daemon=True)
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)
        connected = failed = 0
        for pipe in self.pipes:
            if not pipe.poll(timeout_s):
                raise TimeoutError("a client process did not finish connecting")
            _, ok, bad = pipe.recv()
            connected, failed = connected + ok, failed + bad
        return connected, failed

    @property
    def pids(self) -> list[int]:
        """The client processes' ids (their CPU is the load generator's)."""
        return [proc.pid for proc in self.procs if proc.pid is not None]

    def _collect(self, command: str, timeout_s: float) -> list[Any]:
        reports = []
        for pipe in self.pipes:
            pipe.send(command)
        for pipe in self.pipes:
            if not pipe.poll(timeout_s):
                raise TimeoutError("a client process did not report")
            reports.append(pipe.recv()[1])
        return reports

    def report(self, timeout_s: float = 60.0) -> ClientReport:
        """The processes' reports merged, the connections kept open."""
        return merge(self._collect("report", timeout_s))

    def stop(self, timeout_s: float = 60.0) -> ClientReport:
        """Close every connection; the merged final report."""
        try:
            return merge(self._collect("stop", timeout_s))
        finally:
            for proc in self.procs:
                proc.join(timeout=10)
                if proc.is_alive():
                    proc.kill()

    def progress(self, timeout_s: float = 60.0) -> Progress:
        """The processes' counts merged (small: no arrival times)."""
        total = Progress()
        for part in self._collect("progress", timeout_s):
            total.first_event += part.first_event
            total.events += part.events
            for k, count in part.held.items():
                total.held[k] = total.held.get(k, 0) + count
        return total

    def wait_until(
        self, check: Callable[[Progress], bool], timeout_s: float, every_s: float = 0.2
    ) -> ClientReport:
        """Poll the merged progress until `check(progress)` holds (bounded); then the full
        report, either way."""
        deadline = time.monotonic() + timeout_s
        while not check(self.progress()) and time.monotonic() < deadline:
            time.sleep(every_s)
        return self.report()


def merge(reports: list[ClientReport]) -> ClientReport:
    """One report from many processes' reports."""
    total = ClientReport()
    for report in reports:
        total.connected += report.connected
        total.failed += report.failed
        total.events += report.events
        total.heartbeats += report.heartbeats
        total.bytes += report.bytes
        total.first_event += report.first_event
        for k, times in report.held.items():
            total.held.setdefault(k, []).extend(times)
    return total
