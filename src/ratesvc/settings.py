"""Settings: one validated object from the environment and `.env`, built once by the CLI.

Venue options (BINANCE_*, COINGECKO_*) live with their adapters (see sources/); this module holds
everything else. Outside this module, sources' options and store/aerich_env.py, nothing reads
os.environ.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ratesvc.domain import EXCHANGERS
from ratesvc.redis_url import check_redis_url

LogLevel = Literal["CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"]
DEFAULT_ENV_FILE = Path(".env")

S = TypeVar("S", bound=BaseSettings)


class SettingsError(Exception):
    """A setting failed validation; the message is one line naming the variable."""


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _exchanger_list(value: list[str]) -> list[str]:
    value = [v.lower() for v in value]
    unknown = [v for v in value if v not in EXCHANGERS]
    if unknown:
        raise ValueError(f"unknown exchanger(s) {unknown}; allowed: {', '.join(EXCHANGERS)}")
    if len(set(value)) != len(value):
        raise ValueError("exchangers must not repeat")
    return value


ExchangerList = Annotated[list[str], NoDecode, AfterValidator(_exchanger_list)]


def _address_list(value: list[str]) -> list[str]:
    # Checked here because uvicorn takes an entry it cannot parse as a literal that never matches.
    if "*" in value:
        if len(value) > 1:
            raise ValueError("* (trust every peer) cannot be combined with addresses")
        return value
    for entry in value:
        try:
            if "/" in entry:
                ipaddress.ip_network(entry)  # strict, as uvicorn parses it: no host bits
            else:
                ipaddress.ip_address(entry)
        except ValueError as err:
            raise ValueError(str(err)) from None
    return value


AddressList = Annotated[list[str], NoDecode, AfterValidator(_address_list)]


class Settings(BaseSettings):
    """Everything the roles need that is not venue-specific; env names = upper-case field names."""

    model_config = SettingsConfigDict(
        env_file=DEFAULT_ENV_FILE, env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    # --- infrastructure (unset = embedded servers under DATA_DIR, for `ratesvc run` and tests)
    # secrets: both may hold a password (SecretStr keeps it out of reprs; see reveal())
    redis_url: SecretStr | None = None
    database_url: SecretStr | None = None
    # with a redis+sentinel:// REDIS_URL: the sentinels' own password (their `requirepass`), when
    # they have one; the password inside REDIS_URL is the data nodes' (see connections.py)
    redis_sentinel_password: SecretStr | None = None
    data_dir: Path = Path(".ratesvc")
    log_level: LogLevel = "INFO"
    # interface of the collector's and persister's /metrics (compose: 0.0.0.0, for Prometheus)
    metrics_host: str = Field("127.0.0.1", min_length=1, pattern=r"^\S+$")

    # --- collector
    sources: ExchangerList = Field(default_factory=lambda: list(EXCHANGERS))
    publish_min_interval_ms: int = Field(250, ge=0, le=60_000)
    refresh_interval_s: float = Field(2.0, gt=0, le=60)
    fx_usdt_rub_source: Literal["coingecko"] = "coingecko"
    fx_stale_after_s: float = Field(900.0, gt=0)
    usdttrc_adjust_pct: float = Field(0.0, ge=-50, le=50)
    usdterc_adjust_pct: float = Field(0.0, ge=-50, le=50)
    backoff_initial_s: float = Field(1.0, gt=0, le=60)
    backoff_max_s: float = Field(60.0, gt=0, le=3600)
    # The stream's hard cap (about 240 bytes of Redis memory per entry): the persister trims what
    # it has stored, so the stream only grows this long while Postgres is away; past it the oldest
    # entries go, stored or not (docs/deployment.md, "Redis memory")
    stream_maxlen: int = Field(1_000_000, ge=1_000)
    # Stored entries younger than this stay in the stream (API workers following a little behind)
    stream_keep_s: float = Field(600.0, ge=0)
    stream_trim_interval_s: float = Field(5.0, gt=0, le=3600)
    collector_metrics_port: int = Field(9101, ge=0, le=65535)
    # hot standby: the collector holding the Redis lease publishes; unset id = <hostname>-<pid>
    collector_lease_ms: int = Field(3_000, ge=100, le=600_000)
    collector_id: str | None = Field(None, min_length=1, max_length=64, pattern=r"^\S+$")

    # --- persister
    # a stable name (e.g. per container) lets a restarted persister re-read its own pending entries
    # at once; unset = <hostname>-<pid>, and a dead name's entries are claimed after the idle time
    persister_consumer: str | None = Field(None, min_length=1, max_length=200)
    persister_batch_size: int = Field(500, ge=1, le=10_000)
    persister_block_ms: int = Field(1_000, ge=1, le=60_000)
    persister_claim_idle_ms: int = Field(30_000, ge=1_000)
    persister_max_deliveries: int = Field(5, ge=1)
    persister_metrics_port: int = Field(9102, ge=0, le=65535)
    retention_days: float = Field(30.0, gt=0)
    retention_batch_rows: int = Field(5_000, ge=1)
    retention_interval_s: float = Field(3_600.0, gt=0)
    # OHLC candles (rate_candle, /v2/history) outlive the raw ticks; pruned by the same loop
    candle_retention_days: float = Field(400.0, gt=0)

    # --- api
    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=1, le=65535)
    api_workers: int = Field(1, ge=1, le=64)
    # peers (the balancer) whose X-Forwarded-For / X-Forwarded-Proto the API believes: IP
    # addresses and CIDR networks, comma-separated; "*" trusts everyone (only behind a firewall)
    forwarded_allow_ips: AddressList = Field(default_factory=lambda: ["127.0.0.1", "::1"])
    # one INFO line per answer: method, target, status, client, request id
    api_access_log: bool = False
    exchanger_preference: ExchangerList = Field(default_factory=lambda: list(EXCHANGERS))
    failback_hold_down_s: float = Field(10.0, ge=0, le=3600)
    redis_stale_after_s: float = Field(10.0, gt=0)

    # --- api push (/v2/stream, /v2/ws)
    # at most one event per subscriber per interval; changes meanwhile coalesce (latest wins)
    stream_min_interval_ms: int = Field(250, ge=0, le=60_000)
    # SSE comment period: keeps the stream under proxies' idle timeouts (HAProxy's is 30 s)
    stream_heartbeat_s: float = Field(15.0, gt=0, le=3600)
    # WebSocket ping period (uvicorn's keepalive; no pong within the same time closes it)
    stream_ws_ping_s: float = Field(20.0, gt=0, le=3600)
    # a subscriber whose connection takes no write for this long is closed
    stream_slow_close_s: float = Field(30.0, gt=0, le=3600)

    @field_validator("database_url", mode="after")
    @classmethod
    def _postgres_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        raw = value.get_secret_value()
        if raw.startswith("postgresql://"):
            raw = "postgres://" + raw.removeprefix("postgresql://")
        if not raw.startswith("postgres://"):
            raise ValueError("must look like postgres://user:pass@host:port/db")
        return SecretStr(raw)

    @field_validator("redis_url", mode="after")
    @classmethod
    def _redis_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_redis_url(value.get_secret_value())
        return value

    @field_validator("sources", "exchanger_preference", "forwarded_allow_ips", mode="before")
    @classmethod
    def _csv(cls, value: Any) -> Any:
        return _split_csv(value)


def reveal(secret: SecretStr | None) -> str | None:
    """The value of a secret setting (REDIS_URL, DATABASE_URL, ...), for the code that connects."""
    return secret.get_secret_value() if secret is not None else None


def load(model: type[S], env_file: Path | None = DEFAULT_ENV_FILE, **overrides: Any) -> S:
    """Build and validate a settings model, turning the first error into one clear line."""
    try:
        return model(_env_file=env_file, **overrides)  # type: ignore[call-arg]
    except ValidationError as err:
        raise SettingsError(describe(err, model)) from None


def load_settings(env_file: Path | None = DEFAULT_ENV_FILE, **overrides: Any) -> Settings:
    """The core settings from the environment and `env_file` (None: environment only)."""
    return load(Settings, env_file, **overrides)


def describe(err: ValidationError, model: type[BaseSettings]) -> str:
    """One line naming the offending variable, e.g. ``LOG_LEVEL: Input should be ... (got 'x')``."""
    first = err.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else ""
    prefix = str(model.model_config.get("env_prefix", "") or "")
    name = (prefix + field).upper()
    message = first["msg"].removeprefix("Value error, ")
    got = first.get("input")
    shown = (
        ""
        if isinstance(got, dict) or name.endswith(("_URL", "_KEY", "_PASSWORD"))
        else f" (got {got!r})"
    )
    return f"invalid setting {name}: {message}{shown}"
