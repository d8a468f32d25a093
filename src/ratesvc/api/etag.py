"""Entity tags: a strong ETag from the body bytes, and If-None-Match evaluation (RFC 9110 §13.1.2).

The tag depends on the body only, so every worker computes the same tag for the same body.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

ETAG_HEX_CHARS = 32  # 128 bits of BLAKE2b: collisions are not a practical concern


def etag_for(body: bytes) -> str:
    """Strong ETag (quoted) of `body`."""
    return '"' + hashlib.blake2b(body, digest_size=ETAG_HEX_CHARS // 2).hexdigest() + '"'


def opaque_tags(value: str) -> tuple[bool, list[str]]:
    """Parse one If-None-Match field value into (is_star, quoted opaque tags).

    `W/` prefixes are dropped (If-None-Match uses the weak comparison). Entity tags may contain
    commas, so the value is scanned, not split. Parsing stops at the first malformed element.
    """
    stripped = value.strip()
    if stripped == "*":
        return True, []
    tags: list[str] = []
    i, n = 0, len(stripped)
    while i < n:
        char = stripped[i]
        if char in " \t,":
            i += 1
            continue
        if stripped.startswith("W/", i):
            i += 2
        if i >= n or stripped[i] != '"':
            break
        end = stripped.find('"', i + 1)
        if end < 0:
            break
        tags.append(stripped[i : end + 1])
        i = end + 1
    return False, tags


def none_match(values: Iterable[str], etag: str) -> bool:
    """True when an If-None-Match header (every field line of it) matches `etag`: answer 304.

    `*` matches any current representation; a listed tag matches by weak comparison.
    """
    for value in values:
        if value == etag:  # the common case: a client echoing the tag it was given
            return True
        star, tags = opaque_tags(value)
        if star or etag in tags:
            return True
    return False
