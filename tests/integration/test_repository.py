"""RateRepository on real Postgres: idempotent inserts, latest per pair, retention in batches."""

from __future__ import annotations

from decimal import Decimal

import pytest

from ratesvc.domain import Leg, RateTick, SourceState, SourceStatus, Transport
from ratesvc.store.db import open_db
from ratesvc.store.repository import RateRepository

pytestmark = pytest.mark.integration


def make_tick(
    value: str, ts_ms: int, *, exchanger: str = "binance", direction: str = "BTC-RUB"
) -> RateTick:
    """A cross-rate tick with two legs, like the collector derives for X-RUB."""
    legs = (
        Leg("binance", "BTC/USDT", Decimal("64000.12345678"), ts_ms, 10_000),
        Leg("coingecko", "USDT/RUB", Decimal("92.5"), ts_ms - 30_000, 900_000),
    )
    return RateTick(exchanger, direction, Decimal(value), ts_ms, legs, Transport.REST)


async def test_save_batch_counts_inserted_rows_and_skips_redeliveries(repo: RateRepository) -> None:
    """Redelivered ticks (same tick_id, any stream id) are never stored twice."""
    first, second, third = make_tick("1.5", 1_000), make_tick("1.6", 2_000), make_tick("1.7", 3_000)

    assert await repo.save_batch([("1-0", first), ("2-0", second)]) == 2
    # redelivery under new stream ids, a duplicate inside the batch, and one new tick
    assert await repo.save_batch([("5-0", first), ("6-0", third), ("7-0", third)]) == 1
    assert await repo.save_batch([("1-0", first), ("2-0", second)]) == 0
    assert await repo.save_batch([]) == 0
    assert await repo.count_ticks() == 3


async def test_save_events_is_idempotent_on_the_stream_id(repo: RateRepository) -> None:
    """A status event redelivered with its stream id is skipped; latest per source wins."""
    down = SourceStatus("binance", SourceState.DOWN, 1_000, Transport.WS, "socket closed")
    up = SourceStatus("binance", SourceState.UP, 2_000, Transport.REST)
    stale = SourceStatus("coingecko", SourceState.STALE, 1_500, reason="no data for 90s")

    assert await repo.save_events([("1-0", down), ("2-0", up), ("3-0", stale)]) == 3
    assert await repo.save_events([("2-0", up), ("1-0", down)]) == 0
    assert await repo.count_events() == 3
    assert await repo.latest_statuses() == [up, stale]


async def test_latest_ticks_returns_the_newest_per_pair_with_exact_values_and_legs(
    repo: RateRepository,
) -> None:
    """Newest row per (exchanger, direction), converted back to an identical RateTick."""
    newest_btc = make_tick("5960410.12345678", 3_000)
    newest_eth = make_tick("100", 2_500, direction="ETH-USD")
    newest_cg = make_tick("0.00000001", 1_000, exchanger="coingecko")
    older = [make_tick("5960000", 1_000), make_tick("5960001.5", 2_000)]
    items = [(f"{i}-0", t) for i, t in enumerate([*older, newest_btc, newest_eth, newest_cg])]
    await repo.save_batch(items)

    latest = await repo.latest_ticks()

    assert latest == [newest_btc, newest_eth, newest_cg]  # sorted by exchanger, direction
    for got, want in zip(latest, [newest_btc, newest_eth, newest_cg]):
        assert got.tick_id == want.tick_id
        assert str(got.value) == str(want.value)  # exact: no float, no trailing zeros
        assert got.legs == want.legs and got.transport is Transport.REST


async def test_values_and_books_come_back_exactly_as_written(repo: RateRepository) -> None:
    """More places than v1 shows, the book of the value and of its legs: nothing rounded."""
    legs = (
        Leg(
            "binance",
            "BTC/USDT",
            Decimal("65000.105"),
            3_000,
            10_000,
            Decimal("65000.10000000"),
            Decimal("65000.11000000"),
        ),
        Leg("coingecko", "USDT/RUB", Decimal("95.51234567890123456789012"), 2_000, 900_000),
    )
    value = Decimal("6208312.4979248765315424874284626")
    tick = RateTick(
        "binance",
        "BTC-RUB",
        value,
        3_000,
        legs,
        bid=Decimal("6208312.020363148137036314589012"),
        ask=Decimal("6208312.9754866049260486602679132"),
    )
    plain = make_tick("1.5", 1_000, exchanger="coingecko")
    await repo.save_batch([("1-0", tick), ("2-0", plain)])

    got, got_plain = await repo.latest_ticks()

    assert got == tick and str(got.value) == str(value)
    assert (str(got.bid), str(got.ask)) == (str(tick.bid), str(tick.ask))
    assert str(got.legs[0].bid) == "65000.10000000"  # the venue's text
    assert (got_plain.bid, got_plain.ask) == (None, None)


