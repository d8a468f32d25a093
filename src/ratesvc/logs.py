"""Logging: one loguru sink for ratesvc, uvicorn and every standard-library logger.

Levels mean: DEBUG frames and decisions; INFO connections, failovers, start/stop; WARNING retries,
stale data, skipped frames; ERROR a dependency failing; CRITICAL cannot serve. Whatever the sink
writes, tracebacks included, has every URL's password masked (ratesvc.redact).
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from loguru import logger

from ratesvc.redact import redact_text

FORMAT = (
    "<green>{time:YYYY-MM-DD HH:mm:ss.SSS}</green> <level>{level: <8}</level> "
    "<cyan>{extra[role]}</cyan> {extra[source]}{message}"
)

# Libraries whose INFO chatter is DEBUG for us (per-request access lines, per-frame websocket logs).
_QUIET = {
    "uvicorn.access": logging.WARNING,
    "websockets": logging.INFO,
    "tortoise": logging.INFO,
    "httpx": logging.WARNING,
    "httpcore": logging.WARNING,
}


# asyncio's report of a future whose exception nobody retrieved.
_ABANDONED = "Future exception was never retrieved"

# Connection failures that asyncpg raises besides OSError (refused, reset, timed out, DNS).
_CONNECTION_ERRORS = {"CannotConnectNowError", "ConnectionDoesNotExistError"}


def connection_failure(exc_info: object) -> str | None:
    """One line for a dependency's connection failure (its traceback tells an operator nothing).

    None for anything else, whose traceback is kept.
    """
    exc = exc_info[1] if isinstance(exc_info, tuple) and len(exc_info) == 3 else None
    if isinstance(exc, OSError) or type(exc).__name__ in _CONNECTION_ERRORS:
        return f"{type(exc).__name__}: {exc}"
    return None


class InterceptHandler(logging.Handler):
    """Route a standard-library record to loguru, keeping its level and caller.

    A library's warning about a lost or refused connection (the asyncpg pool retrying while
    Postgres is down, say) becomes one line instead of a 30-line traceback; errors keep theirs.
    """

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        frame, depth = logging.currentframe(), 2
        while frame is not None and frame.f_code.co_filename == logging.__file__:
            frame, depth = frame.f_back, depth + 1
        message, exc_info = record.getMessage(), record.exc_info
        abandoned = record.name == "asyncio" and message.startswith(_ABANDONED)
        brief = (
            connection_failure(exc_info) if record.levelno < logging.ERROR or abandoned else None
        )
        if brief:
            message, exc_info = f"{message} ({brief})", None
            if abandoned:
                # A connection attempt given up on by its timeout (Redis's host name not resolving
                # while its container is stopped, say) failed later: no one was waiting for it.
                level, message = "WARNING", f"an abandoned connection attempt failed ({brief})"
        logger.opt(depth=depth, exception=exc_info).log(level, message)


class RedactingStream:
    """A text stream that masks every URL's password in what is written to it.

    The sink's last line of defence: a library's message or an exception text (a driver error
    quoting its DSN, say) is masked as well as our own lines.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> None:
        """Write `text`, masked."""
        self._stream.write(redact_text(text))

    def flush(self) -> None:
        """Flush the underlying stream."""
        self._stream.flush()

    def isatty(self) -> bool:
        """Whether the underlying stream is a terminal (loguru colours only terminals)."""
        return self._stream.isatty()


def _source_prefix(record: dict) -> bool:
    source = record["extra"].get("source")
    record["extra"]["source"] = (
        f"[{source}] " if source and not str(source).startswith("[") else (source or "")
    )
    record["extra"].setdefault("role", "ratesvc")
    return True


def configure_logging(level: str = "INFO", *, role: str = "ratesvc") -> None:
    """Install the one stderr sink at `level`; route stdlib logging (uvicorn included) to it."""
    logger.remove()
    logger.configure(extra={"role": role, "source": ""})
    logger.add(
        RedactingStream(sys.stderr),
        level=level,
        format=FORMAT,
        filter=_source_prefix,
        backtrace=False,
        diagnose=False,
        enqueue=False,
    )
    logging.basicConfig(handlers=[InterceptHandler()], level=0, force=True)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "fastapi", "asyncio"):
        lib = logging.getLogger(name)
        lib.handlers = [InterceptHandler()]
        lib.propagate = False
    for name, lib_level in _QUIET.items():
        if logging.getLevelName(level) <= logging.DEBUG and name != "uvicorn.access":
            continue
        logging.getLogger(name).setLevel(lib_level)


def uvicorn_log_config() -> dict:
    """A uvicorn log_config that leaves handlers to our InterceptHandler (no duplicate lines)."""
    return {"version": 1, "disable_existing_loggers": False}
