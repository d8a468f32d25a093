"""Binance websocket request protocol, without sockets."""

# pylint: disable=missing-function-docstring,missing-class-docstring

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from ratesvc.sim.commands import handle_command


@dataclass
class FakeConn:
    """A connection as commands see it."""

    combined: bool = False
    max_streams: int = 1024
    streams: list[str] = field(default_factory=list)

    @property
    def stream_names(self) -> list[str]:
        return list(self.streams)

    def subscribe(self, names: list[str]) -> None:
        self.streams += [n for n in names if n not in self.streams]

    def unsubscribe(self, names: list[str]) -> None:
        self.streams = [s for s in self.streams if s not in names]


def send(conn: FakeConn, request: Any) -> dict[str, Any]:
    return handle_command(request if isinstance(request, str) else json.dumps(request), conn)


def test_subscribe_list_unsubscribe_follow_the_documented_replies() -> None:
    conn = FakeConn()
    streams = ["btcusdt@aggTrade", "btcusdt@depth"]
    assert send(conn, {"method": "SUBSCRIBE", "params": streams, "id": 1}) == {
        "result": None,
        "id": 1,
    }
    assert send(conn, {"method": "UNSUBSCRIBE", "params": ["btcusdt@depth"], "id": 312}) == {
        "result": None,
        "id": 312,
    }
    assert send(conn, {"method": "LIST_SUBSCRIPTIONS", "id": 3}) == {
        "result": ["btcusdt@aggTrade"],
        "id": 3,
    }


@pytest.mark.parametrize("req_id", [7, -(2**63), "abc123XYZ", None])
def test_ids_may_be_signed_int_short_alphanumeric_or_null(req_id: Any) -> None:
    assert send(FakeConn(), {"method": "LIST_SUBSCRIPTIONS", "id": req_id})["id"] == req_id


def error(reply: dict[str, Any]) -> dict[str, Any]:
    """The inner error object of a wrapped error reply."""
    assert set(reply) <= {"error", "id"} and isinstance(reply["error"], dict), reply
    return reply["error"]


@pytest.mark.parametrize("req_id", [1.5, "has space", "x" * 37, 2**63, True])
def test_bad_ids_are_code_2_without_an_id(req_id: Any) -> None:
    reply = send(FakeConn(), {"method": "LIST_SUBSCRIPTIONS", "id": req_id})
    assert reply == {
        "error": {"code": 2, "msg": "Invalid request: request ID must be an unsigned integer"}
    }


def test_invalid_json_is_code_3_with_position_and_no_id() -> None:
    reply = send(FakeConn(), '{"method": ')
    assert set(reply) == {"error"}
    assert error(reply)["code"] == 3
    assert error(reply)["msg"].startswith("Invalid JSON: expected value at line 1 column")


def test_error_replies_are_wrapped_with_the_request_id() -> None:
    # the live servers wrap errors: {"error": {...}, "id": N} (exchanges.md section G)
    assert send(FakeConn(), {"method": "SUBSCRIB", "id": 3}) == {
        "error": {
            "code": 2,
            "msg": "Invalid request: unknown variant SUBSCRIB, expected one of SUBSCRIBE, "
            "UNSUBSCRIBE, LIST_SUBSCRIPTIONS, SET_PROPERTY, GET_PROPERTY",
        },
        "id": 3,
    }


def test_missing_and_unknown_methods_are_code_2() -> None:
    missing = error(send(FakeConn(), {"params": [], "id": 1}))
    assert missing["code"] == 2 and "missing field `method`" in missing["msg"]
    unknown = error(send(FakeConn(), {"method": "SUBSCRIB", "id": 1}))
    assert unknown["code"] == 2
    assert unknown["msg"].startswith("Invalid request: unknown variant SUBSCRIB, expected one of")


def test_set_and_get_property_combined() -> None:
    conn = FakeConn()
    assert send(conn, {"method": "GET_PROPERTY", "params": ["combined"], "id": 2}) == {
        "result": False,
        "id": 2,
    }
    reply = send(conn, {"method": "SET_PROPERTY", "params": ["combined", True], "id": 5})
    assert reply == {"result": None, "id": 5}
    assert conn.combined is True


def test_property_errors_use_codes_0_1_and_2() -> None:
    conn = FakeConn()
    assert send(conn, {"method": "GET_PROPERTY", "params": ["nope"], "id": 9}) == {
        "error": {"code": 0, "msg": "Unknown property"},
        "id": 9,
    }
    assert send(conn, {"method": "SET_PROPERTY", "params": ["combined", "yes"], "id": 1}) == {
        "error": {"code": 1, "msg": "Invalid value type: expected Boolean"},
        "id": 1,
    }
    assert error(send(conn, {"method": "SET_PROPERTY", "params": [1, True], "id": 1}))["code"] == 2
    too_many = send(conn, {"method": "SET_PROPERTY", "params": ["combined", True, 1], "id": 1})
    assert error(too_many) == {"code": 2, "msg": "Invalid request: too many parameters"}


def test_subscribe_beyond_the_stream_limit_adds_nothing() -> None:
    conn = FakeConn(max_streams=2, streams=["a@trade"])
    reply = send(conn, {"method": "SUBSCRIBE", "params": ["b@trade", "c@trade"], "id": 1})
    assert error(reply)["code"] == 2
    assert conn.streams == ["a@trade"]


@pytest.mark.parametrize("request_text", ["[1, 2]", '"SUBSCRIBE"', "42"])
def test_non_object_requests_are_code_2(request_text: str) -> None:
    assert error(send(FakeConn(), request_text))["code"] == 2


def test_subscribe_params_must_be_strings() -> None:
    reply = send(FakeConn(), {"method": "SUBSCRIBE", "params": [1], "id": 1})
    assert error(reply)["code"] == 2
