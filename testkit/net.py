"""Network helpers shared by tests and scripts: Docker's DNS on loopback, free ports, metrics.

`StaticDns` answers a service name with one A record per worker (each on its own 127.0.0.x), like
Docker's embedded DNS does for the replicas of a compose service; `parse_metrics` reads the
Prometheus text format well enough for counters and gauges.
"""

from __future__ import annotations

import re
import resource
import socket
import struct
import threading
from collections.abc import Mapping


class StaticDns:
    """A UDP DNS responder on 127.0.0.1 answering A queries from a fixed table (like Docker's)."""

    def __init__(self, records: Mapping[str, list[str]], ttl: int = 1) -> None:
        self.records = {name.lower(): list(ips) for name, ips in records.items()}
        self.ttl = ttl
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.queries = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="static-dns", daemon=True)

    @property
    def address(self) -> str:
        """`host:port` to give a resolver setting (HAProxy's LB_DNS)."""
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> StaticDns:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                query, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            answer = self.answer(query)
            if answer:
                self.queries += 1
                self.sock.sendto(answer, peer)

    def answer(self, query: bytes) -> bytes | None:
        """The response to one query: A records, NODATA for other types, NXDOMAIN if unknown."""
        if len(query) < 12:
            return None
        qid, flags = struct.unpack(">HH", query[:4])
        pos, labels = 12, []
        while pos < len(query) and query[pos]:
            length = query[pos]
            labels.append(query[pos + 1 : pos + 1 + length].decode("ascii", "replace"))
            pos += 1 + length
        pos += 1
        if pos + 4 > len(query):
            return None
        qtype = struct.unpack(">H", query[pos : pos + 2])[0]
        question = query[12 : pos + 4]
        ips = self.records.get(".".join(labels).lower().rstrip("."))
        answers = []
        if ips is not None and qtype == 1:
            answers = [
                struct.pack(">HHHIH", 0xC00C, 1, 1, self.ttl, 4) + socket.inet_aton(ip)
                for ip in ips
            ]
        rcode = 3 if ips is None else 0
        # QR, AA, RA; RD copied from the query
        response_flags = 0x8000 | 0x0400 | 0x0080 | (flags & 0x0100) | rcode
        header = struct.pack(">HHHHHH", qid, response_flags, 1, len(answers), 0, 0)
        return header + question + b"".join(answers)


# ---------------------------------------------------------------------- ports and metrics
def free_tcp_port(*hosts: str) -> int:
    """A port free on every one of `hosts` at once (each API worker has its own 127.0.0.x)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port = probe.getsockname()[1]
        if all(_can_bind(host, port) for host in hosts):
            return port
    raise RuntimeError(f"no common free port on {hosts}")


def _can_bind(host: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def parse_metrics(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Prometheus text format -> {name: [(labels, value)]} (enough for the tests' counters)."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    pattern = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = pattern.match(line)
        if not match:
            continue
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', match[2] or ""))
        samples.setdefault(match[1], []).append((labels, float(match[3])))
    return samples


def lb_maxconn() -> int:
    """HAProxy's maxconn within this process's open-file limit (it needs two per connection and
    cannot raise a hard limit below its need: LB_MAXCONN's default 20000 wants 40,034)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = hard if hard != resource.RLIM_INFINITY else soft
    return max(256, min(20_000, (limit - 100) // 2))
