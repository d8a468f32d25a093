"""Call budgets of metered REST APIs: a per-minute cap and a monthly quota with a reserve.

Bookkeeping and arithmetic only (no sleeping, no HTTP). The monthly count, the time of the last
call and the last answer must survive restarts and be shared by every collector (metered calls are
spent once per deployment: only the lease holder calls, the others read its answers), but sources
never import bus/store: they live in an injectable CallLedger (MemoryLedger by default); the
collector wires a Redis-backed one through Source.use_ledger().
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from ratesvc.domain import Answer
from ratesvc.errors import SourceError

MINUTE_S = 60.0


class CallLedger(Protocol):
    """The deployment's record of a metered API: calls per UTC calendar month (by `source` and
    ``YYYY-MM``), when the last call went out, and its last good answer.

    Every collector reads and writes one ledger, so the one that spends the calls (the lease
    holder) and the ones standing by follow one schedule and see the same data. Implementations
    should not raise: one whose store is unreachable answers from, and records into, local state
    (an error would surface as a failed poll, retried with backoff).
    """

    async def get(self, source: str, month: str) -> int:
        """Calls counted for `source` in `month` so far (0 when unknown)."""

    async def incr(self, source: str, month: str, *, at_s: float) -> int:
        """Count one call made at `at_s` (epoch s, also the source's last call); the new total."""

    async def last_call_s(self, source: str) -> float | None:
        """Epoch seconds of the source's last call by any collector (None: none recorded)."""

    async def share(self, source: str, answer: Answer) -> None:
        """Keep `answer` as the source's latest, for the collectors standing by."""

    async def shared(self, source: str) -> Answer | None:
        """The source's latest good answer, whoever made the call (None: none kept)."""


class MemoryLedger:
    """CallLedger in process memory: lost on restart, shared with no one (the default, tests)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}  # "<source>:<YYYY-MM>" -> calls
        self.last_calls: dict[str, float] = {}
        self.answers: dict[str, Answer] = {}

    async def get(self, source: str, month: str) -> int:
        """Calls counted for `source` in `month` so far."""
        return self.counts.get(f"{source}:{month}", 0)

    async def incr(self, source: str, month: str, *, at_s: float) -> int:
        """Count one call made at `at_s`; return the new total."""
        key = f"{source}:{month}"
        self.counts[key] = self.counts.get(key, 0) + 1
        self.last_calls[source] = max(at_s, self.last_calls.get(source, at_s))
        return self.counts[key]

    async def last_call_s(self, source: str) -> float | None:
        """When the source's last call went out."""
        return self.last_calls.get(source)

    async def share(self, source: str, answer: Answer) -> None:
        """Keep `answer` as the source's latest."""
        self.answers[source] = answer

    async def shared(self, source: str) -> Answer | None:
        """The source's latest answer."""
        return self.answers.get(source)


class BudgetExhausted(SourceError):
    """The monthly quota is spent: no call until the month ends."""


def month_bounds(epoch_s: float) -> tuple[str, float, float]:
    """The UTC calendar month around `epoch_s`: (``YYYY-MM``, start, end) in epoch seconds."""
    moment = datetime.fromtimestamp(epoch_s, UTC)
    start = datetime(moment.year, moment.month, 1, tzinfo=UTC)
    end = datetime(moment.year + moment.month // 12, moment.month % 12 + 1, 1, tzinfo=UTC)
    return f"{moment.year:04d}-{moment.month:02d}", start.timestamp(), end.timestamp()


@dataclass(frozen=True, slots=True)
class BudgetLimits:
    """A plan's limits; `reserve_fraction` of a month's calls is never planned for standby."""

    per_minute: int
    per_month: int
    reserve_fraction: float = 0.1


class CallBudget:
    """How often a source may call: per-minute cap, monthly quota, standby vs active cadence.

    The monthly rule (all in calls and seconds of the current UTC month):

    - standby: the configured cadence, slowed so standby alone plans at most
      ``(1 - reserve_fraction)`` of a month's calls, and never faster than the even spread
      ``seconds_left / calls_left`` (so the quota cannot run out before the month ends);
    - active (the venue serves): the configured active cadence while the calls left exceed what
      standby needs until the month ends (the spare, at least the reserve when on plan), else
      the standby cadence;
    - both: never closer than ``60 / per_minute`` s, and never more than `per_minute` calls in
      any 60 s (`minute_free_at`).

    Args:
        name: the ledger key prefix (the source's name).
        clock: monotonic seconds (the per-minute window); `wall_clock`: epoch seconds (months).
    """

    def __init__(
        self,
        name: str,
        limits: BudgetLimits,
        *,
        ledger: CallLedger | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.name, self.limits = name, limits
        self.ledger: CallLedger = ledger or MemoryLedger()
        self.clock, self.wall_clock = clock, wall_clock
        self._recent: deque[float] = deque()  # clock() of the calls in the last minute
        self._month = ""
        self._used: int | None = None  # calls in self._month per the ledger (None: not read)

    def use_ledger(self, ledger: CallLedger) -> None:
        """Count in `ledger` from now on (re-read before the next call)."""
        self.ledger, self._used = ledger, None

    def used_this_month(self) -> int:
        """Calls counted this month, as last read from the ledger (0 in a new month)."""
        month, _, _ = month_bounds(self.wall_clock())
        return (self._used or 0) if month == self._month else 0

    def remaining_month(self) -> int:
        """Calls left this month."""
        return max(self.limits.per_month - self.used_this_month(), 0)

    def remaining_minute(self) -> int:
        """Calls left in the sliding 60 s window."""
        self._prune()
        return max(self.limits.per_minute - len(self._recent), 0)

    def minute_free_at(self) -> float:
        """clock() time at which one more call fits in the per-minute cap (-inf: now)."""
        self._prune()
        if len(self._recent) < self.limits.per_minute:
            return -math.inf
        return self._recent[-self.limits.per_minute] + MINUTE_S

    def interval_s(self, *, standby_s: float, active_s: float, active: bool) -> float:
        """Seconds between calls right now (see the class docstring for the rule)."""
        now = self.wall_clock()
        _, start, end = month_bounds(now)
        left_s, month_s = end - now, end - start
        minute_s = MINUTE_S / self.limits.per_minute
        remaining = self.remaining_month()
        if remaining <= 0:
            return max(left_s, minute_s)
        planned = month_s / (self.limits.per_month * (1 - self.limits.reserve_fraction))
        standby = max(standby_s, planned, left_s / remaining, minute_s)
        if active and remaining - left_s / standby >= 1:
            return max(active_s, minute_s)
        return standby

    async def spend(self) -> int:
        """Count one call before it is made (a call that then fails still counts).

        Returns:
            The calls counted this month, this one included.

        Raises:
            BudgetExhausted: the monthly quota is spent (nothing is counted).
        """
        now = self.wall_clock()
        month, _, _ = month_bounds(now)
        if month != self._month or self._used is None:
            self._month, self._used = month, await self.ledger.get(self.name, month)
        if self._used >= self.limits.per_month:
            raise BudgetExhausted(f"monthly quota of {self.limits.per_month} calls is spent")
        self._recent.append(self.clock())
        self._used = await self.ledger.incr(self.name, month, at_s=now)
        return self._used

    async def last_call_age_s(self) -> float | None:
        """Seconds since any collector's last call of this source (None: none recorded)."""
        last = await self.ledger.last_call_s(self.name)
        return None if last is None else max(self.wall_clock() - last, 0.0)

    async def share(self, answer: Answer) -> None:
        """Keep a good answer for the collectors that spend no call."""
        await self.ledger.share(self.name, answer)

    async def shared(self) -> Answer | None:
        """The latest good answer, whoever made the call."""
        return await self.ledger.shared(self.name)

    def _prune(self) -> None:
        cutoff = self.clock() - MINUTE_S
        while self._recent and self._recent[0] <= cutoff:
            self._recent.popleft()
