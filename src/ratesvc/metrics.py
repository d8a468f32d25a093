"""Every Prometheus object ratesvc exports (ratesvc_*), plus serving them from non-HTTP roles.

Labels stay low-cardinality: `source`/`exchanger` (2 values), `direction` (8, fixed), `state`.
API workers running several processes use prometheus_client's multiprocess mode when
PROMETHEUS_MULTIPROC_DIR is set (see api/app.py).
"""

from __future__ import annotations

from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Gauge, Histogram, start_http_server

# --- sources / collector
SOURCE_UP = Gauge("ratesvc_source_up", "1 while the source delivers data", ["source"])
SOURCE_LAST_TICK = Gauge(
    "ratesvc_source_last_tick_timestamp_seconds", "Receive time of the last quote", ["source"]
)
SOURCE_QUOTES = Counter("ratesvc_source_quotes_total", "Quotes parsed from a source", ["source"])
SOURCE_RECONNECTS = Counter(
    "ratesvc_source_reconnects_total", "Connection attempts after a failure", ["source"]
)
SOURCE_ERRORS = Counter(
    "ratesvc_source_errors_total", "Source failures by kind", ["source", "kind"]
)
SOURCE_SKIPPED_FRAMES = Counter(
    "ratesvc_source_skipped_frames_total", "Frames counted and skipped (junk, unknown)", ["source"]
)
SOURCE_STALE = Counter(
    "ratesvc_source_stale_total", "Watchdog firings: no data within the limit", ["source"]
)
SOURCE_BANNED_UNTIL = Gauge(
    "ratesvc_source_banned_until_timestamp_seconds",
    "End of the venue's IP ban (epoch s): no request goes to it before; 0 once it answers again",
    ["source"],
)
TICKS_PUBLISHED = Counter(
    "ratesvc_ticks_published_total", "Direction values published to the stream", ["exchanger"]
)
PUBLISH_ERRORS = Counter("ratesvc_publish_errors_total", "Failed publishes to Redis")
COLLECTOR_BUFFER = Gauge(
    "ratesvc_collector_buffer_events", "Events buffered in memory while Redis is unreachable"
)

