"""Exponential backoff with full jitter, as used by sources/supervise.py.

Pure state, no sleeping and no I/O: the caller decides when to wait and when to reset.
"""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Exponential backoff from `initial_s`, doubling per failure up to `max_s`, with full jitter.

    Full jitter (AWS architecture blog, "Exponential Backoff And Jitter"): each delay is drawn
    uniformly from ``[0, min(max_s, initial_s * 2**failures)]``, so many clients reconnecting after
    the same outage spread out instead of arriving together. One Backoff per source: it is stateful.

    Args:
        initial_s: ceiling of the first delay.
        max_s: the ceiling never grows past this.
        random_fraction: returns a number in [0, 1]; injectable so tests can pin the jitter.
    """

    def __init__(
        self,
        *,
        initial_s: float = 1.0,
        max_s: float = 60.0,
        random_fraction: Callable[[], float] = random.random,
    ) -> None:
        if initial_s <= 0 or max_s < initial_s:
            raise ValueError("need 0 < initial_s <= max_s")
        self.initial_s = initial_s
        self.max_s = max_s
        self._random_fraction = random_fraction
        self.failures = 0

    @property
    def ceiling_s(self) -> float:
        """The upper bound of the next delay."""
        # cap the exponent so 2**failures never overflows after days of failures
        return min(self.max_s, self.initial_s * 2 ** min(self.failures, 64))

    def next_delay(self) -> float:
        """Record one more failure and return how long to wait before the next attempt."""
        delay = self.ceiling_s * min(max(self._random_fraction(), 0.0), 1.0)
        self.failures += 1
        return delay

    def clone(self) -> Backoff:
        """A fresh Backoff with the same bounds and jitter (e.g. for a fallback transport)."""
        return Backoff(
            initial_s=self.initial_s, max_s=self.max_s, random_fraction=self._random_fraction
        )

    def reset(self) -> None:
        """Start again from `initial_s` (call after the first useful data of a connection)."""
        self.failures = 0
