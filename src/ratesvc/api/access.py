"""The edge of every answer of an API worker: its X-Request-ID and the optional access log line.

A client's X-Request-ID is kept only when it sent exactly one and it is a short token of safe
characters (`SAFE_REQUEST_ID`, the rule HAProxy's public frontend applies too); otherwise a fresh
UUID replaces it, so an id can never carry a line break, a quote or a megabyte into a log or an
answer. The id is echoed on every answer, kept in the ASGI scope (`SCOPE_KEY`) for the error log,
and written on the access log line (API_ACCESS_LOG). Outermost in the worker, inside uvicorn's
proxy-header handling: the client it logs is the one FORWARDED_ALLOW_IPS lets uvicorn derive.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable

from loguru import logger
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"x-request-id"
SCOPE_KEY = "ratesvc.request_id"
# 1-64 characters of letters, digits and . _ : - (HAProxy's generated ids are UUIDs, 36).
SAFE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")
# Longest request target shown on an access log line (the query is client input).
TARGET_MAX = 200


def fresh_request_id() -> bytes:
    """A new id: a random UUID, as HAProxy's `%[uuid]` makes them."""
    return str(uuid.uuid4()).encode("ascii")


def request_id(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The client's X-Request-ID when it sent exactly one safe one, else a fresh one."""
    found: bytes | None = None
    for name, value in headers:
        if name == HEADER:  # ASGI servers give header names in lower case
            if found is not None:
                return fresh_request_id()
            found = value
    if found is not None and SAFE_REQUEST_ID.fullmatch(found):
        return found
    return fresh_request_id()


def printable(text: str, limit: int = TARGET_MAX) -> str:
    """`text` fit for one log line: bounded, and escaped unless plain printable ASCII."""
    text = text if len(text) <= limit else text[:limit] + "..."
    return text if text.isascii() and text.isprintable() else ascii(text)


def _target(scope: Scope) -> str:
    raw = scope.get("raw_path") or scope.get("path", "").encode("utf-8", "replace")
    query = scope.get("query_string", b"")
    return (raw + b"?" + query if query else raw).decode("latin-1")


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "-"


class RequestEdge:
    """ASGI app: X-Request-ID on every HTTP answer of `app`, and an access log line if `log`.

    Args:
        app: what the worker serves (the fast path in front of the FastAPI app).
        access_log: log one INFO line per answer: method, target, status, client, request id.
    """

    def __init__(self, app: ASGIApp, *, access_log: bool = False) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope["headers"])
        scope[SCOPE_KEY] = rid.decode("ascii")

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), (HEADER, rid)]
                if self.access_log:
                    self._log(scope, message["status"])
            await send(message)

        await self.app(scope, receive, send_with_id)

    @staticmethod
    def _log(scope: Scope, status: int) -> None:
        logger.info(
            "{method} {target} {status} client={client} request_id={request_id}",
            method=printable(scope.get("method", "-")),
            target=printable(_target(scope)),
            status=status,
            client=printable(_client(scope)),
            request_id=scope[SCOPE_KEY],
        )
