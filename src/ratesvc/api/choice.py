"""Which exchanger serves a request: freshness per value, hold-down failback, stale fallback.

Pure logic, no I/O and no clock of its own: callers pass `now_ms`. Definitions (the README
mirrors them):

- A value (exchanger, direction) is **fresh** at `now_ms` when its tick exists, no leg of it is
  older than the leg's own limit (``tick.is_stale(now_ms)`` is false), and it is not **blocked**.
  It is blocked while the exchanger's latest SourceStatus is DOWN or STALE and that status is not
  older than the tick's newest own leg (a leg whose source is the exchanger): a DOWN/STALE from the
  collector takes the value out at once, and only a tick carrying newer data of that exchanger
  brings it back. An exchanger is fresh for a set of directions when every value in it is fresh.
- `fresh_since` is the moment a value was last seen turning fresh; it is cleared whenever the value
  is not fresh, so it measures *continuous* freshness. A set is **held** when all its values have
  been continuously fresh for at least `hold_down_ms`. A value fresh for the first time in this
  process is not coming back from an outage: it counts as held at once (its `fresh_since` is
  backdated by `hold_down_ms`), so at start-up the preferred exchanger serves as soon as it is
  fresh, even when another one was fresh a moment earlier.
- Default choice: the first exchanger in preference order that is fresh and held; if none is held,
  the fresh exchanger that has been fresh the longest (ties: preference order). So failover is
  immediate, failback waits for the hold-down, and a flickering preferred exchanger never serves.
- Nothing fresh: the exchanger with every requested direction whose oldest value is newest (ties:
  preference order), marked stale; no such exchanger: nothing to serve (503).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ratesvc.domain import RateTick, SourceState, SourceStatus

Key = tuple[str, str]  # (exchanger, direction)

BLOCKING_STATES = frozenset({SourceState.DOWN, SourceState.STALE})


def own_leg_ms(tick: RateTick) -> int:
    """Newest timestamp among the tick's legs from its own exchanger (any leg if none is)."""
    own = [leg.ts_ms for leg in tick.legs if leg.source == tick.exchanger]
    if own:
        return max(own)
    return max((leg.ts_ms for leg in tick.legs), default=tick.ts_ms)


def is_blocked(tick: RateTick, status: SourceStatus | None) -> bool:
    """True while a DOWN/STALE status of the exchanger is at least as new as the tick's own data."""
    return (
        status is not None and status.state in BLOCKING_STATES and status.ts_ms >= own_leg_ms(tick)
    )


def is_fresh(tick: RateTick | None, status: SourceStatus | None, now_ms: int) -> bool:
    """Freshness of one value at `now_ms` (see the module docstring)."""
    return tick is not None and not tick.is_stale(now_ms) and not is_blocked(tick, status)


@dataclass(frozen=True, slots=True)
class Decision:
    """What to serve for one request: the exchanger, its ticks in request order, and staleness.

    `exchanger` None means there is nothing to serve; `missing` then names the requested
    directions no exchanger has a value for.
    """

    exchanger: str | None
    ticks: tuple[RateTick, ...]
    stale: bool
    missing: tuple[str, ...] = ()

    @property
    def as_of_ms(self) -> int:
        """Timestamp of the oldest served value (0 when nothing is served)."""
        return min((t.ts_ms for t in self.ticks), default=0)


class FreshnessBook:
    """Continuous freshness per value, re-evaluated by the caller at chosen moments."""

    def __init__(self, *, hold_down_ms: int) -> None:
        self.hold_down_ms = hold_down_ms
        self.fresh_since: dict[Key, int] = {}
        self.held: frozenset[Key] = frozenset()
        self.seen_fresh: set[Key] = set()  # values fresh at least once: a return is a comeback

    def note_replaced(self, old: RateTick | None, status: SourceStatus | None, now_ms: int) -> None:
        """Before a value is replaced: if the old one was not fresh by now, freshness was broken.

        Catches a value that went stale and was refreshed between two evaluations.
        """
        if old is not None and not is_fresh(old, status, now_ms):
            self.fresh_since.pop((old.exchanger, old.direction), None)

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
        before = (frozenset(self.fresh_since), self.held)
        for key, tick in ticks.items():
            if not blind and is_fresh(tick, statuses.get(key[0]), now_ms):
                if key not in self.fresh_since:
                    first = key not in self.seen_fresh
                    self.fresh_since[key] = now_ms - self.hold_down_ms if first else now_ms
                    self.seen_fresh.add(key)
            else:
                self.fresh_since.pop(key, None)
        for key in [k for k in self.fresh_since if k not in ticks]:
            del self.fresh_since[key]
        self.held = frozenset(
            k for k, since in self.fresh_since.items() if now_ms - since >= self.hold_down_ms
        )
        return before != (frozenset(self.fresh_since), self.held)

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
        stale = book.since(exchanger, directions) is None
        return Decision(exchanger, tuple(t for t in rows if t is not None), stale)
    chosen = book.choose(preference, directions)
    if chosen is not None:
        return Decision(chosen, tuple(ticks[(chosen, d)] for d in directions), False)
    best: Decision | None = None
    for name in preference:
        rows = [ticks.get((name, d)) for d in directions]
        if any(t is None for t in rows):
            continue
        candidate = Decision(name, tuple(t for t in rows if t is not None), True)
        if best is None or candidate.as_of_ms > best.as_of_ms:
            best = candidate
    if best is not None:
        return best
    known = {d for (name, d) in ticks if name in preference}
    return Decision(None, (), True, tuple(d for d in directions if d not in known))
