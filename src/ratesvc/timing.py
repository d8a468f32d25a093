"""The clocks a role runs on: real ones by default, virtual ones in simulations.

A role takes one Timing and hands its parts to what it builds (lanes, leadership, collector), so a
simulation can run the real code through a month of virtual time (bench/budget_month.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Timing:
    """Monotonic seconds, epoch seconds and the sleep that waits on them."""

    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep

    def wall_ms(self) -> int:
        """Epoch milliseconds."""
        return int(self.wall() * 1000)


REAL_TIME = Timing()
