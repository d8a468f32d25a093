"""Prints the compose test's report (tests/compose/report.py) at the end of the run."""

from __future__ import annotations

import pytest

from tests.compose.report import REPORT


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not REPORT.notices and not REPORT.figures:
        return
    terminalreporter.section("compose stack (tests/compose)")
    for line in REPORT.notices:
        terminalreporter.write_line(f"!!! {line} !!!", red=True, bold=True)
    for line in REPORT.figures:
        terminalreporter.write_line(line)
