"""How events travel through Redis: stream entries and hash values, decoded defensively."""

from __future__ import annotations

import orjson

from ratesvc.domain import RateTick, SourceStatus, event_from_fields

Event = RateTick | SourceStatus
# What decoding a junk entry may raise (missing fields, bad numbers, malformed legs).
DECODE_ERRORS = (KeyError, ValueError, ArithmeticError, TypeError, IndexError)
Entry = tuple[str, dict[str, str]]  # (stream id, raw fields)


def to_json(fields: dict[str, str]) -> str:
    """A hash value: the event's fields as one JSON object."""
    return orjson.dumps(fields).decode()


def from_json(raw: str | bytes) -> dict[str, str]:
    """Inverse of to_json."""
    return orjson.loads(raw)


def stream_id_key(entry_id: str) -> tuple[int, int]:
    """Sort key of a stream id ``<ms>-<seq>``: ids compare as number pairs, not as text."""
    millis, _, seq = entry_id.partition("-")
    return int(millis), int(seq or 0)


def decode_entry(fields: dict[str, str]) -> Event:
    """Decode one raw stream entry. Raises one of DECODE_ERRORS on junk."""
    return event_from_fields(fields)


def decode_event(fields: dict[str, str] | None) -> Event | None:
    """Decode one raw stream entry, None for junk (or an entry trimmed away)."""
    if not fields:
        return None
    try:
        return event_from_fields(fields)
    except DECODE_ERRORS:
        return None
