"""Domain errors: every error ratesvc raises on purpose subclasses RatesvcError.

Source errors carry what the venue answered (`status`, its own error `code`) and a `kind`, the
label under which sources/lane.py counts them in ``ratesvc_source_errors_total``.
"""

from __future__ import annotations

from typing import ClassVar


class RatesvcError(Exception):
    """Base of every ratesvc error."""


class SourceError(RatesvcError):
    """A source could not be reached or answered with an error.

    Args:
        status: the HTTP status of the answer behind it (None: there was no HTTP answer).
        code: the venue's own error code from the answer's body, if it had one.
    """

    kind: ClassVar[str] = "source"

    def __init__(self, message: str = "", *, status: int | None = None, code: int | None = None):
        super().__init__(message)
        self.status, self.code = status, code


class RateLimited(SourceError):
    """The venue said we are over its rate limit (HTTP 429); wait `retry_after_s` if given."""

    kind: ClassVar[str] = "rate_limited"

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: float | None = None,
        status: int | None = None,
        code: int | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code)
        self.retry_after_s = retry_after_s


class Banned(RateLimited):
    """The venue banned this IP (Binance: HTTP 418) until `until_s` (epoch s; None: not said)."""

    kind: ClassVar[str] = "banned"

    def __init__(
        self,
        message: str,
        *,
        until_s: float | None = None,
        retry_after_s: float | None = None,
        status: int | None = None,
        code: int | None = None,
    ) -> None:
        super().__init__(message, retry_after_s=retry_after_s, status=status, code=code)
        self.until_s = until_s


class Held(RateLimited):
    """Nothing was sent: the venue's gate is closed (a ban, a Retry-After, a refusal) a while."""

    kind: ClassVar[str] = "held"


class Refused(SourceError):
    """The venue refuses this client for a reason quick retries cannot fix.

    Args:
        hold_s: how long no request should go to the venue before trying again.
        advice: what the operator can do, logged once per episode (sources/gate.py).
    """

    kind: ClassVar[str] = "refused"

    def __init__(
        self,
        message: str,
        *,
        hold_s: float,
        advice: str,
        status: int | None = None,
        code: int | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code)
        self.hold_s, self.advice = hold_s, advice


class Restricted(Refused):
    """The venue does not serve this location (HTTP 451)."""

    kind: ClassVar[str] = "restricted"


class Blocked(Refused):
    """A web firewall in front of the venue blocked the request (HTTP 403 with an HTML page)."""

    kind: ClassVar[str] = "blocked"


class Misconfigured(SourceError):
    """The venue says our settings are wrong (a bad key, a key sent to the wrong API root)."""

    kind: ClassVar[str] = "config"


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
