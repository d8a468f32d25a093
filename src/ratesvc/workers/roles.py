"""What the collector tells its secondary sources: whether they serve, whether it spends calls.

Metered calls (CoinGecko's monthly quota) are spent once per deployment: only the collector that
leads spends them, the others read its answers (sources/coingecko.py). "Leads" follows the
outbox: from gaining the lease until another collector is known to hold it, so a leader cut off
from Redis keeps calling (its values may still be published if its term continues) and a standby
never calls. A secondary serves (CoinGecko's active cadence) while this collector holds the lease
and the primary exchanger is not up. Driven by events (statuses, lease changes), never polled.
"""

from __future__ import annotations

from collections.abc import Sequence

from ratesvc.domain import SourceState, SourceStatus
from ratesvc.sources.base import Source

PRIMARY = "binance"


class SourceRoles:
    """Applies the roles to the secondary sources whenever an input changes."""

    def __init__(self, sources: Sequence[Source]) -> None:
        self.secondaries = [s for s in sources if s.name != PRIMARY]
        self.has_primary = len(self.secondaries) < len(sources)
        self.holding = False  # this collector holds the lease
        self.metering = False  # this collector spends the metered calls
        self.primary_up = False
        self._applied: tuple[bool, bool] | None = None
        self.apply()

    @property
    def serving(self) -> bool:
        """Whether the secondaries serve (poll at their active cadence)."""
        return self.holding and not (self.has_primary and self.primary_up)

    def on_status(self, status: SourceStatus) -> None:
        """A source's state changed: the primary's decides whether the secondaries serve."""
        if status.source == PRIMARY:
            self.primary_up = status.state is SourceState.UP
            self.apply()

    def on_gain(self) -> None:
        """This collector holds the lease: it spends the calls."""
        self.holding = self.metering = True
        self.apply()

    def on_loss(self) -> None:
        """The lease is no longer provably ours; until another holder is seen we keep calling."""
        self.holding = False
        self.apply()

    def on_superseded(self) -> None:
        """Another collector holds the lease: it spends the calls, we read its answers."""
        self.holding = self.metering = False
        self.apply()

    def apply(self) -> None:
        """Tell every secondary its roles (only when they changed)."""
        roles = (self.serving, self.metering)
        if roles == self._applied:
            return
        self._applied = roles
        for source in self.secondaries:
            source.set_metered(self.metering)
            source.set_active(self.serving)
