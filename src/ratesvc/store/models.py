"""Tortoise models only: the Postgres schema of rate history and source events.

Tables are created and changed ONLY by the aerich migrations in `aerich_migrations/`; after
editing a model, generate the next migration (see store/db.py). ORM objects never leave store/.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from tortoise import fields
from tortoise.fields.db_defaults import Now
from tortoise.indexes import Index
from tortoise.models import Model

# Redis stream ids are "<ms>-<seq>", two unsigned 64-bit numbers: at most 41 characters.
STREAM_ID_LENGTH = 48


class FixedCharField(fields.CharField):
    """CHAR(n): for keys that always have exactly n characters (hex digests)."""

    @property
    def SQL_TYPE(self) -> str:  # type: ignore[override]  # pylint: disable=invalid-name
        """The column type: CHAR instead of CharField's VARCHAR."""
        return f"CHAR({self.max_length})"


class ExactDecimalField(fields.Field[Decimal], Decimal):  # type: ignore[misc]
    """NUMERIC without precision or scale: a decimal stored exactly as given, never rounded."""

    SQL_TYPE = "NUMERIC"
    skip_to_python_if_native = True

    def to_python_value(self, value: Any) -> Decimal | None:
        """The stored decimal, as is (Tortoise's DecimalField would quantize it)."""
        return None if value is None else Decimal(value)


class RateRow(Model):
    """One published value of one direction from one exchanger (table ``rate_tick``).

    `tick_id` is the domain's idempotency key: a redelivered tick hits the unique index and is
    skipped by the repository's ``ON CONFLICT DO NOTHING``.
    """

    id = fields.BigIntField(primary_key=True)
    tick_id = FixedCharField(max_length=32, unique=True)
    exchanger = fields.CharField(max_length=32)
    direction = fields.CharField(max_length=32)
    # exact, as derived (a cross of two exchange decimals has more places than v1's 8 show)
    value = ExactDecimalField()
    bid = ExactDecimalField(null=True)  # the book behind the value; NULL where there is none
    ask = ExactDecimalField(null=True)
    ts_ms = fields.BigIntField()
    transport = fields.CharField(max_length=8)
    legs = fields.JSONField()  # [[source, symbol, "price", ts_ms, max_age_ms(, "bid", "ask")], ...]
    stream_id = fields.CharField(max_length=STREAM_ID_LENGTH)
    created_at = fields.DatetimeField(auto_now_add=True, db_default=Now())

    class Meta:
        """Table name and the one secondary index.

        (exchanger, direction, ts_ms) serves both the newest row per pair (a backward probe per
        pair) and retention (a ts_ms range per pair); a separate ts_ms index would tempt the
        planner into filtering scans for the latest row and cost every insert.
        """

        table = "rate_tick"
        table_description = "Rate history: one row per published tick (idempotent on tick_id)"
        indexes = (Index(fields=("exchanger", "direction", "ts_ms"), name="rate_tick_pair_ts_idx"),)


class SourceEventRow(Model):
    """One up/down/stale event of a source (table ``source_event``), unique per event id."""

    id = fields.BigIntField(primary_key=True)
    source = fields.CharField(max_length=32)
    state = fields.CharField(max_length=16)
    transport = fields.CharField(max_length=8)
    reason = fields.TextField()
    ts_ms = fields.BigIntField()
    stream_id = fields.CharField(max_length=STREAM_ID_LENGTH, unique=True)
    # SourceStatus.event_id: the same event published twice (a retried publish whose reply was
    # lost) is stored once. NULL only on rows stored before the column existed.
    event_id = FixedCharField(max_length=32, unique=True, null=True)
    created_at = fields.DatetimeField(auto_now_add=True, db_default=Now())

    class Meta:
        """Table name and the (source, ts_ms) index: latest per source, retention per source."""

        table = "source_event"
        table_description = "Source health history: up/down/stale events (idempotent on event_id)"
        indexes = (Index(fields=("source", "ts_ms"), name="source_event_source_ts_idx"),)


class CandleRow(Model):
    """One OHLC candle of one (exchanger, direction) over one bucket (table ``rate_candle``).

    Maintained by the persister in the transaction that inserts the ticks (store/candles.py), from
    the ticks actually inserted, for every interval of store.candles.INTERVALS_S. `open_ms` and
    `close_ms` are the times of the ticks behind `open` and `close`, so a late or out-of-order
    batch merges correctly: an earlier tick replaces the open, a later one the close.
    """

    id = fields.BigIntField(primary_key=True)
    exchanger = fields.CharField(max_length=32)
    direction = fields.CharField(max_length=32)
    interval_s = fields.IntField()  # 60, 300, 900, 3600 or 86400
    bucket_ms = fields.BigIntField()  # start of the bucket, epoch ms, aligned to the interval (UTC)
    open = ExactDecimalField()
    high = ExactDecimalField()
    low = ExactDecimalField()
    close = ExactDecimalField()
    ticks = fields.IntField()
    open_ms = fields.BigIntField()
    close_ms = fields.BigIntField()

    class Meta:
        """Table name; the unique key is also the index every history read walks."""

        table = "rate_candle"
        table_description = "OHLC rollups of rate_tick per interval, maintained by the persister"
        unique_together = (("exchanger", "direction", "interval_s", "bucket_ms"),)
