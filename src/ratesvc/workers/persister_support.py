"""Small pieces of the persister: its options, backoff, consumer name, stop-aware sleep."""

from __future__ import annotations

import asyncio
import os
import random
import socket
from dataclasses import dataclass

from ratesvc.settings import Settings

BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 5.0  # a returning Redis or Postgres is used within 5 s
# Consumers idle this long with nothing pending are deleted from the group (names of processes
# gone for good: every restart uses a new name). A live persister reads at least once a second.
CONSUMER_IDLE_DROP_MS = 3_600_000


def default_consumer() -> str:
    """Consumer name unique per process: ``<hostname>-<pid>``."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True, slots=True)
class PersisterOptions:
    """The persister's slice of Settings (see the PERSISTER_* and RETENTION_* variables)."""

    batch_size: int = 500
    block_ms: int = 1_000
    claim_idle_ms: int = 30_000
    max_deliveries: int = 5
    retention_days: float = 30.0
    retention_batch_rows: int = 5_000
    retention_interval_s: float = 3_600.0
    candle_retention_days: float = 400.0
    stream_maxlen: int = 1_000_000
    stream_keep_s: float = 600.0
    trim_interval_s: float = 5.0

    @classmethod
    def from_settings(cls, settings: Settings) -> PersisterOptions:
        """Pick the persister's fields out of the settings."""
        return cls(
            batch_size=settings.persister_batch_size,
            block_ms=settings.persister_block_ms,
            claim_idle_ms=settings.persister_claim_idle_ms,
            max_deliveries=settings.persister_max_deliveries,
            retention_days=settings.retention_days,
            retention_batch_rows=settings.retention_batch_rows,
            retention_interval_s=settings.retention_interval_s,
            candle_retention_days=settings.candle_retention_days,
            stream_maxlen=settings.stream_maxlen,
            stream_keep_s=settings.stream_keep_s,
            trim_interval_s=settings.stream_trim_interval_s,
        )


class Backoff:
    """Exponential delays from `initial_s` doubling to `max_s`, with a little jitter."""

    def __init__(
        self, *, initial_s: float = BACKOFF_INITIAL_S, max_s: float = BACKOFF_MAX_S
    ) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self._next_s = initial_s
        self._failures = 0

    def next(self) -> float:
        """The delay before the next attempt; doubles the one after."""
        delay_s = self._next_s
        self._next_s = min(self._next_s * 2, self.max_s)
        self._failures += 1
        return delay_s * random.uniform(0.8, 1.0)

    def reset(self) -> int:
        """Back to `initial_s` after a success; returns the failures since the last reset."""
        failures, self._failures, self._next_s = self._failures, 0, self.initial_s
        return failures


async def sleep_unless(stop: asyncio.Event, delay_s: float) -> None:
    """Sleep `delay_s`, waking early when `stop` is set."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=delay_s)
    except TimeoutError:
        pass
