"""Binance spot market streams: BTCUSDT, ETHUSDT (and USDCUSDT for the USD correction).

Docs: https://developers.binance.com/docs/binance-spot-api-docs/web-socket-streams
One combined-stream connection ``{BINANCE_WS_URL}/stream?streams=btcusdt@bookTicker/...``; the
symbols are checked against ``GET /api/v3/exchangeInfo`` first (status TRADING) and hourly after,
because Binance accepts subscriptions to dead symbols and then sends nothing. Binance has had no
RUB market since 2024-01-30: no RUB symbol is ever requested. While the websocket fails (refused,
handshake timeout, or BINANCE_REST_FALLBACK_AFTER_FAILURES failures in a row without data) the same
quotes come over REST (`fallback()`: ticker/bookTicker polls, see sources/binance_rest.py) until
the websocket, probed with the normal backoff, delivers again. Trimmed sample frame
(tests/fixtures/binance/combined_book_ticker.json)::

    {"stream":"btcusdt@bookTicker","data":{"u":400900217,"s":"BTCUSDT",
     "b":"67000.10000000","B":"1.2","a":"67000.30000000","A":"0.8"}}

| variable | default | meaning |
|---|---|---|
| BINANCE_WS_URL | wss://stream.binance.com:9443 | websocket base URL (see HTTP 451 below) |
| BINANCE_REST_URL | https://api.binance.com | REST base URL (exchangeInfo, REST fallback) |
| BINANCE_STREAM | bookTicker | bookTicker (bid/ask mid), miniTicker, ticker, trade, aggTrade |
| BINANCE_USDC_CORRECTION | false | also stream USDCUSDT when it is TRADING |
| BINANCE_STALE_AFTER_S | 5 | no quote for this long: stale, reconnect; freshness limit |
| BINANCE_EXCHANGE_INFO_REFRESH_S | 3600 | how often symbol status is re-checked |
| BINANCE_PING_INTERVAL_S | 20 | client websocket ping period |
| BINANCE_PING_TIMEOUT_S | 20 | no pong within this: the socket is dead, reconnect |
| BINANCE_TIMEOUT_S | 10 | websocket opening handshake and REST request timeout |
| BINANCE_ROTATE_AFTER_S | 85800 | open a new connection before Binance's 24 h cut |
| BINANCE_MAX_FRAME_BYTES | 65536 | largest accepted websocket frame |
| BINANCE_REST_FALLBACK | true | poll REST while the websocket fails |
| BINANCE_REST_FALLBACK_AFTER_FAILURES | 2 | ws failures in a row before REST (refusal: at once) |
| BINANCE_REST_POLL_INTERVAL_S | 1 | REST fallback cadence (bookTicker, weight 4 per call) |
| BINANCE_REST_WEIGHT_FRACTION | 0.5 | share of the IP's weight/min limit (6000) REST may use |

None of these is secret. Where Binance refuses the location (HTTP 451), its market-data-only hosts
serve the same prices: BINANCE_WS_URL=wss://data-stream.binance.vision and
BINANCE_REST_URL=https://data-api.binance.vision. Bans (418), Retry-After (429), refusals and
firewall pages hold both transports at once (sources/gate.py).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal

import httpx
import orjson
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ratesvc.decimals import exact_mid
from ratesvc.domain import Quote, Transport
from ratesvc.errors import ParseError, RateLimited, Refused, SourceError
from ratesvc.sources import register
from ratesvc.sources.base import RotateRequested, Source, StreamSource
from ratesvc.sources.binance_rest import (
    SYMBOLS,
    BinanceRestPoller,
    binance_error,
    fetch_exchange_info,
    price,
)
from ratesvc.sources.gate import Gate

# event type -> the price field of that event (bookTicker has no "e" and is handled apart)
PRICE_FIELD: dict[str, str] = {
    "24hrMiniTicker": "c",
    "24hrTicker": "c",
    "trade": "p",
    "aggTrade": "p",
}
REFRESH_RETRY_S = 60.0


class BinanceOptions(BaseSettings):
    """Binance settings, env prefix ``BINANCE_`` (listed in the module docstring)."""

    model_config = SettingsConfigDict(env_prefix="BINANCE_", extra="ignore", frozen=True)

    ws_url: str = "wss://stream.binance.com:9443"
    rest_url: str = "https://api.binance.com"
    stream: Literal["bookTicker", "miniTicker", "ticker", "trade", "aggTrade"] = "bookTicker"
    usdc_correction: bool = False
    stale_after_s: float = Field(5.0, gt=0, le=3600)
    exchange_info_refresh_s: float = Field(3600.0, ge=60)
    ping_interval_s: float = Field(20.0, gt=0, le=600)
    ping_timeout_s: float = Field(20.0, gt=0, le=600)
    timeout_s: float = Field(10.0, gt=0, le=120)
    rotate_after_s: float = Field(85_800.0, ge=60, le=86_400)
    max_frame_bytes: int = Field(65_536, ge=1_024, le=16 << 20)
    rest_fallback: bool = True
    rest_fallback_after_failures: int = Field(2, ge=1, le=100)
    rest_poll_interval_s: float = Field(1.0, ge=0.1, le=60)
    rest_weight_fraction: float = Field(0.5, gt=0, le=1)

    @field_validator("ws_url")
    @classmethod
    def _ws_scheme(cls, value: str) -> str:
        if not value.startswith(("ws://", "wss://")):
            raise ValueError("must start with ws:// or wss://")
        return value.rstrip("/")

    @field_validator("rest_url")
    @classmethod
    def _http_scheme(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")


@register("binance")
class BinanceSource(StreamSource):
    """Binance spot quotes over one combined websocket stream, symbols vetted by exchangeInfo."""

    Options = BinanceOptions
    transport = Transport.WS

    def __init__(
        self,
        options: BinanceOptions,
        *,
        http_transport: httpx.AsyncBaseTransport | None = None,
        gate: Gate | None = None,
    ) -> None:
        super().__init__(
            stale_after_s=options.stale_after_s, gate=gate, http_transport=http_transport
        )
        self.options = options
        self.ping_interval_s = options.ping_interval_s
        self.ping_timeout_s = options.ping_timeout_s
        self.open_timeout_s = options.timeout_s
        self.max_frame_bytes = options.max_frame_bytes
        self.max_connection_age_s = options.rotate_after_s
        self.symbols: list[str] = []  # the TRADING subset of wanted_symbols(), once known
        self._refresh_at = 0.0  # monotonic time of the next exchangeInfo check
        self._refresh_task: asyncio.Task[None] | None = None
        self.fallback_after_failures = options.rest_fallback_after_failures
        # Binance limits and bans per IP: both transports share one gate
        self.rest = BinanceRestPoller(
            options, symbols=self.tradable_symbols, http_transport=http_transport, gate=self.gate
        )

    def fallback(self) -> Source | None:
        """REST polling of the same symbols while the websocket fails (BINANCE_REST_FALLBACK)."""
        return self.rest if self.options.rest_fallback else None

    def refused(self, error: BaseException) -> bool:
        """Refused, denied (HTTP status) or timed-out handshakes switch to REST at once."""
        return super().refused(error) or isinstance(error, TimeoutError)

    def error_for(self, status: int, headers: Any, body: bytes) -> SourceError:
        """Binance's error answers, websocket handshakes and exchangeInfo alike."""
        return binance_error(status, headers, body)

    def observe_response(self, status: int, headers: Any) -> None:
        """Every answer's used weight feeds the REST fallback's budget (exchangeInfo costs 20)."""
        self.rest.observe_weight(headers)

    @property
    def usdc_correction(self) -> bool:
        """Whether USDCUSDT is wanted for the USD correction (BINANCE_USDC_CORRECTION)."""
        return self.options.usdc_correction

    def wanted_symbols(self) -> list[str]:
        """The exchange symbols this source would like to stream."""
        return ["BTCUSDT", "ETHUSDT"] + (["USDCUSDT"] if self.options.usdc_correction else [])

    def url(self) -> str:
        """Combined-stream URL of the tradable symbols (stream names must be lowercase)."""
        streams = "/".join(f"{symbol.lower()}@{self.options.stream}" for symbol in self.symbols)
        return f"{self.options.ws_url}/stream?streams={streams}"

    async def tradable_symbols(self) -> list[str]:
        """The vetted symbol list, checking exchangeInfo first if it was never read."""
        if not self.symbols:
            await self.refresh_symbols()
        return self.symbols

    async def prepare(self) -> None:
        """Check symbol status before connecting when the last check is older than the refresh."""
        if not self.symbols or time.monotonic() >= self._refresh_at:
            await self.refresh_symbols()

    async def refresh_symbols(self) -> None:
        """Re-read exchangeInfo; keep the last good list (and retry soon) if that fails.

        Raises:
            SourceError: exchangeInfo failed and no list is known yet, or nothing is TRADING.
        """
        self._refresh_at = time.monotonic() + REFRESH_RETRY_S  # until this check succeeds
        try:
            statuses = await self._exchange_info()
        except (SourceError, httpx.HTTPError) as err:
            if self.symbols:
                self.log.warning(
                    "exchangeInfo failed, keeping {symbols}: {error}",
                    symbols=self.symbols,
                    error=err,
                )
                return
            if isinstance(err, RateLimited | Refused):
                raise  # keep the kind (a ban, a Retry-After, a refusal) for supervise
            raise SourceError(f"exchangeInfo failed: {err}") from err
        wanted = self.wanted_symbols()
        trading = [s for s in wanted if statuses.get(s) == "TRADING"]
        if skipped := {s: statuses.get(s, "unlisted") for s in wanted if s not in trading}:
            self.log.warning(
                "not streaming symbols that are not TRADING: {skipped}", skipped=skipped
            )
        if not trading:
            raise SourceError(f"no wanted symbol is TRADING: {skipped}")
        self.symbols = trading
        self._refresh_at = time.monotonic() + self.options.exchange_info_refresh_s

    async def rotation_due(self, opened_at: float) -> str | None:
        """Also rotate when the hourly exchangeInfo check (in the background) changed the list."""
        reason = await super().rotation_due(opened_at)
        task = self._refresh_task
        if task is not None and task.done():
            self._refresh_task = None
            error = "cancelled" if task.cancelled() else task.exception()
            if error is not None:
                self.log.warning("exchangeInfo refresh failed: {error}", error=error)
        elif task is None and time.monotonic() >= self._refresh_at:
            before = list(self.symbols)
            self._refresh_task = asyncio.create_task(self._background_refresh(before))
        return reason

    async def _background_refresh(self, before: list[str]) -> None:
        await self.refresh_symbols()
        if self.symbols != before:
            self.request_rotation(f"tradable symbols changed: {before} -> {self.symbols}")

    async def on_close(self) -> None:
        """Stop a background exchangeInfo refresh together with the connection."""
        if self._refresh_task is not None:
            self._refresh_task.cancel()
            await asyncio.gather(self._refresh_task, return_exceptions=True)
            self._refresh_task = None

    async def _exchange_info(self) -> dict[str, str]:
        """Status per wanted symbol; also adopts the live weight limit for the REST fallback."""
        async with self.http_client(
            base_url=self.options.rest_url, timeout=self.options.timeout_s
        ) as client:
            statuses, weight_limit = await fetch_exchange_info(client, self.wanted_symbols())
        if weight_limit is not None:
            self.rest.weight_limit_1m = weight_limit
        return statuses

    def parse(self, raw: str | bytes, *, received_ms: int) -> list[Quote]:
        """Quotes in one frame: combined or raw payloads; acks give []; junk raises ParseError."""
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError as err:
            raise ParseError("not JSON") from err
        if not isinstance(message, dict):
            raise ParseError("expected a JSON object")
        if "result" in message and "id" in message:
            return []  # reply to SUBSCRIBE / LIST_SUBSCRIPTIONS
        # error replies come wrapped, {"error":{"code":2,"msg":"..."},"id":3} (no id when the
        # request was not JSON); the docs' table shows only the inner object, also accepted
        error = message.get("error", message)
        if isinstance(error, dict) and "code" in error and "msg" in error:
            raise ParseError(f"error reply {error['code']}: {str(error['msg'])[:160]}")
        if "stream" in message and "data" in message:
            if message["stream"] == "!serverShutdown":
                raise RotateRequested("serverShutdown")
            message = message["data"]
        if not isinstance(message, dict):
            raise ParseError("expected an event object")
        return self._event(message, received_ms)

    def _event(self, event: dict[str, Any], received_ms: int) -> list[Quote]:
        kind = event.get("e")
        if kind == "serverShutdown":
            raise RotateRequested("serverShutdown")
        bid = ask = None
        if kind is None and {"u", "s", "b", "a"} <= event.keys():
            bid, ask = price(event, "b"), price(event, "a")  # the venue's text, kept exactly
            value = exact_mid(bid, ask)
        elif kind in PRICE_FIELD:
            value = price(event, PRICE_FIELD[kind])
        elif kind is None:
            raise ParseError("unknown message shape")
        else:
            return []  # a venue event we do not use
        raw_symbol = event.get("s")
        symbol = SYMBOLS.get(raw_symbol) if isinstance(raw_symbol, str) else None
        if symbol is None:
            raise ParseError(f"unexpected symbol {str(raw_symbol)[:40]!r}")
        ts_ms = event.get("E")
        ts_ms = ts_ms if isinstance(ts_ms, int) and not isinstance(ts_ms, bool) else received_ms
        return [Quote(self.name, symbol, value, ts_ms, Transport.WS, bid, ask)]
