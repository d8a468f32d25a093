"""Prepared responses: body bytes, ETag and raw headers, computed once per snapshot version.

The request path looks a Prepared up and copies its header list; nothing is serialized there.
Staleness travels in headers only (the body shape is fixed), so the ETag is a function of the
body alone and a 304 carries the current stale headers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache

from starlette.responses import Response

from ratesvc.api.choice import Decision
from ratesvc.api.etag import etag_for
from ratesvc.api.mirror import RateMirror
from ratesvc.api.query import Selection

Headers = list[tuple[bytes, bytes]]
BodyRenderer = Callable[[Decision], bytes]

# Header names (documented in README and OpenAPI).
API_VERSION = "API-Version"
STALE = "X-Rates-Stale"
AS_OF = "X-Rates-As-Of"
AGE = "X-Rates-Age"
CACHE_CONTROL_VALUE = "no-cache"
RETRY_AFTER_S = 2
_VARY = (b"vary", b"Accept-Version")


def rfc3339_ms(ts_ms: int) -> str:
    """`2024-05-01T12:00:00.123Z` for epoch milliseconds."""
    return f"{_rfc3339_second(ts_ms // 1000)}{ts_ms % 1000:03d}Z"


@lru_cache(maxsize=4096)
def _rfc3339_second(epoch_s: int) -> str:
    # v2 bodies hold a time per leg; legs share seconds, and strftime costs ~10 us a call
    return datetime.fromtimestamp(epoch_s, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.")


@dataclass(frozen=True, slots=True)
class Prepared:
    """One ready answer. `status` 503 means nothing to serve (`missing` says what is absent).

    `full` and `not_modified` hold the raw headers for 200 and 304, each as
    (versioned path, unversioned path): the unversioned form adds `Vary: Accept-Version`.
    """

    status: int
    body: bytes
    etag: str
    stale: bool
    as_of_ms: int
    missing: tuple[str, ...]
    full: tuple[Headers, Headers]
    not_modified: tuple[Headers, Headers]


def prepare(decision: Decision, *, render_body: BodyRenderer, api_version: str) -> Prepared:
    """Serialize a Decision once: body, ETag and both header lists."""
    version = (b"api-version", api_version.encode())
    if decision.exchanger is None:
        return Prepared(503, b"", "", True, 0, decision.missing, ([], []), ([], []))
    body = render_body(decision)
    etag = etag_for(body)
    common: Headers = [
        (b"etag", etag.encode()),
        (b"cache-control", CACHE_CONTROL_VALUE.encode()),
        version,
        (b"x-rates-stale", b"true" if decision.stale else b"false"),
        (b"x-rates-as-of", rfc3339_ms(decision.as_of_ms).encode()),
    ]
    full = [
        *common,
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    return Prepared(
        status=200,
        body=body,
        etag=etag,
        stale=decision.stale,
        as_of_ms=decision.as_of_ms,
        missing=(),
        full=(full, [*full, _VARY]),
        not_modified=(common, [*common, _VARY]),
    )


class PreparedResponse(Response):
    """A Response built from prepared parts: no header encoding, no length computation."""

    def __init__(  # pylint: disable=super-init-not-called
        self, status_code: int, body: bytes, raw_headers: Headers
    ) -> None:
        self.status_code = status_code
        self.body = body
        self.raw_headers = raw_headers
        self.background = None


class RenderCache:
    """Prepared answers per Selection for the current snapshot version of `mirror`."""

    def __init__(self, mirror: RateMirror, *, render_body: BodyRenderer, api_version: str) -> None:
        self.mirror = mirror
        self.render_body = render_body
        self.api_version = api_version
        self._version = -1
        self._entries: dict[Selection, Prepared] = {}

    def get(self, selection: Selection) -> Prepared:
        """The Prepared answer for `selection`, computed at most once per snapshot version."""
        version = self.mirror.version
        if version != self._version:
            self._entries = {}
            self._version = version
        hit = self._entries.get(selection)
        if hit is None:
            decision = self.mirror.decide(selection.exchanger, selection.directions)
            hit = prepare(decision, render_body=self.render_body, api_version=self.api_version)
            self._entries[selection] = hit
        return hit
