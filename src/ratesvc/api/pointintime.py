"""`at=` on /v2/courses (and /courses with Accept-Version: 2): the values as they were then.

Per requested direction, the last stored tick at or before `at` (one backward index probe per
(exchanger, direction), store/history.py; exchangers probed in preference order, stopping at the
first one fresh at `at`), rendered by the live renderer (v2.render_v2) from a
Decision judged at `at` (choice.Decision.judged_at), with the live path's headers, ETag and 304.

Which exchanger, without `exchanger`: the first in EXCHANGER_PREFERENCE whose values for every
requested direction were all fresh at `at` (no leg past its limit then); if none was, the one
with every direction whose oldest leg was newest (ties: preference order), marked stale; if no
exchanger had every direction, 404. The live choice's hold-down and the collector's DOWN/STALE
reports are not replayed: history is judged by the legs' ages alone.

`at` in the future, or older than RETENTION_DAYS (ticks are pruned past it): 400.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from starlette.responses import Response
from starlette.types import Scope

from ratesvc.api import problems
from ratesvc.api.choice import Decision
from ratesvc.api.history import VERSION, declare_route_metrics, respond, unavailable
from ratesvc.api.history_query import parse_at_query
from ratesvc.api.problems import Problem, problem_response
from ratesvc.api.query import Selection
from ratesvc.api.render import rfc3339_ms
from ratesvc.api.v2 import render_v2
from ratesvc.domain import RateTick
from ratesvc.metrics import API_HISTORY_QUERY_SECONDS
from ratesvc.store.history import HistoryReader, HistoryUnavailable

DAY_MS = 86_400_000
ROUTE = "/v2/courses?at"  # the metric label of these answers
_VARY = {"Vary": "Accept-Version"}


def choose_at(
    ticks: Sequence[RateTick],
    selection: Selection,
    preference: Sequence[str],
    at_ms: int,
) -> Decision | tuple[str, ...]:
    """The Decision at `at_ms` from the last ticks before it, or the directions nobody had."""
    by_key = {(t.exchanger, t.direction): t for t in ticks}
    directions = selection.directions
    names = [selection.exchanger] if selection.exchanger is not None else list(preference)
    complete: list[Decision] = []
    for name in names:
        rows = [by_key.get((name, d)) for d in directions]
        if any(t is None for t in rows):
            continue
        decision = Decision.judged_at(name, [t for t in rows if t is not None], at_ms)
        if not decision.stale:
            return decision
        complete.append(decision)
    if complete:
        return max(complete, key=lambda d: d.as_of_ms)  # max keeps the first of equals
    known = {d for (name, d) in by_key if name in names}
    return tuple(d for d in directions if d not in known)


class PointInTimeEndpoint:
    """Serves `at=` requests from `reader`.

    Args:
        reader: Postgres access (its pool opens on first use).
        preference: EXCHANGER_PREFERENCE.
        retention_days: RETENTION_DAYS: older instants are refused.
        clock: now in epoch ms.
    """

    def __init__(
        self,
        reader: HistoryReader,
        *,
        preference: Sequence[str],
        retention_days: float,
        clock: Callable[[], int],
    ) -> None:
        self.reader = reader
        self.preference = tuple(preference)
        self.retention_ms = int(retention_days * DAY_MS)
        self.clock = clock
        declare_route_metrics(ROUTE)

    async def serve(self, scope: Scope, *, unversioned: bool) -> Response:
        """Answer one v2 request whose query names `at`."""
        path = scope["path"]
        parsed = parse_at_query(scope["query_string"])
        if isinstance(parsed, Problem):
            return self._problem(parsed, path, unversioned)
        selection, at_ms = parsed
        now = self.clock()
        if at_ms > now or at_ms < now - self.retention_ms:
            return self._problem(self._out_of_range(at_ms, now), path, unversioned)
        names = [selection.exchanger] if selection.exchanger else list(self.preference)
        ticks: list[RateTick] = []
        began = time.perf_counter()
        try:
            # One exchanger at a time, in preference order: the first whose values were all
            # fresh at `at` wins whatever the others had, so the rest need no probe (the usual
            # answer costs one probe per direction, not one per direction and exchanger).
            for name in names:
                pairs = [(name, d) for d in selection.directions]
                ticks.extend(await self.reader.ticks_at(pairs, at_ms))
                decision = choose_at(ticks, selection, self.preference, at_ms)
                if isinstance(decision, Decision) and not decision.stale:
                    break
        except HistoryUnavailable as err:
            return self._problem(unavailable(ROUTE, err), path, unversioned)
        API_HISTORY_QUERY_SECONDS.labels(ROUTE).observe(time.perf_counter() - began)
        if not isinstance(decision, Decision):
            missing = ", ".join(decision) or "the requested directions together"
            problem = Problem(
                problems.NO_HISTORY,
                f"nothing is known at or before {rfc3339_ms(at_ms)} for {missing}",
                {"missing": list(decision), "at": rfc3339_ms(at_ms)},
            )
            return self._problem(problem, path, unversioned)
        extra = [
            (b"x-rates-stale", b"true" if decision.stale else b"false"),
            (b"x-rates-as-of", rfc3339_ms(decision.as_of_ms).encode()),
        ]
        if decision.stale:  # the age it had at `at`: the answer never changes with the clock
            extra.append((b"x-rates-age", b"%d" % (max(0, at_ms - decision.as_of_ms) // 1000)))
        if unversioned:
            extra.append((b"vary", b"Accept-Version"))
        return respond(scope, render_v2(decision), extra)

    def _out_of_range(self, at_ms: int, now: int) -> Problem:
        oldest = now - self.retention_ms
        when = "in the future" if at_ms > now else "older than the retention"
        return Problem(
            problems.TIME_OUT_OF_RANGE,
            f"`at` ({rfc3339_ms(at_ms)}) is {when}: history covers {rfc3339_ms(oldest)} "
            f"to now ({rfc3339_ms(now)})",
            {"parameter": "at", "oldest": rfc3339_ms(oldest), "newest": rfc3339_ms(now)},
        )

    @staticmethod
    def _problem(problem: Problem, path: str, unversioned: bool) -> Response:
        headers = {"API-Version": VERSION, **(_VARY if unversioned else {})}
        return problem_response(problem, instance=path, headers=headers)
