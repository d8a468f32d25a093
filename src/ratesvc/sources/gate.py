"""When a venue may be called again: one Gate per venue, shared by all its transports.

Every HTTP request a source makes and every websocket handshake asks the gate first
(sources/base.py) and tells it what the venue answered. A Retry-After (429), a ban (418: until the
end its message names, else a floor that doubles per ban in a row), a refused location (451) or a
firewall page (403) close it; while it is closed nothing is sent (`check()` raises Held) and the
lanes wait until it opens (`Source.retry_floor_s()`). Binance counts limits and bans per IP across
its hosts (api.*, stream.*), so a gate covers the venue, not one host name. The collectors of a
deployment share the IP too: with a shared board (`share_with`, bus/bans.py) a ban or Retry-After
one of them was told is posted for all, and `admit()` reads it before every request, so the
deployment draws one request during a ban. No sleeping; I/O only through the board.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from loguru import logger

from ratesvc.errors import Banned, Held, RateLimited, Refused, SourceError
from ratesvc.metrics import SOURCE_BANNED_UNTIL

# Clocks differ: never knock at the very millisecond a ban is said to end (a request still inside
# the ban may lengthen it).
BAN_MARGIN_S = 2.0
BAN_FLOOR_S = 120.0  # a ban that names no end: Binance's shortest ban, doubled per ban in a row
BAN_MAX_S = 3 * 86_400.0  # Binance's longest ban


class BanBoard(Protocol):
    """Where the collectors of a deployment share bans (bus/bans.py); must never raise."""

    async def post(self, venue: str, *, until_s: float, hold_s: float, why: str) -> None:
        """No request to `venue` until `until_s` (epoch s), `hold_s` from now."""

    async def read(self, venue: str) -> tuple[float, str] | None:
        """A ban some collector posted: (end epoch s, why), or None."""


class Gate:
    """Closed while the venue asked us (or implied) to send nothing; shared by its transports.

    Args:
        name: the venue, for logs and the ban metric.
        clock: monotonic seconds (when the gate opens); `wall_clock`: epoch seconds (ban ends).
    """

    def __init__(
        self,
        name: str,
        *,
        ban_floor_s: float = BAN_FLOOR_S,
        ban_max_s: float = BAN_MAX_S,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.ban_floor_s, self.ban_max_s = ban_floor_s, ban_max_s
        self.clock, self.wall_clock = clock, wall_clock
        self.log = logger.bind(source=name)
        self._open_at = -math.inf  # clock() from which requests may go out again
        self._why = ""
        self._unnamed_bans = 0  # bans in a row whose end we were not told
        self._advised = ""  # the refusal advice already logged in this episode
        self.board: BanBoard | None = None
        self._posting: set[asyncio.Task[None]] = set()

    def share_with(self, board: BanBoard) -> None:
        """Post the bans this gate learns to `board`, and honour the ones posted there."""
        self.board = board

    async def admit(self) -> None:
        """`check()`, after adopting a ban another collector posted (read before every request).

        Raises:
            Held: the gate is closed, here or deployment-wide. Nothing was sent.
        """
        if self.board is not None and self.remaining_s() <= 0:
            shared = await self.board.read(self.name)
            if shared is not None:
                until_s, why = shared
                hold_s = until_s - self.wall_clock()
                if hold_s > 0:
                    self._close(hold_s, f"{why} (told to another collector)")
                    SOURCE_BANNED_UNTIL.labels(source=self.name).set(until_s)
                    self.log.warning(
                        "{name}: no request until {end}: another collector was told {why}",
                        name=self.name,
                        end=_utc(until_s),
                        why=why,
                    )
        self.check()

    def remaining_s(self) -> float:
        """Seconds until requests may go out again (0: open)."""
        return max(0.0, self._open_at - self.clock())

    def check(self) -> None:
        """Return when a request may go out now.

        Raises:
            Held: the gate is closed; `retry_after_s` says for how much longer. Nothing was sent.
        """
        remaining = self.remaining_s()
        if remaining > 0:
            raise Held(
                f"no request sent: {self.name} is held {remaining:.0f}s more ({self._why})",
                retry_after_s=remaining,
            )

    def passed(self) -> None:
        """The venue answered a request normally: a ban episode (if any) is over."""
        if self._unnamed_bans or self._advised:
            self._unnamed_bans, self._advised = 0, ""
        SOURCE_BANNED_UNTIL.labels(source=self.name).set(0)

    def observe(self, error: SourceError) -> None:
        """Learn from an error answer: close the gate as long as it says (others: no change)."""
        if isinstance(error, Banned):
            self._ban(error)
        elif isinstance(error, Refused):
            self._close(error.hold_s, str(error))
            if error.advice != self._advised:
                self._advised = error.advice
                self.log.error("{advice}", advice=error.advice)
        elif isinstance(error, RateLimited) and not isinstance(error, Held):
            if error.retry_after_s:
                why = f"Retry-After {error.retry_after_s:g}s"
                self._close(error.retry_after_s, why)
                self._share(error.retry_after_s, why)

    def _ban(self, error: Banned) -> None:
        now = self.wall_clock()
        holds = []
        if error.until_s is not None and error.until_s > now:
            holds.append(error.until_s - now + BAN_MARGIN_S)
        if error.retry_after_s:
            holds.append(error.retry_after_s)
        named = bool(holds)
        if not named:
            holds.append(min(self.ban_floor_s * 2 ** min(self._unnamed_bans, 32), self.ban_max_s))
            self._unnamed_bans += 1
        hold_s = max(holds)
        end_s = now + hold_s
        self._close(hold_s, f"banned until {_utc(end_s)}")
        self._share(hold_s, f"banned until {_utc(end_s)}")
        SOURCE_BANNED_UNTIL.labels(source=self.name).set(end_s)
        self.log.critical(
            "{name} banned this IP: no request to {name} until {end} ({hold_s:.0f}s{how}); {error}",
            name=self.name,
            end=_utc(end_s),
            hold_s=hold_s,
            how="" if named else ", the answer named no end: waiting a floor",
            error=error,
        )

    def _share(self, hold_s: float, why: str) -> None:
        """Post a hold to the board (in the background: `observe` runs inside an answer)."""
        if self.board is None:
            return
        post = self.board.post(
            self.name, until_s=self.wall_clock() + hold_s, hold_s=hold_s, why=why
        )
        task = asyncio.get_running_loop().create_task(post)
        self._posting.add(task)
        task.add_done_callback(self._posting.discard)

    def _close(self, hold_s: float, why: str) -> None:
        open_at = self.clock() + hold_s
        if open_at > self._open_at:
            self._open_at, self._why = open_at, why


def _utc(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
