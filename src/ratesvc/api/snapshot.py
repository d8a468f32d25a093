"""Snapshot: the latest tick per (exchanger, direction) and status per source, versioned.

Pure in-memory state with an injectable clock: applies events newer-wins, re-evaluates time-based
freshness, and answers `decide` for the request path. RateMirror (mirror.py) keeps it current
from Redis; tests fill it by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from loguru import logger

from ratesvc import metrics
from ratesvc.api.choice import Decision, FreshnessBook, Key, decide
from ratesvc.bus import Event
from ratesvc.domain import DIRECTION_INDEX, DIRECTIONS, EXCHANGERS, RateTick, SourceStatus, now_ms


def _tick_order(tick: RateTick) -> tuple[int, int]:
    # The newest leg first; between two ticks with the same newest leg (a cross whose market leg
    # did not move), the one with the newer other leg (its FX leg) wins.
    return max((leg.ts_ms for leg in tick.legs), default=tick.ts_ms), tick.oldest_leg_ms


class Snapshot:  # pylint: disable=too-many-instance-attributes
    """What this worker knows, and its `version` (bumped on every change that can alter a response).

    Args:
        preference: exchangers in default-choice order.
        hold_down_s: continuous freshness the preferred exchanger needs before failback.
        redis_stale_after_s: after this long without the stream every value is served stale.
        clock: wall-clock milliseconds (injectable for tests).
    """

    def __init__(
        self,
        *,
        preference: Sequence[str] = EXCHANGERS,
        hold_down_s: float = 10.0,
        redis_stale_after_s: float = 10.0,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.preference = tuple(preference)
        self.clock = clock
        self.redis_stale_after_ms = int(redis_stale_after_s * 1000)
        self.ticks: dict[Key, RateTick] = {}
        self.statuses: dict[str, SourceStatus] = {}
        self.book = FreshnessBook(hold_down_ms=int(hold_down_s * 1000))
        self.version = 0
        self.loaded = False
        self.following = False
        self._lost_at_ms: int | None = None  # when following stopped (None while following)
        self.changes_at_ms = 0  # the first instant time alone may change an answer (evaluate)
        self._serving: str | None = None
        # called after every version bump (the push hub wakes on it); no I/O, must not raise
        self.on_change: list[Callable[[], None]] = []

    @property
    def ready(self) -> bool:
        """Snapshot loaded and the stream being followed."""
        return self.loaded and self.following

    def load(self, ticks: Iterable[RateTick], statuses: Iterable[SourceStatus] = ()) -> None:
        """Merge a full load (newer wins per key) and mark the snapshot loaded."""
        for event in (*statuses, *ticks):
            self._apply(event)
        self.loaded = True
        self.evaluate(force=True)

    def apply(self, events: Iterable[Event]) -> bool:
        """Apply stream events (newer wins per key); True and a new version if anything changed."""
        changed = False
        for event in events:
            changed |= self._apply(event)
        if changed:
            self.evaluate(force=True)
        return changed

    def evaluate(self, *, force: bool = False, now: int | None = None) -> bool:
        """Re-evaluate time-based state; bump the version if it changed (or `force`)."""
        now = self.clock() if now is None else now
        blind_at = (self._lost_at_ms or 0) + self.redis_stale_after_ms
        blind = self._lost_at_ms is not None and now >= blind_at
        changed = self.book.evaluate(self.ticks, self.statuses, now, blind=blind)
        self.changes_at_ms = self.book.changes_at_ms
        if self._lost_at_ms is not None and not blind:
            self.changes_at_ms = min(self.changes_at_ms, blind_at)
        if changed or force:
            self._bump()
        self._export_ages(now)
        return changed or force

    def catch_up(self, now: int) -> None:
        """The answer path's check: re-evaluate if time alone may have changed an answer by `now`.

        A comparison with a precomputed instant, no I/O: a value never reads fresh past the limit
        of any of its legs, however busy the worker and whenever its evaluation timer last ran.
        """
        if now >= self.changes_at_ms:
            self.evaluate(now=now)

    def decide(self, exchanger: str | None, directions: Sequence[str]) -> Decision:
        """What to serve for `directions` (in DIRECTIONS order); no I/O, no clock."""
        return decide(self.ticks, self.book, self.preference, directions, exchanger=exchanger)

    def set_following(self, following: bool) -> None:
        """Record whether the stream is followed (tests flip it by hand for /ready)."""
        if following == self.following and (following or self._lost_at_ms is not None):
            return
        self.following = following
        self._lost_at_ms = None if following else self.clock()
        metrics.API_REDIS_UP.set(1 if following else 0)
        self.evaluate(force=True)

    def _apply(self, event: Event) -> bool:
        if isinstance(event, SourceStatus):
            old_status = self.statuses.get(event.source)
            if old_status is not None and old_status.ts_ms > event.ts_ms:
                return False
            self.statuses[event.source] = event
            # Evaluate at once: a DOWN followed by a newer tick in the same batch still breaks
            # continuous freshness.
            self.book.evaluate(self.ticks, self.statuses, self.clock())
            return old_status != event
        if event.exchanger not in EXCHANGERS or event.direction not in DIRECTION_INDEX:
            return False
        if not event.legs or not event.value.is_finite():
            return False
        key = (event.exchanger, event.direction)
        old = self.ticks.get(key)
        if old is not None and _tick_order(event) <= _tick_order(old):
            return False
        self.ticks[key] = event
        return True

    def _bump(self) -> None:
        self.version += 1
        metrics.API_SNAPSHOT_VERSION.set(self.version)
        for listener in self.on_change:
            listener()
        serving = self.decide(None, DIRECTIONS).exchanger
        if serving != self._serving:
            if self._serving is not None and serving is not None:
                metrics.API_FAILOVERS.labels(self._serving, serving).inc()
                logger.info("serving {to} instead of {frm}", to=serving, frm=self._serving)
            for name in EXCHANGERS:
                metrics.API_SERVING.labels(name).set(1 if name == serving else 0)
            self._serving = serving

    def _export_ages(self, now: int) -> None:
        for name in EXCHANGERS:
            oldest = min((t.ts_ms for (ex, _d), t in self.ticks.items() if ex == name), default=0)
            if oldest:
                metrics.API_VALUE_AGE.labels(name).set(max(0, now - oldest) / 1000)
