"""The /metrics endpoint of the collector and persister listens where METRICS_HOST says."""

from __future__ import annotations

import socket
from collections.abc import Callable

import httpx

from ratesvc import metrics
from ratesvc.settings import Settings


def free_port() -> int:
    """A TCP port free on every loopback address right now."""
    with socket.socket() as probe:
        probe.bind(("0.0.0.0", 0))
        return probe.getsockname()[1]


def reachable(host: str, port: int) -> bool:
    """True when a TCP connection to host:port is accepted."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def test_metrics_listen_on_loopback_only_by_default(
    make_settings: Callable[..., Settings],
) -> None:
    port = free_port()
    server = metrics.serve(port, host=make_settings().metrics_host)
    assert server is not None
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
        assert response.status_code == 200
        assert "ratesvc_source_up" in response.text
        assert not reachable("127.0.0.2", port)  # another interface of this machine
    finally:
        server.shutdown()
        server.server_close()


def test_metrics_host_opens_them_to_other_interfaces(
    make_settings: Callable[..., Settings],
) -> None:
    port = free_port()
    server = metrics.serve(port, host=make_settings(metrics_host="0.0.0.0").metrics_host)
    assert server is not None
    try:
        assert reachable("127.0.0.2", port)
    finally:
        server.shutdown()
        server.server_close()


def test_port_zero_disables_the_endpoint() -> None:
    assert metrics.serve(0, host="127.0.0.1") is None
