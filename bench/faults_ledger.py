"""Tick accounting for bench/faults.py: published by the collector(s) vs stored in Postgres.

Published = `ratesvc_ticks_published_total` (summed over exchangers) of every collector process
that ever ran. A process that dies takes its counter with it and a restarted one starts at 0, so
each collector port is scraped with `process_start_time_seconds`: when the start time changes, the
last value read from the old process is kept ("retired") and added to every later total. When a
scenario kills (or stops) a collector it takes a cut right before, and afterwards adds the tick
entries that process still wrote after the cut (stream entries carry the publisher's lease term).

A cut is consistent without stopping the feed: the published total is read, then the stream's
newest id, then the total again, until both totals agree: every entry up to that id was counted,
none after it (a collector counts a tick right after Redis accepted it). A checkpoint is a cut
plus the persister having passed it (nothing delivered up to the cut is still pending). Between
two checkpoints:

- lost = ticks counted as published that are not in the stream window (published - tick entries)
         + distinct tick ids in the stream window that are not rows of `rate_tick`
           (dead-lettered ones listed apart);
- duplicates = rows stored from the window's entries whose (exchanger, direction, ts_ms, value)
  another row of `rate_tick` has too;
- republished = tick entries in the window whose tick id repeats (stored once: not a loss).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis as redis_sync
from faults_stack import Stack, metric, wait_for

from ratesvc.bus import DEAD_LETTER, GROUP, STREAM

CUT_ATTEMPTS = 200
CATCH_UP_TIMEOUT_S = 90.0


def _id(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass(frozen=True)
class Checkpoint:
    """Counts at one consistent cut."""

    at: float
    published: float
    last_id: str
    dead_last_id: str
    exact: bool = True


ZERO = Checkpoint(0.0, 0.0, "0-0", "0-0")
# Rows stored from the window's entries whose (exchanger, direction, ts_ms, value) another row has.
_DUPLICATES = """
SELECT count(*) AS n FROM rate_tick r
WHERE r.stream_id = ANY($1::text[]) AND EXISTS (
    SELECT 1 FROM rate_tick o
    WHERE o.exchanger = r.exchanger AND o.direction = r.direction AND o.ts_ms = r.ts_ms
      AND o.value = r.value AND o.id <> r.id)
