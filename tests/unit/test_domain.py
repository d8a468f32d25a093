"""Domain codecs: ticks and status events survive the stream/hash round trip exactly."""

from decimal import Decimal

import pytest

from ratesvc.domain import (
    Leg,
    RateTick,
    SourceState,
    SourceStatus,
    Transport,
    event_from_fields,
    quantize,
)


def tick(value: str = "6207509.55", ts_ms: int = 1_700_000_000_000) -> RateTick:
    legs = (
        Leg("binance", "BTC/USDT", Decimal("65000.1"), ts_ms, 10_000),
        Leg("coingecko", "USDT/RUB", Decimal("95.5"), ts_ms - 60_000, 900_000),
    )
    return RateTick("binance", "BTC-RUB", Decimal(value), ts_ms, legs)


def test_tick_round_trips_through_stream_fields_exactly():
    original = tick()
    fields = original.to_fields()
    assert all(isinstance(v, str) for v in fields.values())
    decoded = event_from_fields({k.encode(): v.encode() for k, v in fields.items()})
    assert decoded == original
    assert decoded.tick_id == original.tick_id
    assert decoded.legs[1].price == Decimal("95.5")


def test_tick_id_is_deterministic_and_changes_with_value_or_time():
    assert tick().tick_id == tick().tick_id
    assert tick().tick_id != tick(value="1").tick_id
    assert tick().tick_id != tick(ts_ms=1).tick_id


def test_status_round_trips():
    status = SourceStatus("binance", SourceState.DOWN, 5, Transport.WS, "connection closed")
    assert event_from_fields(status.to_fields()) == status


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"kind": "nope"},
        {"kind": "tick", "exchanger": "binance"},
        {"kind": "status", "state": "x"},
    ],
)
def test_junk_entries_raise_a_decode_error(fields):
    with pytest.raises((KeyError, ValueError)):
        event_from_fields(fields)


def test_stale_at_is_the_first_leg_to_expire():
    t = tick()
    assert t.stale_at_ms() == min(t.ts_ms + 10_000, t.ts_ms - 60_000 + 900_000) + 1
    assert not t.is_stale(t.stale_at_ms() - 1) and t.is_stale(t.stale_at_ms())


@pytest.mark.parametrize(
    "raw,expected",
    [("100.000", "100"), ("54000.0001234567", "54000.00012346"), ("1E+2", "100"), ("0.1", "0.1")],
)
def test_quantize_never_uses_exponents(raw, expected):
    assert str(quantize(Decimal(raw))) == expected


def booked() -> RateTick:
    legs = (
        Leg(
            "binance",
            "BTC/USDT",
            Decimal("65000.105"),
            1_000,
            10_000,
            Decimal("65000.10000000"),
            Decimal("65000.11000000"),
        ),
        Leg("coingecko", "USDT/RUB", Decimal("95.5"), 500, 900_000),
    )
    return RateTick(
        "binance",
        "BTC-RUB",
        Decimal("6207510.0275"),
        1_000,
        legs,
        bid=Decimal("6207509.55"),
        ask=Decimal("6207510.505"),
    )


def test_bid_ask_and_leg_books_round_trip_with_their_exact_text():
    decoded = event_from_fields(booked().to_fields())
    assert decoded == booked()
    assert str(decoded.legs[0].bid) == "65000.10000000"  # the venue's text, trailing zeros kept
    assert (decoded.legs[1].bid, decoded.legs[1].ask) == (None, None)


def test_entries_written_before_books_were_kept_still_decode():
    old = {
        "kind": "tick",
        "id": "x" * 32,
        "exchanger": "binance",
        "direction": "BTC-RUB",
        "value": "6207509.55",
        "ts_ms": "1000",
        "transport": "ws",
        "legs": '[["binance","BTC/USDT","65000.1",1000,10000],'
        '["coingecko","USDT/RUB","95.5",500,900000]]',
    }
    decoded = event_from_fields(old)
    assert (decoded.bid, decoded.ask, decoded.since_ms) == (None, None, 0)
    assert all(leg.bid is None and leg.ask is None for leg in decoded.legs)
    assert decoded.value == Decimal("6207509.55")


def test_a_leg_with_a_book_keeps_the_five_item_layout_older_readers_know():
    raw = booked().legs[0].to_json()
    assert raw[:5] == ["binance", "BTC/USDT", "65000.105", 1_000, 10_000]
    assert raw[5:] == ["65000.10000000", "65000.11000000"]
    assert booked().legs[1].to_json() == ["coingecko", "USDT/RUB", "95.5", 500, 900_000]
