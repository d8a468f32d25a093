"""Moved to testkit/procs.py (shared with bench/ without importing tests/); kept for branches that
still import `tests.procs`."""

from testkit.procs import (  # noqa: F401  pylint: disable=unused-import
    KILL_WAIT_S,
    Daemon,
    process_alive,
    process_table,
    tree_and_matching,
)
