"""What an HTTP error answer of a venue means, for REST calls and websocket handshakes alike.

Pure functions, no I/O: adapters build on `classify_answer` in their `error_for()` (Binance reads
its ban's end, CoinGecko its error codes); sources/gate.py acts on the errors' holds.
"""

from __future__ import annotations

import re
from typing import Any

from ratesvc.errors import Banned, Blocked, RateLimited, Restricted, SourceError, Unavailable

WAF_HOLD_S = 60.0  # a firewall page (403): no request to the venue for this long
RESTRICTED_HOLD_S = 600.0  # a refused location (451): retry slowly, it needs an operator
LOG_CHARS = 200  # how much of a body goes into an error message
_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


def classify_answer(
    status: int, headers: Any, body: bytes, *, detail: str | None = None, code: int | None = None
) -> SourceError:
    """The error an HTTP error answer means, for REST calls and websocket handshakes alike.

    429 is RateLimited (Retry-After honoured), 418 Banned, 451 Restricted (slow retry), 403 with
    an HTML page Blocked (a firewall, not the API), 5xx/408 Unavailable, others SourceError.

    Args:
        detail: the venue's own message from the body (default: a short form of the body).
        code: the venue's own error code from the body.
    """
    if status == 403 and is_html(headers, body):
        return Blocked(
            f"HTTP 403 from a web firewall, not an API answer ({describe_body(headers, body)})",
            hold_s=WAF_HOLD_S,
            advice="HTTP 403 with an HTML page: a web application firewall in front of the venue "
            "blocks this IP or these requests (not an API error); "
            f"no request to it for {WAF_HOLD_S:.0f}s at a time",
            status=status,
        )
    text = describe_body(headers, body) if detail is None else detail
    message = f"HTTP {status}" + (f": {text}" if text else "")
    kwargs: dict[str, Any] = {"status": status, "code": code}
    if status == 429:
        return RateLimited(message, retry_after_s=retry_after_s(headers), **kwargs)
    if status == 418:
        return Banned(message, retry_after_s=retry_after_s(headers), **kwargs)
    if status == 451:
        return Restricted(
            message,
            hold_s=RESTRICTED_HOLD_S,
            advice=f"{message}: the venue does not serve this location; "
            f"retrying every {RESTRICTED_HOLD_S:.0f}s",
            **kwargs,
        )
    if status >= 500 or status == 408:
        return Unavailable(message, **kwargs)
    return SourceError(message, **kwargs)


def is_html(headers: Any, body: bytes) -> bool:
    """Whether an answer is a web page (a proxy's or firewall's), not an API body."""
    if "html" in str(headers.get("content-type", "")).lower():
        return True
    return body.lstrip()[:15].lower().startswith((b"<!doctype html", b"<html"))


def describe_body(headers: Any, body: bytes) -> str:
    """A short, log-safe description of an answer's body (a page by its title, never its HTML)."""
    if is_html(headers, body):
        title = _TITLE.search(body)
        text = title.group(1).decode("utf-8", "replace").strip() if title else ""
        return f"an HTML page: {' '.join(text.split())[:120]}" if text else "an HTML page"
    return " ".join(body.decode("utf-8", "replace").split())[:LOG_CHARS]


def retry_after_s(headers: Any) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form only), or None."""
    value = headers.get("retry-after")
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None
