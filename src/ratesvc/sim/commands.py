"""Binance websocket request protocol: SUBSCRIBE, UNSUBSCRIBE, LIST_SUBSCRIPTIONS, SET_PROPERTY and
GET_PROPERTY with the documented replies and error objects. Pure: no I/O, no timers.

Error replies come wrapped as the live servers send them, ``{"error": {"code": N, "msg": "..."},
"id": <the request's id>}``, with ``id`` left out when the request had none usable (not JSON, no
valid id); the docs' table shows only the inner object (exchanges.md section G; fixtures
tests/fixtures/binance/error_reply_*.json). Sim choices where the docs are silent: a missing
``id`` is the code-2 "request ID" error, a SUBSCRIBE over the stream limit is a code-2 error that
adds nothing, and unknown streams are acknowledged but never deliver data (as the real server does
for unknown symbols).
"""

from __future__ import annotations

import json
import re
from typing import Any, Protocol

METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
_ID_TEXT = re.compile(r"^[A-Za-z0-9]{1,36}$")
_INT64 = (-(2**63), 2**63 - 1)

Reply = dict[str, Any]


class Subscriber(Protocol):
    """What a command needs from a connection."""

    combined: bool
    max_streams: int

    @property
    def stream_names(self) -> list[str]:
        """Current subscriptions in subscription order."""

    def subscribe(self, names: list[str]) -> None:
        """Add streams (duplicates ignored)."""

    def unsubscribe(self, names: list[str]) -> None:
        """Remove streams (unknown names ignored)."""


def _error(code: int, msg: str) -> Reply:
    return {"code": code, "msg": msg}


def _invalid(msg: str) -> Reply:
    return _error(2, f"Invalid request: {msg}")


def _valid_id(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, int) and not isinstance(value, bool):
        return _INT64[0] <= value <= _INT64[1]
    return isinstance(value, str) and bool(_ID_TEXT.match(value))


def _stream_params(params: Any) -> list[str] | Reply:
    if not isinstance(params, list):
        return _invalid("missing field `params`" if params is None else "params must be an array")
    if not all(isinstance(p, str) for p in params):
        return _invalid("invalid type: expected a string")
    return params


def _subscribe(conn: Subscriber, params: Any, req_id: Any) -> Reply:
    names = _stream_params(params)
    if isinstance(names, dict):
        return names
    if len(set(conn.stream_names) | set(names)) > conn.max_streams:
        return _invalid(f"too many streams: at most {conn.max_streams} per connection")
    conn.subscribe(names)
    return {"result": None, "id": req_id}


def _unsubscribe(conn: Subscriber, params: Any, req_id: Any) -> Reply:
    names = _stream_params(params)
    if isinstance(names, dict):
        return names
    conn.unsubscribe(names)
    return {"result": None, "id": req_id}


def _list(conn: Subscriber, _params: Any, req_id: Any) -> Reply:
    return {"result": conn.stream_names, "id": req_id}


def _property(conn: Subscriber, params: Any, req_id: Any, *, setting: bool) -> Reply:
    params = params if isinstance(params, list) else []
    if len(params) > (2 if setting else 1):
        return _invalid("too many parameters")
    if not params or not isinstance(params[0], str):
        return _invalid("property name must be a string")
    if params[0] != "combined":
        return _error(0, "Unknown property")
    if not setting:
        return {"result": conn.combined, "id": req_id}
    if len(params) < 2 or not isinstance(params[1], bool):
        return _error(1, "Invalid value type: expected Boolean")
    conn.combined = params[1]
    return {"result": None, "id": req_id}


def _set_property(conn: Subscriber, params: Any, req_id: Any) -> Reply:
    return _property(conn, params, req_id, setting=True)


def _get_property(conn: Subscriber, params: Any, req_id: Any) -> Reply:
    return _property(conn, params, req_id, setting=False)


_HANDLERS = {
    "SUBSCRIBE": _subscribe,
    "UNSUBSCRIBE": _unsubscribe,
    "LIST_SUBSCRIPTIONS": _list,
    "SET_PROPERTY": _set_property,
    "GET_PROPERTY": _get_property,
}


def handle_command(text: str | bytes, conn: Subscriber) -> Reply:
    """Apply one client message to `conn` and return the reply object to send back."""
    try:
        request = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        line, col = (exc.lineno, exc.colno) if isinstance(exc, json.JSONDecodeError) else (1, 1)
        return {"error": _error(3, f"Invalid JSON: expected value at line {line} column {col}")}
    if not isinstance(request, dict):
        return {"error": _invalid("expected a JSON object")}
    known_id = "id" in request and _valid_id(request["id"])
    reply = _apply(request, conn, text)
    if "code" not in reply:
        return reply
    return {"error": reply, "id": request["id"]} if known_id else {"error": reply}


def _apply(request: dict[str, Any], conn: Subscriber, text: str | bytes) -> Reply:
    if "method" not in request:
        return _invalid(f"missing field `method` at line 1 column {len(text)}")
    method = request["method"]
    if not isinstance(method, str) or method not in _HANDLERS:
        return _invalid(f"unknown variant {method}, expected one of {', '.join(METHODS)}")
    if "id" not in request or not _valid_id(request["id"]):
        return _invalid("request ID must be an unsigned integer")
    return _HANDLERS[method](conn, request.get("params"), request["id"])
