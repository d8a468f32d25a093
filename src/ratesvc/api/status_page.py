"""GET /status: a live status page for people, one self-contained HTML document.

The page (the package resource ``status.html``: inline CSS and JavaScript, no external asset, no
web font) shows the eight directions from each exchanger side by side with their staleness, the
exchanger that serves, each source's health and the last failover. It is fed by ``/v2/stream``
(one EventSource per exchanger and one without, for the serving choice) and polls ``/v2/sources``
every 2 s; every URL in it is relative, so it works behind a proxy's path prefix.

The bytes are built once per process (the table rows filled in from EXCHANGERS and DIRECTIONS)
with a strong ETag. The Content-Security-Policy admits only this page's own inline style and
script (by their SHA-256) and connections to its own origin: nothing can be loaded from elsewhere.
Last failover is what the page itself observes on the serving stream; when a less preferred
exchanger (EXCHANGER_PREFERENCE) already served as it opened, /v2/sources tells it which preferred
one is out, in what state and since when its data stopped. The server keeps no history of it.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files

from fastapi import APIRouter, Request
from starlette.responses import Response

from ratesvc.api import problems
from ratesvc.api.etag import etag_for, none_match
from ratesvc.api.openapi import IF_NONE_MATCH_PARAMETER, ProblemDetails
from ratesvc.api.problems import PROBLEM_JSON, problem_examples, problem_response
from ratesvc.api.query import reject_query
from ratesvc.api.render import CACHE_CONTROL_VALUE
from ratesvc.domain import DIRECTIONS, EXCHANGERS

PATH = "/status"
RESOURCE = "status.html"
HTML_TYPE = "text/html; charset=utf-8"
DISPLAY_NAMES = {"binance": "Binance", "coingecko": "CoinGecko"}
_INLINE = re.compile(r"<(style|script)>(.*?)</\1>", re.DOTALL)


@dataclass(frozen=True, slots=True)
class StatusPage:
    """The page's bytes and the headers that go with them."""

    body: bytes
    etag: str
    content_security_policy: str


def display_name(exchanger: str) -> str:
    """How the page names an exchanger (its slug, capitalised, when not in DISPLAY_NAMES)."""
    return DISPLAY_NAMES.get(exchanger, exchanger.capitalize())


def _rate_rows() -> str:
    rows = []
    for direction in DIRECTIONS:
        base, _, quote = direction.partition("-")
        cells = "".join(
            f'<td data-exchanger="{e}" data-direction="{direction}">'
            '<span class="value">&mdash;</span><span class="age"></span></td>'
            for e in EXCHANGERS
        )
        label = f"{html.escape(base)} &rarr; {html.escape(quote)}"
        rows.append(
            f'<tr data-direction="{direction}"><th scope="row" title="{direction}">{label}</th>'
            f"{cells}</tr>"
        )
    return "\n".join(rows)


def _exchanger_headers() -> str:
    return "".join(
        f'<th scope="col" class="exchanger" data-exchanger="{e}">{display_name(e)}</th>'
        for e in EXCHANGERS
    )


def _source_rows() -> str:
    return "\n".join(
        f'<tr data-exchanger="{e}"><th scope="row">{display_name(e)}</th>'
        '<td class="state">&mdash;</td><td class="transport">&mdash;</td>'
        '<td class="last-tick">&mdash;</td><td class="reason"></td></tr>'
        for e in EXCHANGERS
    )


def _policy(document: str) -> str:
    sources: dict[str, list[str]] = {"style": [], "script": []}
    for kind, content in _INLINE.findall(document):
        digest = base64.b64encode(hashlib.sha256(content.encode()).digest()).decode()
        sources[kind].append(f"'sha256-{digest}'")
    return "; ".join(
        [
            "default-src 'none'",
            f"style-src {' '.join(sources['style'])}",
            f"script-src {' '.join(sources['script'])}",
            "connect-src 'self'",
            "img-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


def _json_list(names: Sequence[str]) -> str:
    return html.escape("[" + ",".join(f'"{n}"' for n in names) + "]")


def build_page(preference: Sequence[str] = EXCHANGERS) -> StatusPage:
    """The page for this build's exchangers and directions and the EXCHANGER_PREFERENCE order
    (which tells the page a failover it did not see), with its ETag and policy."""
    template = files("ratesvc.api").joinpath(RESOURCE).read_text(encoding="utf-8")
    document = (
        template.replace("<!--EXCHANGERS-->", _json_list(EXCHANGERS))
        .replace("<!--PREFERENCE-->", _json_list(preference))
        .replace("<!--EXCHANGER_HEADERS-->", _exchanger_headers())
        .replace("<!--RATE_ROWS-->", _rate_rows())
        .replace("<!--SOURCE_ROWS-->", _source_rows())
    )
    body = document.encode("utf-8")
    return StatusPage(body, etag_for(body), _policy(document))


class StatusEndpoint:
    """Serves the page from bytes built once, with 304 on a matching If-None-Match."""

    def __init__(self, page: StatusPage | None = None) -> None:
        self.page = page or build_page()
        common = {
            "ETag": self.page.etag,
            "Cache-Control": CACHE_CONTROL_VALUE,
            "Content-Security-Policy": self.page.content_security_policy,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        }
        self.headers = common

    def serve(self, request: Request) -> Response:
        """Answer one GET /status."""
        problem = reject_query(request.scope["query_string"])
        if problem is not None:
            return problem_response(problem, instance=request.url.path)
        if none_match(request.headers.getlist("if-none-match"), self.page.etag):
            return Response(status_code=304, headers=self.headers)
        return Response(self.page.body, headers=self.headers, media_type=HTML_TYPE)


def router(endpoint: StatusEndpoint) -> APIRouter:
    """The /status route, bound to this app's endpoint."""
    api = APIRouter(tags=["status"])
    headers = {
        name: {"description": description, "schema": {"type": "string"}}
        for name, description in (
            ("ETag", "Strong validator derived from the page bytes"),
            ("Cache-Control", "no-cache: revalidate with If-None-Match"),
            ("Content-Security-Policy", "Only the page's own inline code; connections to itself"),
        )
    }
    problem = {
        "description": "A query parameter was given (this route takes none), or a bad query",
        "model": ProblemDetails,
        "content": {
            PROBLEM_JSON: {
                "examples": problem_examples([problems.UNKNOWN_PARAMETER, problems.MALFORMED_QUERY])
            }
        },
    }

    @api.get(
        PATH,
        response_class=Response,
        responses={
            200: {
                "description": "The status page (HTML; it loads nothing from other origins)",
                "content": {"text/html": {"schema": {"type": "string"}}},
                "headers": headers,
            },
            304: {"description": "Not modified (If-None-Match matched)", "headers": headers},
            400: problem,
            414: {"description": "Query string too long", "model": ProblemDetails},
        },
        openapi_extra={"parameters": [IF_NONE_MATCH_PARAMETER]},
        summary="Live status page for people: rates, serving exchanger, source health",
    )
    async def get_status(request: Request) -> Response:
        """Rates of each exchanger, which one serves, staleness and source health, live from
        /v2/stream and /v2/sources."""
        return endpoint.serve(request)

    return api
