"""Request input of /courses: the query string and the Accept-Version header, validated strictly.

Parsing is pure and its results are memoised per raw query string, so a repeated query costs one
dict lookup. Every rejection is a Problem naming the allowed values.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl

from ratesvc.api import problems
from ratesvc.api.problems import Problem, shorten
from ratesvc.domain import DIRECTIONS, EXCHANGERS

PARAMETERS: tuple[str, ...] = ("exchanger", "direction")
SUPPORTED_VERSIONS: tuple[str, ...] = ("1", "2")
DEFAULT_VERSION = "1"

MAX_QUERY_BYTES = 1024  # the whole raw query string
MAX_VALUE_CHARS = 128  # one parameter value (fits all eight directions comma-separated)
MAX_DIRECTIONS = 16  # direction items over all `direction` parameters, before duplicates collapse
MAX_FIELDS = 32  # name=value pairs
PARSE_CACHE_SIZE = 512


@dataclass(frozen=True, slots=True)
class Selection:
    """A validated query: the explicit exchanger (or None) and directions in DIRECTIONS order."""

    exchanger: str | None
    directions: tuple[str, ...]


ALL = Selection(None, DIRECTIONS)


def parse_query(raw: bytes) -> Selection | Problem:
    """Validate a raw (percent-encoded) query string; names are exact, values case-insensitive."""
    if not raw:
        return ALL
    pairs = query_pairs(raw)
    if isinstance(pairs, Problem):
        return pairs
    query = _Query()
    for name, value in pairs:
        problem = _check_value(name, value) or query.add(name, value)
        if problem is not None:
            return problem
    return query.selection()


def query_pairs(
    raw: bytes, allowed: tuple[str, ...] = PARAMETERS
) -> list[tuple[str, str]] | Problem:
    """The decoded (name, value) pairs of a query string, or the problem with it (too long,
    undecodable, too many fields); `allowed` is the route's parameters the problem names."""
    if len(raw) > MAX_QUERY_BYTES:
        return Problem(
            problems.QUERY_TOO_LONG,
            f"the query string is {len(raw)} bytes; at most {MAX_QUERY_BYTES} are accepted",
            {"max_bytes": MAX_QUERY_BYTES, "allowed": list(allowed)},
        )
    try:
        return parse_qsl(
            raw.decode("latin-1"),
            keep_blank_values=True,
            errors="strict",
            max_num_fields=MAX_FIELDS,
        )
    except (UnicodeDecodeError, ValueError) as err:
        return Problem(
            problems.MALFORMED_QUERY,
            f"the query string cannot be decoded: {err}",
            {"max_fields": MAX_FIELDS, "allowed": list(allowed)},
        )


class _Query:
    """Accumulates validated parameters."""

    def __init__(self) -> None:
        self.exchanger: str | None = None
        self.wanted: set[str] = set()
        self.items = 0

    def add(self, name: str, value: str) -> Problem | None:
        """Take one (already length- and emptiness-checked) parameter."""
        if name == "exchanger":
            return self._add_exchanger(value)
        return self._add_directions(value)

    def selection(self) -> Selection:
        """The result, directions in the stable order (all of them when none was asked)."""
        wanted = self.wanted
        directions = tuple(d for d in DIRECTIONS if d in wanted) if wanted else DIRECTIONS
        return Selection(self.exchanger, directions)

    def _add_exchanger(self, value: str) -> Problem | None:
        if self.exchanger is not None:
            return repeated_parameter("exchanger", EXCHANGERS)
        self.exchanger = value.strip().lower()
        if self.exchanger not in EXCHANGERS:
            return _unknown(problems.UNKNOWN_EXCHANGER, "exchanger", [value], EXCHANGERS)
        return None

    def _add_directions(self, value: str) -> Problem | None:
        parts = [p.strip().upper() for p in value.split(",")]
        self.items += len(parts)
        if self.items > MAX_DIRECTIONS:
            return Problem(
                problems.TOO_MANY_VALUES,
                f"at most {MAX_DIRECTIONS} direction values are accepted",
                {
                    "parameter": "direction",
                    "max_values": MAX_DIRECTIONS,
                    "allowed": list(DIRECTIONS),
                },
            )
        if "" in parts:
            return _empty("direction", DIRECTIONS)
        unknown = [p for p in parts if p not in DIRECTIONS]
        if unknown:
            return _unknown(problems.UNKNOWN_DIRECTION, "direction", unknown, DIRECTIONS)
        self.wanted.update(parts)
        return None


