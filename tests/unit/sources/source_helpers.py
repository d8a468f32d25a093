"""Shared helpers for the source adapter tests: fixture frames and metric values."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import REGISTRY

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def read_fixture(venue: str, name: str) -> bytes:
    """The raw bytes of tests/fixtures/<venue>/<name>, trailing newline removed."""
    return (FIXTURES / venue / name).read_bytes().rstrip(b"\n")


def metric(name: str, **labels: str) -> float:
    """Current value of a sample in the default registry (0 when never touched)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0
