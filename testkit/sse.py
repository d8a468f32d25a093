"""A Server-Sent Events parser for clients of /v2/stream (tests, bench, locust).

Feeds on lines (without their line break) and returns what each blank line completes: an
`SseEvent`, or a `Comment` for a block of comment lines only (the server's heartbeat).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One dispatched event."""

    event: str
    id: str | None
    data: str


@dataclass(frozen=True, slots=True)
class Comment:
    """A block of comment lines (`:` lines) with no field: a heartbeat."""

    text: str


@dataclass(slots=True)
class SseParser:
    """Line-by-line SSE parsing (the WHATWG event-stream format, minus `retry`)."""

    _fields: dict[str, list[str]] = field(default_factory=dict)
    _comments: list[str] = field(default_factory=list)

    def feed(self, line: str) -> SseEvent | Comment | None:
        """Take one line; the event or comment a blank line completes, else None."""
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            self._comments.append(line[1:])
            return None
        name, _, value = line.partition(":")
        self._fields.setdefault(name, []).append(value.removeprefix(" "))
        return None

    def _dispatch(self) -> SseEvent | Comment | None:
        fields, comments = self._fields, self._comments
        self._fields, self._comments = {}, []
        if not fields:
            return Comment("\n".join(comments)) if comments else None
        ids = fields.get("id")
        return SseEvent(
            event=(fields.get("event") or ["message"])[-1],
            id=ids[-1] if ids else None,
            data="\n".join(fields.get("data", [])),
        )
