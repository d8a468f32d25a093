"""Domain errors: every error ratesvc raises on purpose subclasses RatesvcError."""

from __future__ import annotations


class RatesvcError(Exception):
    """Base of every ratesvc error."""


class SourceError(RatesvcError):
    """A source could not be reached or answered with an error."""


class RateLimited(SourceError):
    """The venue said we are over its rate limit (HTTP 429/418)."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Unavailable(SourceError):
    """The venue answered with a transient server error (5xx, 408): try again later."""


class ParseError(RatesvcError):
    """A frame the adapter should understand but cannot."""


class StaleFeed(SourceError):
    """No data arrived within the staleness limit."""


def describe(err: BaseException) -> str:
    """``<Type>: <message>`` for logs.

    redis-py's exceptions render as ``server:ResponseError`` under repr(), hiding the message
    (``NOGROUP ...``, ``LOADING ...``) an operator needs.
    """
    message = str(err)
    return f"{type(err).__name__}: {message}" if message else type(err).__name__
