"""An asyncio event loop on virtual time: a month of sleeps, timeouts and waits in seconds.

`loop.time()` is virtual. When nothing is ready to run and no I/O is pending, the loop jumps its
clock to the next scheduled callback instead of blocking, so every `asyncio.sleep`,
`asyncio.wait_for` and `asyncio.timeout` behaves as in real time, only without the waiting. Only
for code that does no real I/O (the loop would not wait for it): in-process fakes and mocks.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

from ratesvc.timing import Timing

T = TypeVar("T")


class VirtualClockError(RuntimeError):
    """Nothing is scheduled and nothing can happen: the simulated code waits forever."""


class _Selector(selectors.DefaultSelector):  # pylint: disable=too-many-ancestors
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events = super().select(0)
        if events or timeout == 0:
            return events
        if timeout is None:
            raise VirtualClockError("every task waits and nothing is scheduled")
        self.now += timeout  # jump to the next timer: nobody can tell it did not really pass
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):  # pylint: disable=abstract-method
    """A selector event loop whose clock only moves when every task waits."""

    def __init__(self) -> None:
        self._virtual = _Selector()
        super().__init__(self._virtual)

    def time(self) -> float:
        """Virtual monotonic seconds since the loop was made."""
        return self._virtual.now


def virtual_timing(loop: VirtualTimeLoop, *, epoch_s: float) -> Timing:
    """Clocks on `loop`'s virtual time, the wall clock starting at `epoch_s`."""
    return Timing(monotonic=loop.time, wall=lambda: epoch_s + loop.time(), sleep=asyncio.sleep)


def run_virtual(main: Coroutine[Any, Any, T], loop: VirtualTimeLoop) -> T:
    """Run `main` to completion on `loop`, then close it."""
    try:
        return loop.run_until_complete(main)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
