"""Harness code shared by the tests, bench/ and locust/: process control, the container engine and
the compose stack driver. Imports nothing from tests/, so scripts can use it too.

(Named `testkit`, not `harness`: pytest puts each test directory on sys.path, and
tests/e2e/harness.py would shadow a top-level `harness` package.)
"""