async def test_latest_of_an_empty_history_is_empty(repo: RateRepository, migrated_url: str) -> None:
    """No history: nothing to seed from (also through the connection of the open_db context)."""
    assert not await repo.latest_ticks()
    assert not await repo.latest_statuses()
    async with open_db(migrated_url):
        assert not await RateRepository().latest_ticks()


async def test_the_same_status_event_published_twice_is_stored_once(repo: RateRepository) -> None:
    """A publish retried after its reply was lost: two stream entries, one event, one row."""
    down = SourceStatus("binance", SourceState.DOWN, 1_000, Transport.WS, "socket closed")
    assert await repo.save_events([("1-0", down)]) == 1
    assert await repo.save_events([("1-5", down)]) == 0
    again = SourceStatus("binance", SourceState.DOWN, 1_001, Transport.WS, "socket closed")
    assert await repo.save_events([("2-0", again)]) == 1  # a later DOWN is another event
    assert await repo.count_events() == 2


async def test_prune_removes_only_old_rows_in_batches(repo: RateRepository) -> None:
    """Rows older than the cutoff go, several batches of `batch_rows`; the rest stay."""
    old = [(f"{i}-0", make_tick(f"1.{i}", 1_000 + i)) for i in range(10)]
    eth_old = [(f"{i}-1", make_tick(f"2.{i}", 1_000 + i, direction="ETH-RUB")) for i in range(4)]
    recent = [(f"{i}-2", make_tick(f"3.{i}", 50_000 + i)) for i in range(3)]
    eth_recent = [("9-3", make_tick("2.99", 60_000, direction="ETH-RUB"))]
    await repo.save_batch(old + eth_old + recent + eth_recent)
    await repo.save_events(
        [
            ("1-9", SourceStatus("binance", SourceState.DOWN, 1_000)),
            ("2-9", SourceStatus("binance", SourceState.UP, 60_000)),
        ]
    )

    removed = await repo.prune(10_000, batch_rows=3)

    assert removed == 10 + 4 + 1
    assert await repo.count_ticks() == 3 + 1
    assert await repo.count_events() == 1
    assert {t.value for t in await repo.latest_ticks()} == {Decimal("3.2"), Decimal("2.99")}
    assert await repo.prune(10_000, batch_rows=3) == 0


async def test_prune_keeps_the_newest_row_of_every_pair_however_old(repo: RateRepository) -> None:
    """A pair that stopped updating keeps its last value for the cold start (served stale)."""
    await repo.save_batch([(f"{i}-0", make_tick(f"1.{i}", 1_000 + i)) for i in range(5)])
    await repo.save_events([("1-0", SourceStatus("coingecko", SourceState.DOWN, 1_000))])

    assert await repo.prune(1_000_000, batch_rows=2) == 4

    assert [t.value for t in await repo.latest_ticks()] == [Decimal("1.4")]
    assert len(await repo.latest_statuses()) == 1


async def test_transaction_commits_ticks_and_events_together_or_not_at_all(
    repo: RateRepository,
) -> None:
    """An error inside `transaction()` rolls back everything saved in it."""
    tick, status = make_tick("7", 1_000), SourceStatus("binance", SourceState.UP, 1_000)

    with pytest.raises(RuntimeError):
        async with repo.transaction() as tx:
            await tx.save_batch([("1-0", tick)])
            await tx.save_events([("2-0", status)])
            raise RuntimeError("boom")
    assert await repo.count_ticks() == 0 and await repo.count_events() == 0

    async with repo.transaction() as tx:
        assert await tx.save_batch([("1-0", tick)]) == 1
        assert await tx.save_events([("2-0", status)]) == 1
    assert await repo.count_ticks() == 1 and await repo.count_events() == 1