"""


@dataclass
class Account:
    """What happened to the ticks between two checkpoints."""

    published: int
    in_stream: int
    distinct: int
    rows: int
    missing: int
    dead: int
    duplicates: int
    exact: bool
    notes: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        """Published but never stored (dead-lettered ones excluded: listed apart)."""
        return max(0, self.published - self.in_stream) + self.missing - self.dead

    def lost_text(self) -> str:
        text = str(self.lost) if self.exact else f"{self.lost} (approx.)"
        return text + (f" (+{self.dead} dead-lettered)" if self.dead else "")

    def summary(self) -> str:
        parts = [
            f"published {self.published}, tick entries in stream {self.in_stream}",
            f"distinct tick ids {self.distinct}, rows stored from them {self.rows}",
        ]
        if self.in_stream != self.distinct:
            parts.append(f"republished identical ticks {self.in_stream - self.distinct}")
        return "; ".join(parts + self.notes)


class Ledger:
    """Published totals across collector restarts, and checkpoints."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.retired = 0.0
        self.seen: dict[str, tuple[float, float]] = {}  # label -> (start time, last value)
        self.restarts: list[str] = []
        self.errors: list[str] = []
        self.last: Checkpoint = ZERO

    def published(self) -> float:
        """Ticks published by every collector so far (see the module docstring)."""
        total = 0.0
        for label, port in self.stack.collector_ports.items():
            scraped = self.stack.scrape(port)
            if scraped is None:  # down or restarting: its last value still counts
                total += self.seen.get(label, (0.0, 0.0))[1]
                continue
            start = metric(scraped, "process_start_time_seconds")
            value = metric(scraped, "ratesvc_ticks_published_total")
            old = self.seen.get(label)
            if old is not None and old[0] != start:
                self.retired += old[1]
                self.restarts.append(f"{label} collector restarted after {old[1]:g} ticks")
            self.seen[label] = (start, value)
            total += value
        return total + self.retired

    def retire(self, label: str) -> None:
        """A collector the benchmark started is gone for good: keep its last count."""
        self.published()
        self.retired += self.seen.pop(label, (0.0, 0.0))[1]
        self.stack.collector_ports.pop(label, None)

    def cut(self) -> tuple[float, str, bool]:
        """(published total, newest stream id, exact) at one consistent moment."""
        total, last = self.published(), self.stack.last_id()
        for _ in range(CUT_ATTEMPTS):
            again = self.published()
            if again == total:
                return total, last, True
            time.sleep(0.005)
            total, last = again, self.stack.last_id()
        return total, last, False

    def passed(self, last_id: str) -> bool:
        """The persister group delivered everything up to `last_id` and acked it."""
        groups = {g["name"]: g for g in self.stack.rdb.xinfo_groups(STREAM)}
        delivered = groups[GROUP]["last-delivered-id"]
        if _id(delivered) < _id(last_id):
            return False
        return not self.stack.rdb.xpending_range(STREAM, GROUP, min="-", max=last_id, count=1)

    def checkpoint(self) -> Checkpoint:
        """A cut the persister has passed (see the module docstring)."""
        published, last_id, exact = self.cut()
        if last_id != "0-0":
            caught_up = wait_for(lambda: self.passed(last_id), CATCH_UP_TIMEOUT_S, 0.05)
            exact = exact and caught_up is not None
        dead = self.stack.rdb.xrevrange(DEAD_LETTER, count=1)
        cut = Checkpoint(
            time.monotonic(), published, last_id, str(dead[0][0]) if dead else "0-0", exact
        )
        self.last = cut
        return cut

    def end_collector(self, label: str, end: Callable[[], None], term: int) -> None:
        """Run `end` (a kill or stop of collector `label`, publishing as lease `term`), counting
        the ticks it wrote after the last scrape from the stream."""
        _total, last_id, _exact = self.cut()
        start, value = self.seen.get(label, (0.0, 0.0))
        end()
        time.sleep(0.2)  # a publish the process sent just before it ended reaches Redis first
        after = self.stack.entries(STREAM, last_id, "+")
        extra = sum(1 for _i, f in after if f.get("kind") == "tick" and f.get("term") == str(term))
        self.seen[label] = (start, value + extra)

    def account(self, start: Checkpoint, end: Checkpoint) -> Account:
        """Compare what was published with what was stored between two checkpoints."""
        entries = self.stack.entries(STREAM, start.last_id, end.last_id)
        ticks = [(i, f.get("id", "")) for i, f in entries if f.get("kind") == "tick"]
        ids = [tick_id for _i, tick_id in ticks]
        distinct = sorted(set(ids))
        sids = [i for i, _tick_id in ticks]
        found = self.stack.sql(
            "SELECT count(*) AS n FROM rate_tick WHERE tick_id = ANY($1::text[])", distinct
        )[0]["n"]
        rows = self.stack.sql(
            "SELECT count(*) AS n FROM rate_tick WHERE stream_id = ANY($1::text[])", sids
        )[0]["n"]
        dead = [
            f.get("id", "")
            for _i, f in self.stack.entries(DEAD_LETTER, start.dead_last_id, end.dead_last_id)
            if f.get("kind") == "tick"
        ]
        account = Account(
            published=round(end.published - start.published),
            in_stream=len(ids),
            distinct=len(distinct),
            rows=int(rows),
            missing=len(distinct) - int(found),
            dead=len(set(dead) & set(distinct)),
            duplicates=int(self.stack.sql(_DUPLICATES, sids)[0]["n"]),
            exact=start.exact and end.exact,
        )
        if account.published < account.in_stream:
            account.notes.append(
                f"{account.in_stream - account.published} more tick entries than counted"
            )
        return account

    def table_totals(self) -> tuple[int, int]:
        """(rows, rows - distinct (exchanger, direction, ts_ms, value)) of the whole table."""
        row = self.stack.sql(
            "SELECT count(*) AS n, count(DISTINCT (exchanger, direction, ts_ms, value)) AS d"
            " FROM rate_tick"
        )[0]
        return int(row["n"]), int(row["n"]) - int(row["d"])

    def safe_checkpoint(self) -> Checkpoint | None:
        """checkpoint(), None when Redis/Postgres cannot be read (the row records why)."""
        try:
            return self.checkpoint()
        except (redis_sync.RedisError, OSError) as err:
            self.errors.append(f"checkpoint failed: {err!r}")
            return None
