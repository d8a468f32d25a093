"""Fault vocabulary of the simulator: which kinds exist per target, their parameters, and the book
of active faults. Does no I/O; the servers ask the book what to do with each request.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

BINANCE = "binance"  # the whole Binance port, as an IP-level block: REST calls and handshakes
BINANCE_WS = "binance_ws"
BINANCE_REST = "binance_rest"
COINGECKO = "coingecko"

# target -> kind -> default parameters. "count" limits a persistent fault to that many requests
# (or handshakes); None means until cleared.
_REST_KINDS: dict[str, dict[str, Any]] = {
    "429": {"status": 429, "retry_after_s": None, "count": None},
    "5xx": {"status": 503, "count": None},
    "slow": {"delay_s": 1.0, "count": None},
    "refuse": {"count": None},
}
FAULT_KINDS: dict[str, dict[str, dict[str, Any]]] = {
    BINANCE: {
        # retry_after, disconnect: 0 or 1 (send Retry-After; close open websockets at once)
        "ban": {"duration_s": 120.0, "retry_after": 0, "disconnect": 1},
        "restricted": {"count": None},
        "waf": {"count": None},
    },
    BINANCE_WS: {
        "disconnect": {"code": 1001},
        "refuse": {"status": 503, "retry_after_s": None, "count": None},
        "stall": {},
        "garbage": {"count": 3},
        "shutdown": {"delay_s": 1.0},
        "cut": {"max_age_s": 86_400.0},
        "accept_and_drop": {"count": None},
    },
    BINANCE_REST: {**_REST_KINDS, "429": {"status": 429, "retry_after_s": 5, "count": None}},
    COINGECKO: {
        **_REST_KINDS,
        "429": {"status": 429, "retry_after_s": 60, "count": None},
        # code 10010 (pro key on the demo root) or 10011; flat: 1 for the flat body shape
        "wrong_root": {"code": 10010, "flat": 0, "count": None},
    },
}
# Kinds that act once when posted and are not kept in the book.
IMMEDIATE_KINDS = frozenset({"disconnect", "garbage", "shutdown"})
ALIASES = {
    "rest_429": "429",
    "rest_down": "5xx",
    "down": "5xx",
    "503": "5xx",
    "slowness": "slow",
    "418": "ban",
    "451": "restricted",
    "403": "waf",
}


@dataclass
class Fault:
    """One injected fault: target, kind, parameters and how many more requests it affects."""

    target: str
    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    remaining: int | None = None
    set_at: float = field(default_factory=time.monotonic)
    expires_at: float | None = None  # monotonic end of a timed fault (a ban)

    def to_json(self) -> dict[str, Any]:
        """Plain dict for the control API."""
        return {"kind": self.kind, **self.params, "remaining": self.remaining}

    def expired(self) -> bool:
        """Whether a timed fault has run its course."""
        return self.expires_at is not None and time.monotonic() >= self.expires_at


def _sendable_close_code(code: float) -> bool:
    # 1004-1006 and 1015 are reserved: they describe closes but must never be sent in a frame.
    return code == int(code) and (
        1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999
    )


def parse_fault(body: dict[str, Any]) -> Fault:
    """Validate a POST /_sim/fault body into a Fault; ValueError names what is wrong."""
    target = body.get("target")
    if target not in FAULT_KINDS:
        raise ValueError(f"target must be one of {sorted(FAULT_KINDS)}")
    kind = ALIASES.get(str(body.get("kind")), body.get("kind"))
    defaults = FAULT_KINDS[target].get(str(kind))
    if defaults is None:
        raise ValueError(f"kind for {target} must be one of {sorted(FAULT_KINDS[target])}")
    extra = set(body) - {"target", "kind"} - set(defaults)
    if extra:
        raise ValueError(f"unknown parameters {sorted(extra)} for {target}/{kind}")
    params = {**defaults, **{k: v for k, v in body.items() if k in defaults}}
    for name, value in params.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ValueError(f"{name} must be a number")
        if value is not None and value < 0:
            raise ValueError(f"{name} must not be negative")
    if kind == "disconnect" and not _sendable_close_code(params["code"]):
        raise ValueError(
            "code must be a close code a server may send (1000-1003, 1007-1014, 3000-4999)"
        )
    if kind == "wrong_root" and params["code"] not in (10010, 10011):
        raise ValueError("code must be 10010 (pro key, demo root) or 10011 (demo key, pro root)")
    remaining = params.pop("count") if kind not in IMMEDIATE_KINDS and "count" in params else None
    fault = Fault(target, str(kind), params, None if remaining is None else int(remaining))
    if kind == "ban":
        # the end, as the 418 message names it (epoch ms), and when the ban lifts here
        params["until_ms"] = time.time_ns() // 1_000_000 + int(params["duration_s"] * 1000)
        fault.expires_at = fault.set_at + float(params["duration_s"])
    return fault


@dataclass
class FaultBook:
    """Active persistent faults, one per (target, kind)."""

    active: dict[tuple[str, str], Fault] = field(default_factory=dict)

    def add(self, fault: Fault) -> None:
        """Keep a persistent fault; immediate kinds are ignored here."""
        if fault.kind not in IMMEDIATE_KINDS:
            self.active[(fault.target, fault.kind)] = fault

    def clear(self, target: str | None = None) -> None:
        """Drop the faults of one target, or all."""
        for key in [k for k in self.active if target in (None, k[0])]:
            del self.active[key]

    def peek(self, target: str, kind: str) -> Fault | None:
        """The active fault of that kind, without using up its count."""
        fault = self.active.get((target, kind))
        if fault is not None and fault.expired():
            del self.active[(target, kind)]
            return None
        return fault

    def take(self, target: str, kind: str) -> Fault | None:
        """The active fault of that kind, using up one of its count (removed at zero)."""
        fault = self.peek(target, kind)
        if fault is not None and fault.remaining is not None:
            fault.remaining -= 1
            if fault.remaining <= 0:
                del self.active[(target, kind)]
            if fault.remaining < 0:
                return None
        return fault

    def to_json(self) -> dict[str, list[dict[str, Any]]]:
        """Active faults grouped by target."""
        out: dict[str, list[dict[str, Any]]] = {t: [] for t in FAULT_KINDS}
        for (target, _), fault in self.active.items():
            if not fault.expired():
                out[target].append(fault.to_json())
        return out