# --- persister
PERSISTER_ROWS = Counter("ratesvc_persister_rows_total", "Rows inserted into Postgres")
PERSISTER_DUPLICATES = Counter(
    "ratesvc_persister_duplicates_total", "Redelivered ticks skipped by the unique key"
)
PERSISTER_BATCH_SECONDS = Histogram(
    "ratesvc_persister_batch_seconds",
    "Time to commit one batch",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
PERSISTER_CLAIMED = Counter(
    "ratesvc_persister_claimed_total", "Entries claimed from dead consumers"
)
PERSISTER_DEAD = Counter("ratesvc_persister_dead_letter_total", "Poison entries dead-lettered")
PERSISTER_ERRORS = Counter("ratesvc_persister_errors_total", "Failed batches (retried)")
PERSISTER_PRUNED = Counter("ratesvc_persister_pruned_rows_total", "Rows removed by retention")
STREAM_LENGTH = Gauge("ratesvc_stream_length", "Entries in ratesvc:ticks")
STREAM_PENDING = Gauge("ratesvc_stream_pending", "Entries pending in the persister group")
STREAM_MAX_LENGTH = Gauge(
    "ratesvc_stream_max_length", "The stream's hard cap (STREAM_MAXLEN): past it history is lost"
)
STREAM_TRIMMED = Counter(
    "ratesvc_stream_trimmed_entries_total", "Stored entries trimmed from ratesvc:ticks"
)
REDIS_USED_MEMORY = Gauge("ratesvc_redis_used_memory_bytes", "Redis INFO used_memory")
REDIS_MAXMEMORY = Gauge("ratesvc_redis_maxmemory_bytes", "Redis maxmemory (0: no limit)")

# --- API
API_SNAPSHOT_VERSION = Gauge("ratesvc_api_snapshot_version", "Version of the worker's snapshot")
API_SERVING = Gauge(
    "ratesvc_api_serving_exchanger", "1 for the exchanger the default choice serves", ["exchanger"]
)
API_FAILOVERS = Counter(
    "ratesvc_api_failovers_total",
    "Changes of the serving exchanger",
    ["from_exchanger", "to_exchanger"],
)
API_VALUE_AGE = Gauge(
    "ratesvc_api_value_age_seconds", "Age of the oldest leg per exchanger", ["exchanger"]
)
API_REDIS_UP = Gauge("ratesvc_api_redis_up", "1 while the worker follows the stream")


def serve(port: int, *, host: str) -> WSGIServer | None:
    """Expose /metrics on host:port for roles without an HTTP server (collector, persister).

    Port 0 disables it. The server runs in a daemon thread; it is returned for shutdown().
    """
    if not port:
        return None
    server, _thread = start_http_server(port, addr=host)
    return server


# --- sources: transports and call budgets (appended)
SOURCE_TRANSPORT = Gauge(
    "ratesvc_source_transport",
    "1 for the transport a source currently uses (ws, or rest while falling back)",
    ["source", "transport"],
)
COINGECKO_BUDGET_REMAINING = Gauge(
    "ratesvc_coingecko_budget_remaining_calls",
    "CoinGecko calls left in the current window (minute: sliding 60 s; month: calendar, UTC)",
    ["window"],
)
COINGECKO_CALLS = Counter(
    "ratesvc_coingecko_calls_total",
    "CoinGecko calls by outcome: HTTP status code, timeout or error (all count against budget)",
    ["status"],
)
COINGECKO_POLL_INTERVAL = Gauge(
    "ratesvc_coingecko_poll_interval_seconds", "Current CoinGecko cadence (after the budget)"
)


# --- collector lease (appended)
COLLECTOR_LEADER = Gauge(
    "ratesvc_collector_leader", "1 while this collector holds the lease and publishes"
)
COLLECTOR_LEASE_TERM = Gauge(
    "ratesvc_collector_lease_term", "Fencing term of the lease this collector last acquired"
)
COLLECTOR_TAKEOVERS = Counter(
    "ratesvc_collector_takeovers_total", "Times this collector acquired a new lease term"
)
COLLECTOR_FENCED_PUBLISHES = Counter(
    "ratesvc_collector_fenced_publishes_total",
    "Publishes Redis refused because the lease no longer held this collector's token",
)
COLLECTOR_LEASE_UNCONFIRMED = Counter(
    "ratesvc_collector_lease_unconfirmed_total",
    "Lease acquisitions the Redis replicas did not acknowledge in time (not published under)",
)


# --- API push: /v2/stream (sse) and /v2/ws (ws) (appended)
PUSH_SUBSCRIBERS = Gauge(
    "ratesvc_push_subscribers",
    "Live subscribers of /v2/stream (sse) and /v2/ws (ws), summed over the live workers",
    ["transport"],
    multiprocess_mode="livesum",
)
PUSH_EVENTS = Counter(
    "ratesvc_push_events_total", "Rate events written to subscribers", ["transport"]
)
PUSH_COALESCED = Counter(
    "ratesvc_push_coalesced_total",
    "States a subscriber never got as an event because a newer one replaced it (coalescing, "
    "slow client)",
    ["transport"],
)
PUSH_SLOW_CLOSES = Counter(
    "ratesvc_push_slow_closes_total",
    "Subscribers closed for taking no write for STREAM_SLOW_CLOSE_S",
    ["transport"],
)
# --- API history and point-in-time answers from Postgres (appended)
API_HISTORY_UNAVAILABLE = Counter(
    "ratesvc_api_history_unavailable_total",
    "History (/v2/history) or point-in-time (at=) requests answered 503: Postgres unreachable, "
    "failing or not configured",
    ["route"],
)
API_HISTORY_QUERY_SECONDS = Histogram(
    "ratesvc_api_history_query_seconds",
    "Postgres time of a history or point-in-time answer",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0),
)
