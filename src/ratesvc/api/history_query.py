"""Request input of /v2/history and of `at=` on /v2/courses: instants, intervals, strict query.

Pure. Every rejection is a Problem naming what is allowed, as for /courses (query.py, whose
limits apply here too).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlencode

from ratesvc.api import problems
from ratesvc.api.problems import Problem, shorten
from ratesvc.api.query import (
    MAX_FIELDS,
)
from ratesvc.api.query import PARAMETERS as COURSES_PARAMETERS
from ratesvc.api.query import (
    Selection,
    parse_query,
    query_pairs,
    repeated_parameter,
    too_long,
    unknown_parameter,
)
from ratesvc.domain import DIRECTIONS, EXCHANGERS
from ratesvc.store.candles import INTERVALS_S

HISTORY_PARAMETERS: tuple[str, ...] = ("direction", "exchanger", "interval", "from", "to")
HISTORY_REQUIRED: tuple[str, ...] = ("direction", "exchanger", "from")
DEFAULT_INTERVAL = "1m"
AT_PARAMETER = "at"
AT_PARAMETERS: tuple[str, ...] = (*COURSES_PARAMETERS, AT_PARAMETER)

# RFC 3339 date-time (section 5.6): full-date "T" full-time with a mandatory offset. Case-
# insensitive T and Z as RFC 3339 allows; a space instead of T too (its section 5.6 note). A "+"
# offset sent unencoded reads as a space after query decoding: accepted as "+".
INSTANT_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
    r"([Zz]|[+ -][0-9]{2}:[0-9]{2})$"
)
_INSTANT = re.compile(INSTANT_PATTERN)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
INSTANT_EXAMPLE = "2026-12-01T17:00:00Z"


def parse_instant(name: str, value: str) -> int | Problem:
    """Epoch milliseconds of an RFC 3339 instant (sub-millisecond digits are cut, not rounded)."""
    text = value.strip()
    match = _INSTANT.match(text)
    problem = Problem(
        problems.INVALID_TIME,
        f"`{name}` must be an RFC 3339 instant with an offset, e.g. {INSTANT_EXAMPLE}; "
        f"got {shorten(value)!r}",
        {"parameter": name, "invalid": [shorten(value)], "example": INSTANT_EXAMPLE},
    )
    if match is None:
        return problem
    fraction = match.group(1) or ""
    offset = match.group(2).upper()
    offset = "+00:00" if offset == "Z" else "+" + offset[1:] if offset[0] == " " else offset
    base = text[:19].replace("t", "T").replace(" ", "T")
    try:
        moment = datetime.fromisoformat(base + offset)
    except ValueError:  # a day or hour that does not exist (2026-02-30, 25:00)
        return problem
    whole_ms = (moment - _EPOCH) // _MS
    return whole_ms + int((fraction[1:] + "000")[:3])


_MS = datetime(1970, 1, 1, 0, 0, 0, 1000, tzinfo=UTC) - _EPOCH


def _single_values(
    pairs: list[tuple[str, str]], allowed: tuple[str, ...]
) -> dict[str, str] | Problem:
    """Each parameter at most once, known, non-empty and bounded; values stripped."""
    values: dict[str, str] = {}
    for name, value in pairs:
        if name not in allowed:
            return unknown_parameter(name, allowed)
        if name in values:
            return repeated_parameter(name, allowed)
        if problem := too_long(name, value, allowed):
            return problem
        if not value.strip():
            return Problem(
                problems.EMPTY_VALUE,
                f"`{name}` must not be empty",
                {"parameter": name, "allowed": list(allowed)},
            )
        values[name] = value.strip()
    return values


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """A validated /v2/history query; `to_ms` None means now."""

    exchanger: str
    direction: str
    interval: str
    from_ms: int
    to_ms: int | None

    @property
    def interval_s(self) -> int:
        """The interval in seconds."""
        return INTERVALS_S[self.interval]


def parse_history(raw: bytes) -> HistoryQuery | Problem:
    """Validate a /v2/history query string (names exact; exchanger/direction any case)."""
    values = _history_values(raw)
    return values if isinstance(values, Problem) else _history_query(values)


def _history_values(raw: bytes) -> dict[str, str] | Problem:
    pairs = query_pairs(raw, HISTORY_PARAMETERS)
    if isinstance(pairs, Problem):
        return pairs
    values = _single_values(pairs, HISTORY_PARAMETERS)
    if isinstance(values, Problem):
        return values
    for name in HISTORY_REQUIRED:
        if name not in values:
            return Problem(
                problems.MISSING_PARAMETER,
                f"`{name}` is required (required: {', '.join(HISTORY_REQUIRED)})",
                {"parameter": name, "required": list(HISTORY_REQUIRED)},
            )
    return values


def _history_query(values: dict[str, str]) -> HistoryQuery | Problem:
    direction, exchanger = values["direction"].upper(), values["exchanger"].lower()
    interval = values.get("interval", DEFAULT_INTERVAL)
    choices = (
        (direction, DIRECTIONS, problems.UNKNOWN_DIRECTION, "direction"),
        (exchanger, EXCHANGERS, problems.UNKNOWN_EXCHANGER, "exchanger"),
        (interval, tuple(INTERVALS_S), problems.UNKNOWN_INTERVAL, "interval"),
    )
    for value, allowed, kind, name in choices:
        if value not in allowed:
            return _unknown(kind, name, values.get(name, value), allowed)
    from_ms = parse_instant("from", values["from"])
    if isinstance(from_ms, Problem):
        return from_ms
    to_ms = parse_instant("to", values["to"]) if "to" in values else None
    if isinstance(to_ms, Problem):
        return to_ms
    return HistoryQuery(exchanger, direction, interval, from_ms, to_ms)


def _unknown(
    kind: problems.ProblemType, name: str, value: str, allowed: tuple[str, ...]
) -> Problem:
    return Problem(
        kind,
        f"unknown {name} {shorten(value)!r}; allowed: {', '.join(allowed)}",
        {"parameter": name, "invalid": [shorten(value)], "allowed": list(allowed)},
    )


def wants_at(raw: bytes) -> bool:
    """Whether a /courses query string names `at` (decoded: `%61t` counts too)."""
    if b"at" not in raw and b"%6" not in raw and b"%7" not in raw:
        return False
    try:
        pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True, max_num_fields=MAX_FIELDS)
    except ValueError:
        return False  # the courses parser rejects it with its own problem
    return any(name == AT_PARAMETER for name, _value in pairs)


def parse_at_query(raw: bytes) -> tuple[Selection, int] | Problem:
    """A /v2/courses query with `at`: the Selection (same parser as without) and `at` in ms."""
    pairs = query_pairs(raw, AT_PARAMETERS)
    if isinstance(pairs, Problem):
        return pairs
    at_ms = _at_value(pairs)
    if isinstance(at_ms, Problem):
        return at_ms
    rest = urlencode([(name, value) for name, value in pairs if name != AT_PARAMETER])
    selection = parse_query(rest.encode("latin-1", "replace"))
    if isinstance(selection, Problem):
        if selection.kind is problems.UNKNOWN_PARAMETER:
            extensions = {**selection.extensions, "allowed": list(AT_PARAMETERS)}
            return Problem(selection.kind, selection.detail, extensions)
        return selection
    return selection, at_ms


def _at_value(pairs: list[tuple[str, str]]) -> int | Problem:
    values = [value for name, value in pairs if name == AT_PARAMETER]
    if len(values) > 1:
        return repeated_parameter(AT_PARAMETER, AT_PARAMETERS)
    checked = _single_values([(AT_PARAMETER, values[0])], AT_PARAMETERS)
    if isinstance(checked, Problem):
        return checked
    return parse_instant(AT_PARAMETER, checked[AT_PARAMETER])
