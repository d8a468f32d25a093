"""Fixtures of the end-to-end tests (defined in harness.py)."""

from tests.e2e.harness import (  # noqa: F401  pylint: disable=unused-import
    service_fixture,
    sim_fixture,
)
