"""The /courses request path: parse, look up the prepared answer, compare ETags, respond.

Kept thin on purpose (a benchmark compares it with a bare endpoint): no I/O, no serialization,
no dependency injection. Versioned routes live in v1.py; this module owns the unversioned one,
where Accept-Version selects the version.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response
from starlette.types import Scope

from ratesvc.api import problems
from ratesvc.api.etag import none_match
from ratesvc.api.history_query import wants_at
from ratesvc.api.openapi import courses_parameters, courses_responses
from ratesvc.api.openapi_history import UNVERSIONED_AT_PARAMETER, with_at
from ratesvc.api.problems import Problem, problem_response
from ratesvc.api.query import QueryParser, Selection, negotiate
from ratesvc.api.render import RETRY_AFTER_S, Prepared, PreparedResponse, RenderCache

_VARY = {"Vary": "Accept-Version"}


class CoursesEndpoint:
    """Serves /courses and /vN/courses from per-version render caches.

    Args:
        caches: API version ("1") -> its RenderCache.
        clock: wall-clock milliseconds: staleness is judged and ages counted at answer time.
    """

    def __init__(self, caches: Mapping[str, RenderCache], *, clock: Callable[[], int]) -> None:
        self.caches = dict(caches)
        self.clock = clock
        self.parse = QueryParser()

    def serve(self, scope: Scope, version: str | None) -> Response:
        """Answer one request from its ASGI scope; `version` None: unversioned (negotiate it).

        Takes the scope, not a Request, so a pure-ASGI fast path can call it too.
        """
        if_none_match: list[str] = []
        accept_version: list[str] = []
        for name, value in scope["headers"]:
            if name == b"if-none-match":
                if_none_match.append(value.decode("latin-1"))
            elif name == b"accept-version":
                accept_version.append(value.decode("latin-1"))
        unversioned = version is None
        if version is None:
            negotiated = negotiate(accept_version)
            if isinstance(negotiated, Problem):
                return problem_response(negotiated, instance=scope["path"], headers=_VARY)
            version = negotiated
        selection = self.parse(scope["query_string"])
        if isinstance(selection, Problem):
            return self._problem(selection, scope["path"], version, unversioned)
        now = self.clock()
        prepared = self._prepared(version, selection, now)
        if prepared.status != 200:
            missing = ", ".join(prepared.missing) or "the requested directions together"
            problem = Problem(
                problems.NO_DATA,
                f"no value is known yet for {missing}; retry shortly",
                {"missing": list(prepared.missing)},
                {"Retry-After": str(RETRY_AFTER_S)},
            )
            return self._problem(problem, scope["path"], version, unversioned)
        if if_none_match and none_match(if_none_match, prepared.etag):
            headers = prepared.not_modified[unversioned]
            status, body = 304, b""
        else:
            headers = prepared.full[unversioned]
            status, body = 200, prepared.body
        if prepared.stale:
            age_s = max(0, now - prepared.as_of_ms) // 1000
            return PreparedResponse(status, body, [*headers, (b"x-rates-age", b"%d" % age_s)])
        return PreparedResponse(status, body, list(headers))

    def _prepared(self, version: str, selection: Selection, now: int) -> Prepared:
        cache = self.caches[version]
        cache.mirror.catch_up(now)  # staleness judged now, not at the last timer tick
        return cache.get(selection)

    @staticmethod
    def _problem(problem: Problem, path: str, version: str, unversioned: bool) -> Response:
        headers = {"API-Version": version, **(_VARY if unversioned else {})}
        return problem_response(problem, instance=path, headers=headers)


def accept_versions(scope: Scope) -> list[str]:
    """The Accept-Version field values of a request."""
    return [v.decode("latin-1") for k, v in scope["headers"] if k == b"accept-version"]


def router(endpoint: CoursesEndpoint, *, default_model: Any) -> APIRouter:
    """The unversioned /courses route, bound to this app's endpoint."""
    api = APIRouter(tags=["courses"])

    @api.get(
        "/courses",
        response_class=Response,
        responses=with_at(courses_responses(default_model, versioned=False)),
        openapi_extra={
            "parameters": [*courses_parameters(versioned=False), UNVERSIONED_AT_PARAMETER]
        },
        summary="Current rates (version from Accept-Version: 1 or 2)",
    )
    async def get_courses(request: Request) -> Response:
        """Current rates of the requested directions from one exchanger; Accept-Version selects
        the shape (v1, or v2 with provenance). With `Accept-Version: 2` the query also takes
        `at`, as /v2/courses documents it (v1 rejects it as an unknown parameter)."""
        scope = request.scope
        if wants_at(scope["query_string"]) and negotiate(accept_versions(scope)) == "2":
            return await request.app.state.point_in_time.serve(scope, unversioned=True)
        return endpoint.serve(scope, None)

    return api
