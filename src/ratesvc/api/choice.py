"""Which exchanger serves a request: freshness per value, hold-down failback, stale fallback.

Pure logic, no I/O and no clock of its own: callers pass `now_ms`. Definitions (the README
mirrors them):

- A value (exchanger, direction) is **fresh** at `now_ms` when its tick exists, no leg of it is
  older than the leg's own limit (``tick.is_stale(now_ms)`` is false), and it is not **blocked**.
  It is blocked while the exchanger's latest SourceStatus is DOWN or STALE and that status is not
  older than the tick's newest own leg (a leg whose source is the exchanger): a DOWN/STALE from the
  collector takes the value out at once, and only a tick carrying newer data of that exchanger
  brings it back. An exchanger is fresh for a set of directions when every value in it is fresh.
- `fresh_since` of a fresh value is its tick's `since_ms`: when the collector last saw it turn
  fresh after it was not (0 for a value fresh since before anyone can tell, e.g. the first ever).
  The collector is the one process that sees every outage, and it writes this into the shared
  data, so no part of the choice lives only in this process's memory: a worker started during a
  hold-down reaches the same decision as one that ran through the outage. A set is **held** when
  all its values are fresh and `now - fresh_since >= hold_down_ms`.
- Default choice: the first exchanger in preference order that is fresh and held; if none is held,
  the fresh exchanger that has been fresh the longest (ties: preference order). So failover is
  immediate, failback waits for the hold-down, and a flickering preferred exchanger never serves.
- Nothing fresh: the exchanger with every requested direction whose oldest leg is newest (ties:
  preference order), marked stale; no such exchanger: nothing to serve (503).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ratesvc.domain import RateTick, SourceStatus, is_blocked, is_fresh, own_leg_ms

__all__ = [
    "NEVER_MS",
    "Decision",
    "FreshnessBook",
    "Key",
    "decide",
    "is_blocked",
    "is_fresh",
    "own_leg_ms",
]

Key = tuple[str, str]  # (exchanger, direction)
NEVER_MS = 2**62  # "no change due by time alone"


@dataclass(frozen=True, slots=True)
class Decision:
    """What to serve for one request: the exchanger, its ticks in request order, and staleness.

    `exchanger` None means there is nothing to serve; `missing` then names the requested
    directions no exchanger has a value for. `stale_each` says, per tick, whether that value is
    not fresh (empty: each as `stale`); `stale` is true exactly when one of them is.
    """

    exchanger: str | None
    ticks: tuple[RateTick, ...]
    stale: bool
    missing: tuple[str, ...] = ()
    stale_each: tuple[bool, ...] = ()

    @property
    def as_of_ms(self) -> int:
        """The oldest leg of the served values (0 when nothing is served)."""
        return min((t.oldest_leg_ms for t in self.ticks), default=0)

    def is_stale(self, index: int) -> bool:
        """Whether the value `ticks[index]` is not fresh."""
        return self.stale_each[index] if self.stale_each else self.stale

    @classmethod
    def judged_at(cls, exchanger: str, ticks: Sequence[RateTick], at_ms: int) -> Decision:
        """`ticks` of `exchanger` as they stood at `at_ms` (history): each stale when one of its
        legs was past its limit then."""
        each = tuple(t.is_stale(at_ms) for t in ticks)
        return cls(exchanger, tuple(ticks), any(each), stale_each=each)


class FreshnessBook:
    """Which values are fresh and held, re-evaluated by the caller at chosen moments.

    `changes_at_ms` is the first instant after the last evaluation at which a new one could give
    another answer (a fresh value's leg ages out, a hold-down ends): until then the last one holds.
    """

    def __init__(self, *, hold_down_ms: int) -> None:
        self.hold_down_ms = hold_down_ms
        self.fresh_since: dict[Key, int] = {}
        self.held: frozenset[Key] = frozenset()
        self.changes_at_ms = 0
        self.blind = False  # the last evaluation could vouch for nothing (Redis lost too long)

    def evaluate(
        self,
        ticks: Mapping[Key, RateTick],
        statuses: Mapping[str, SourceStatus],
        now_ms: int,
        *,
        blind: bool = False,
    ) -> bool:
        """Re-evaluate every value at `now_ms`; True when the fresh or held sets changed.

        `blind` (the snapshot cannot be verified, e.g. Redis lost for too long) makes every value
        not fresh.
        """
        before = (self.fresh_since, self.held)
        self.blind = blind
        self.fresh_since = {
            key: tick.since_ms
            for key, tick in ticks.items()
            if not blind and is_fresh(tick, statuses.get(key[0]), now_ms)
        }
        self.held = frozenset(
            k for k, since in self.fresh_since.items() if now_ms - since >= self.hold_down_ms
        )
        ends = [ticks[key].stale_at_ms() for key in self.fresh_since]
        ends += [s + self.hold_down_ms for k, s in self.fresh_since.items() if k not in self.held]
        self.changes_at_ms = min(ends, default=NEVER_MS)
        return before != (self.fresh_since, self.held)

    def since(self, exchanger: str, directions: Sequence[str]) -> int | None:
        """Since when every value of the set has been fresh, or None if one is not."""
        latest = 0
        for direction in directions:
            since = self.fresh_since.get((exchanger, direction))
            if since is None:
                return None
            latest = max(latest, since)
        return latest

    def is_held(self, exchanger: str, directions: Sequence[str]) -> bool:
        """True when every value of the set has been fresh for the hold-down period."""
        return all((exchanger, d) in self.held for d in directions)

    def choose(self, preference: Sequence[str], directions: Sequence[str]) -> str | None:
        """The exchanger that serves by default, or None when none is fresh for the set."""
        candidates: list[tuple[str, int]] = []
        for exchanger in preference:
            since = self.since(exchanger, directions)
            if since is None:
                continue
            if self.is_held(exchanger, directions):
                return exchanger
            candidates.append((exchanger, since))
        if not candidates:
            return None
        return min(candidates, key=lambda c: c[1])[0]  # min keeps the first of equals


def decide(
    ticks: Mapping[Key, RateTick],
    book: FreshnessBook,
    preference: Sequence[str],
    directions: Sequence[str],
    *,
    exchanger: str | None = None,
) -> Decision:
    """The Decision for a request, from the snapshot and the last evaluation of `book`."""
    if exchanger is not None:
        rows = [ticks.get((exchanger, d)) for d in directions]
        missing = tuple(d for d, t in zip(directions, rows) if t is None)
        if missing:
            return Decision(None, (), True, missing)
        each = _stale_each(book, exchanger, directions)
        return Decision(exchanger, tuple(t for t in rows if t is not None), any(each), (), each)
    chosen = book.choose(preference, directions)
    if chosen is not None:
        fresh = (False,) * len(directions)
        return Decision(chosen, tuple(ticks[(chosen, d)] for d in directions), False, (), fresh)
    best: Decision | None = None
    for name in preference:
        rows = [ticks.get((name, d)) for d in directions]
        if any(t is None for t in rows):
            continue
        candidate = Decision(name, tuple(t for t in rows if t is not None), True)
        if best is None or candidate.as_of_ms > best.as_of_ms:
            best = candidate
    if best is not None:
        each = _stale_each(book, best.exchanger or "", directions)
        return Decision(best.exchanger, best.ticks, True, (), each)
    known = {d for (name, d) in ticks if name in preference}
    return Decision(None, (), True, tuple(d for d in directions if d not in known))


def _stale_each(book: FreshnessBook, exchanger: str, directions: Sequence[str]) -> tuple[bool, ...]:
    return tuple((exchanger, d) not in book.fresh_since for d in directions)