def unknown_parameter(name: str, allowed: tuple[str, ...]) -> Problem:
    """A query parameter the route does not take (400)."""
    return Problem(
        problems.UNKNOWN_PARAMETER,
        f"unknown query parameter {shorten(name)!r}",
        {"parameter": shorten(name), "allowed": list(allowed)},
    )


def repeated_parameter(name: str, allowed: tuple[str, ...]) -> Problem:
    """A parameter given twice where it may be given once (400)."""
    return Problem(
        problems.REPEATED_PARAMETER,
        f"`{name}` may be given once",
        {"parameter": name, "allowed": list(allowed)},
    )


def too_long(name: str, value: str, allowed: tuple[str, ...]) -> Problem | None:
    """The problem of a value longer than MAX_VALUE_CHARS (400), None if it is not."""
    if len(value) <= MAX_VALUE_CHARS:
        return None
    return Problem(
        problems.VALUE_TOO_LONG,
        f"`{name}` is {len(value)} characters; at most {MAX_VALUE_CHARS} are accepted",
        {"parameter": name, "max_chars": MAX_VALUE_CHARS, "allowed": list(allowed)},
    )


def _check_value(name: str, value: str) -> Problem | None:
    if name not in PARAMETERS:
        return unknown_parameter(name, PARAMETERS)
    allowed = EXCHANGERS if name == "exchanger" else DIRECTIONS
    if problem := too_long(name, value, allowed):
        return problem
    if not value.strip():
        return _empty(name, allowed)
    return None


def _empty(name: str, allowed: tuple[str, ...]) -> Problem:
    return Problem(
        problems.EMPTY_VALUE,
        f"`{name}` must not be empty; omit it to get every value",
        {"parameter": name, "allowed": list(allowed)},
    )


def _unknown(
    kind: problems.ProblemType, name: str, values: list[str], allowed: tuple[str, ...]
) -> Problem:
    shown = [shorten(v) for v in values[:MAX_DIRECTIONS]]
    return Problem(
        kind,
        f"unknown {name} {', '.join(map(repr, shown))}; allowed: {', '.join(allowed)}",
        {"parameter": name, "invalid": shown, "allowed": list(allowed)},
    )


def reject_query(raw: bytes) -> Problem | None:
    """For routes that take no query parameter (/v2/sources): None when `raw` is empty."""
    if not raw:
        return None
    pairs = query_pairs(raw)
    if isinstance(pairs, Problem):
        return pairs
    if not pairs:
        return None  # "?" or "&": nothing asked, as on /courses
    name = shorten(pairs[0][0])
    return Problem(
        problems.UNKNOWN_PARAMETER,
        f"unknown query parameter {name!r}; this route takes none",
        {"parameter": name, "allowed": []},
    )


class QueryParser:
    """parse_query memoised per raw query string (bounded: cleared when full)."""

    def __init__(self, *, size: int = PARSE_CACHE_SIZE) -> None:
        self.size = size
        self._memo: dict[bytes, Selection | Problem] = {}

    def __call__(self, raw: bytes) -> Selection | Problem:
        """The Selection for `raw`, or the Problem that rejects it."""
        hit = self._memo.get(raw)
        if hit is None:
            hit = parse_query(raw)
            if len(self._memo) >= self.size:
                self._memo.clear()
            self._memo[raw] = hit
        return hit


def negotiate(values: list[str]) -> str | Problem:
    """The API version an unversioned request asks for with Accept-Version (absent: 1)."""
    if not values:
        return DEFAULT_VERSION
    wanted = {v.strip().lower().removeprefix("v") for v in values}
    if len(wanted) == 1:
        version = wanted.pop()
        if version in SUPPORTED_VERSIONS:
            return version
    shown = ", ".join(repr(shorten(v)) for v in values[:4])
    return Problem(
        problems.UNSUPPORTED_VERSION,
        f"Accept-Version {shown} is not supported; send one of "
        + ", ".join(f"{v} or v{v}" for v in SUPPORTED_VERSIONS),
        {
            "parameter": "Accept-Version",
            "allowed": [f for v in SUPPORTED_VERSIONS for f in (v, f"v{v}")],
            "supported_versions": list(SUPPORTED_VERSIONS),
        },
    )
