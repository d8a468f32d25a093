"""Captured exchange formats: the fixtures under tests/fixtures and what their index says of each.

Every fixture directory has an ``index.json`` naming each file's source and, for HTTP answers,
the status and the headers that must (or must not) come with it. The parser tests read the
fixtures; tests/unit/sim/test_sim_formats.py holds the simulator's answers to the same fixtures
(names, types, wrappers, headers), so the parsers and the simulator cannot drift apart together.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent / "fixtures"
INDEX = "index.json"

# The rows of section G of the exchange fact sheet (reference/exchanges.md, "Field formats found
# since"): each must be reproduced by a fixture, read by a parser test and held by a sim test.
SECTION_G_ROWS = (
    "websocket error reply",
    "IP ban",
    "429",
    "restricted location",
    "WAF block",
    "symbol statuses",
    "exchangeInfo",
    "CoinGecko prices",
    "CoinGecko 429",
    "CoinGecko wrong root for the key",
    "CoinGecko demo limits",
)


@dataclass(frozen=True)
class Captured:
    """One fixture and its index entry."""

    venue: str
    name: str
    what: str
    source: str
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    absent_headers: tuple[str, ...] = ()
    rows: tuple[str, ...] = ()

    @property
    def raw(self) -> bytes:
        """The fixture's bytes, trailing newline removed."""
        return read_fixture(self.venue, self.name)

    def json(self) -> Any:
        """The fixture decoded as JSON (integers stay ints, floats floats)."""
        return json.loads(self.raw)


def read_fixture(venue: str, name: str) -> bytes:
    """The raw bytes of tests/fixtures/<venue>/<name>, trailing newline removed."""
    return (FIXTURES / venue / name).read_bytes().rstrip(b"\n")


@cache
def index(venue: str) -> dict[str, Captured]:
    """Every fixture of `venue` by file name, as its index.json describes it."""
    entries = json.loads((FIXTURES / venue / INDEX).read_text(encoding="utf-8"))["fixtures"]
    return {
        name: Captured(
            venue,
            name,
            what=entry["what"],
            source=entry["source"],
            status=entry.get("status"),
            headers={k.lower(): v for k, v in entry.get("headers", {}).items()},
            absent_headers=tuple(h.lower() for h in entry.get("absent_headers", ())),
            rows=tuple(entry.get("rows", ())),
        )
        for name, entry in entries.items()
    }


def captured(venue: str, name: str) -> Captured:
    """One fixture with its index entry (KeyError when the index does not list it)."""
    return index(venue)[name]


def json_type(value: Any) -> str:
    """The JSON type of a decoded value; integers and floats are told apart."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    return {dict: "object", list: "array", str: "string", int: "int", float: "float"}[type(value)]


def shape_mismatches(expected: Any, actual: Any, path: str = "$") -> list[str]:
    """Where `actual` differs from `expected` in names, JSON types or nesting (not values).

    Objects must have the same keys; arrays must both be empty or not, and every element of
    `actual` must match the shape of some element of `expected` (filters differ per type).
    """
    if json_type(expected) != json_type(actual):
        return [f"{path}: {json_type(actual)} where the capture has {json_type(expected)}"]
    if isinstance(expected, dict):
        problems = [f"{path}: missing {k!r}" for k in expected if k not in actual]
        problems += [f"{path}: unexpected {k!r}" for k in actual if k not in expected]
        for key in expected.keys() & actual.keys():
            problems += shape_mismatches(expected[key], actual[key], f"{path}.{key}")
        return problems
    if isinstance(expected, list):
        if bool(expected) != bool(actual):
            return [f"{path}: {len(actual)} elements where the capture has {len(expected)}"]
        problems = []
        for i, item in enumerate(actual):
            options = [shape_mismatches(e, item, f"{path}[{i}]") for e in expected]
            if all(options):
                problems += min(options, key=len)
        return problems
    return []
