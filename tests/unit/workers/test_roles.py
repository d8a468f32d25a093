"""Which collector spends CoinGecko's metered calls, and when CoinGecko polls at its active cadence.

Driven through the collector's own listener hooks (statuses, lease changes), as run_collector wires
them; the fake source records what it was told.
"""

from __future__ import annotations

from ratesvc.bus import LeaseToken
from ratesvc.directions import DerivationConfig
from ratesvc.domain import SourceState, SourceStatus
from ratesvc.workers.collector import Collector
from ratesvc.workers.roles import SourceRoles


class Told:
    """A secondary source's name and the roles it was told, as run_collector's sources are."""

    name = "coingecko"

    def __init__(self) -> None:
        self.metered: bool | None = None
        self.active: bool | None = None

    def set_metered(self, metered: bool) -> None:
        self.metered = metered

    def set_active(self, active: bool) -> None:
        self.active = active


class Primary:
    name = "binance"

    def set_metered(self, metered: bool) -> None:
        raise AssertionError("the primary has no metered calls")

    def set_active(self, active: bool) -> None:
        raise AssertionError("the primary always serves")


class Outbox:
    def put(self, events) -> None:
        del events

    def resume(self) -> None: ...

    def drop(self) -> None: ...

    def hold(self) -> None: ...

    def discard(self) -> None: ...


def make() -> tuple[Collector, Told]:
    told = Told()
    roles = SourceRoles([Primary(), told])  # type: ignore[list-item]
    collector = Collector(
        Outbox(),  # type: ignore[arg-type]
        DerivationConfig(max_age_ms={"binance": 10_000, "coingecko": 900_000}),
        min_interval_ms=0,
        refresh_interval_ms=2_000,
        roles=roles,
    )
    return collector, told


def binance(state: SourceState) -> SourceStatus:
    return SourceStatus("binance", state, 1)


async def test_a_collector_spends_no_metered_call_until_it_gains_the_lease() -> None:
    collector, told = make()
    assert (told.metered, told.active) == (False, False)
    await collector.on_status(binance(SourceState.DOWN))  # a failover, but we stand by
    assert (told.metered, told.active) == (False, False)
    collector.on_gain(LeaseToken("alpha", 1), continues=False)
    assert (told.metered, told.active) == (True, True)  # Binance is down: CoinGecko serves
    await collector.on_status(binance(SourceState.UP))
    assert (told.metered, told.active) == (True, False)


async def test_a_lost_lease_keeps_calling_until_another_collector_is_seen_holding_it() -> None:
    collector, told = make()
    collector.on_gain(LeaseToken("alpha", 1), continues=False)
    collector.on_loss(LeaseToken("alpha", 1), "redis unreachable")
    # its values may still be published if its term continues: keep them current
    assert (told.metered, told.active) == (True, False)
    collector.on_superseded("bravo:2")
    assert (told.metered, told.active) == (False, False)
