"""`ratesvc api`'s server set-up. Proxy headers: X-Forwarded-For/-Proto count only from
FORWARDED_ALLOW_IPS peers; the open-file limit is raised for stream subscribers.

The app below uvicorn's proxy-header handling is a probe recording the scope, built with the very
options `ratesvc api` passes (apiserver.uvicorn_options); the topology test checks the same
through HAProxy and real workers.
"""

from __future__ import annotations

import resource
from typing import Any

import pytest
import uvicorn

from ratesvc.apiserver import raise_open_file_limit, uvicorn_options
from ratesvc.settings import load_settings

FORGED = "6.6.6.6"


async def seen_by_app(peer: str, trusted: str | None, monkeypatch) -> tuple[str, str]:
    """(client host, scheme) the app sees for a request from `peer` with forged headers."""
    monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)
    if trusted is not None:
        monkeypatch.setenv("FORWARDED_ALLOW_IPS", trusted)
    settings = load_settings(None)
    seen: dict[str, Any] = {}

    async def probe(scope, _receive, _send) -> None:
        seen.update(client=scope["client"][0], scheme=scope["scheme"])

    options = uvicorn_options("127.0.0.1", 8000, forwarded_allow_ips=settings.forwarded_allow_ips)
    config = uvicorn.Config(probe, **options)
    config.load()
    scope = {
        "type": "http",
        "scheme": "http",
        "client": (peer, 40000),
        "headers": [(b"x-forwarded-for", FORGED.encode()), (b"x-forwarded-proto", b"https")],
    }
    await config.loaded_app(scope, None, None)
    return seen["client"], seen["scheme"]


@pytest.mark.parametrize(
    ("peer", "trusted"),
    [
        ("203.0.113.5", None),  # anyone, with the default (loopback only)
        ("127.0.0.2", None),  # loopback, but not the trusted address
        ("10.89.54.7", "10.89.53.0/24"),  # just outside the balancer's network
        ("192.0.2.8", "192.0.2.7,::1"),
    ],
)
async def test_forged_forwarding_headers_from_an_untrusted_peer_change_nothing(
    peer: str, trusted: str | None, monkeypatch
) -> None:
    assert await seen_by_app(peer, trusted, monkeypatch) == (peer, "http")


@pytest.mark.parametrize(
    ("peer", "trusted"),
    [
        ("127.0.0.1", None),  # the default: a balancer on the same host
        ("::1", None),
        ("10.89.53.9", "10.89.53.0/24"),  # compose: the balancer on the stack's network
        ("192.0.2.7", "192.0.2.7,::1"),
    ],
)
async def test_a_trusted_balancer_sets_the_client_address_and_scheme(
    peer: str, trusted: str | None, monkeypatch
) -> None:
    assert await seen_by_app(peer, trusted, monkeypatch) == (FORGED, "https")


def test_the_api_raises_its_open_file_limit_to_the_hard_one_for_stream_subscribers():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))  # a low soft limit, as many hosts set
    try:
        now = raise_open_file_limit()
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == now
        assert now == (hard if hard != resource.RLIM_INFINITY else 1_048_576)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
