"""Library log records reach the one loguru sink; connection failures stay one line."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
from collections.abc import Iterator

import pytest
from loguru import logger

from ratesvc.logs import configure_logging


@pytest.fixture(name="lines")
def lines_fixture() -> Iterator[list[str]]:
    """Everything logged while the test runs, as the sink formats it (tracebacks included)."""
    configure_logging("INFO", role="persister")
    captured: list[str] = []
    sink = logger.add(captured.append, level="INFO", format="{level} {message}")
    yield captured
    logger.remove(sink)
    configure_logging("INFO")


def raised(exc: BaseException) -> BaseException:
    """`exc` after being raised, so it carries a traceback as a logged one would."""
    caught: BaseException | None = None
    try:
        raise exc
    except BaseException as err:  # pylint: disable=broad-exception-caught
        caught = err
    assert caught is exc
    return caught


def test_a_library_warning_about_a_refused_connection_is_one_line(lines: list[str]) -> None:
    err = raised(ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)"))
    logging.getLogger("asyncpg.pool").warning(
        "Failed to restore the pool connection floor; retrying", exc_info=err
    )
    (line,) = lines
    assert line.startswith("WARNING Failed to restore the pool connection floor; retrying")
    assert "ConnectionRefusedError: [Errno 111] Connect call failed" in line
    assert "Traceback" not in line


def test_other_library_warnings_and_errors_keep_their_traceback(lines: list[str]) -> None:
    bug = raised(KeyError("price"))
    logging.getLogger("somelib").warning("unexpected reply", exc_info=bug)
    refused = raised(ConnectionRefusedError(111, "refused"))
    logging.getLogger("somelib").error("gave up", exc_info=refused)
    assert len(lines) == 2
    assert all("Traceback" in line for line in lines)


def abandon(exc: BaseException) -> None:
    """What a timed-out connect leaves behind: a future whose exception nobody retrieves."""

    async def leave() -> None:
        future = asyncio.get_running_loop().create_future()
        future.set_exception(raised(exc))
        del future
        gc.collect()  # asyncio reports the unretrieved exception when the future is collected

    asyncio.run(leave())


def test_a_connection_attempt_abandoned_by_its_timeout_is_one_warning(lines: list[str]) -> None:
    abandon(socket.gaierror(-3, "Temporary failure in name resolution"))
    assert [line.rstrip("\n") for line in lines] == [
        "WARNING an abandoned connection attempt failed "
        "(gaierror: [Errno -3] Temporary failure in name resolution)"
    ]


def test_any_other_unretrieved_exception_stays_an_error_with_its_traceback(
    lines: list[str],
) -> None:
    abandon(KeyError("price"))
    (line,) = lines
    assert line.startswith("ERROR Future exception was never retrieved") and "Traceback" in line
