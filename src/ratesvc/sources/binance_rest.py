"""Binance REST market data for BinanceSource: exchangeInfo and the websocket's REST fallback.

Docs: https://developers.binance.com/docs/binance-spot-api-docs/rest-api (market data endpoints,
LIMITS). Not a registered source: BinanceSource.fallback() returns a BinanceRestPoller, which
supervise() runs while the websocket fails. ``GET /api/v3/ticker/bookTicker?symbols=[...]
&symbolStatus=TRADING`` costs weight 4 and silently drops halted or delisted symbols, so no frozen
price is ever served. Sample body (one entry per symbol, prices as strings)::

    [{"symbol":"BTCUSDT","bidPrice":"67000.10000000","bidQty":"1.2",
      "askPrice":"67000.30000000","askQty":"0.8"}]

Error answers of both Binance transports are read here (`binance_error`): bodies are
``{"code":-1003,"msg":"..."}``; a 418 ban names its end in the message ("IP banned until
1700000000000", ms); a 451 (restricted location) is told with the market-data-only endpoints to
configure. Fixtures: tests/fixtures/binance/rest_*.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from ratesvc.decimals import exact_mid
from ratesvc.domain import Quote, Transport
from ratesvc.errors import Banned, ParseError, Restricted, SourceError
from ratesvc.sources.answers import RESTRICTED_HOLD_S, classify_answer, retry_after_s
from ratesvc.sources.gate import Gate
from ratesvc.sources.poll import Clock, PollSource, Sleep

if TYPE_CHECKING:
    from ratesvc.sources.binance import BinanceOptions

# exchange symbol -> normalised symbol; RUB symbols are deliberately absent (delisted 2024-01-30)
SYMBOLS: dict[str, str] = {"BTCUSDT": "BTC/USDT", "ETHUSDT": "ETH/USDT", "USDCUSDT": "USDC/USDT"}
INVALID_SYMBOL = -1121
WEIGHT_LIMIT_1M = 6000  # REQUEST_WEIGHT per minute per IP since 2023-08-25 (exchangeInfo has it)
BOOK_TICKER_WEIGHT = 4  # with symbols=[...]
USED_WEIGHT_HEADER = "x-mbx-used-weight-1m"
BANNED_UNTIL = re.compile(r"banned until (\d{10,16})")
# [BSD] faqs/market_data_only.md: hosts serving market data only, offered where api/stream refuse
MARKET_DATA_ONLY = (
    "BINANCE_WS_URL=wss://data-stream.binance.vision "
    "and BINANCE_REST_URL=https://data-api.binance.vision"
)


class BinanceRestPoller(PollSource):
    """Binance quotes (bid/ask mid) from ticker/bookTicker polls, under a request-weight budget.

    Polls every BINANCE_REST_POLL_INTERVAL_S, backs off on failures, honours Retry-After of 429
    and 418 (IP ban), and reads X-MBX-USED-WEIGHT-1M: when the next call would take the IP's use
    past BINANCE_REST_WEIGHT_FRACTION of the per-minute limit, it waits for the next minute.
    """

    name = "binance"
    max_backoff_s = 60.0

    def __init__(  # pylint: disable=too-many-arguments
        self,
        options: BinanceOptions,
        *,
        symbols: Callable[[], Awaitable[list[str]]],
        http_transport: httpx.AsyncBaseTransport | None = None,
        gate: Gate | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        wall_clock: Clock = time.time,
    ) -> None:
        super().__init__(
            # a slow cadence must not look stale between two polls
            stale_after_s=max(options.stale_after_s, 3 * options.rest_poll_interval_s),
            timeout_s=options.timeout_s,
            http_transport=http_transport,
            gate=gate,
            clock=clock,
            sleep=sleep,
        )
        self.options = options
        self.wall_clock = wall_clock
        self.weight_limit_1m = WEIGHT_LIMIT_1M
        self._symbols = symbols
        self._used_weight = 0  # the IP's use in `_used_minute`, per the last response
        self._used_minute = -1

    @property
    def weight_budget(self) -> float:
        """Request weight per minute this poller may take the IP's use up to."""
        return self.weight_limit_1m * self.options.rest_weight_fraction

    def poll_interval_s(self) -> float:
        """The configured cadence, slowed if needed to fit the weight budget on its own."""
        return max(self.options.rest_poll_interval_s, 60 * BOOK_TICKER_WEIGHT / self.weight_budget)

    def next_poll_at(self) -> float:
        """The cadence and back-off (PollSource), and room in this minute's weight budget."""
        return max(super().next_poll_at(), self.weight_free_at())

    def weight_free_at(self) -> float:
        """clock() time from which one more call fits the weight budget (-inf: now)."""
        now = self.wall_clock()
        minute = int(now // 60)
        if (
            minute != self._used_minute
            or self._used_weight + BOOK_TICKER_WEIGHT <= self.weight_budget
        ):
            return -math.inf
        # Binance counts weight per clock minute: the budget is free again when the minute ends
        return self.clock() + (minute + 1) * 60 - now

    async def request(self, client: httpx.AsyncClient) -> httpx.Response:
        """One bookTicker call for the tradable symbols (error answers raise binance_error)."""
        symbols = await self._symbols()
        return await client.get(
            f"{self.options.rest_url}/api/v3/ticker/bookTicker",
            params={"symbols": orjson.dumps(symbols).decode(), "symbolStatus": "TRADING"},
        )

    def error_for(self, status: int, headers: Any, body: bytes) -> SourceError:
        """Binance's error answers (see `binance_error`)."""
        return binance_error(status, headers, body)

    def observe_response(self, status: int, headers: Any) -> None:
        """Every answer, errors included, reports the IP's used weight."""
        self.observe_weight(headers)

    def observe_weight(self, headers: Any) -> None:
        """Adopt the IP's used weight from an answer's X-MBX-USED-WEIGHT-1M header."""
        try:
            used = int(headers.get(USED_WEIGHT_HEADER, ""))
        except ValueError:
            return
        self._used_weight, self._used_minute = used, int(self.wall_clock() // 60)
        if used + BOOK_TICKER_WEIGHT > self.weight_budget:
            self.log.warning(
                "REST weight budget reached ({used} of {budget:.0f}/min): waiting for next minute",
                used=used,
                budget=self.weight_budget,
            )

    def parse(self, raw: str | bytes, *, received_ms: int) -> list[Quote]:
        """Mid-price quotes with their bid/ask of one bookTicker answer ([] when none TRADING)."""
        try:
            entries = orjson.loads(raw)
        except orjson.JSONDecodeError as err:
            raise ParseError("not JSON") from err
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise ParseError("expected a JSON array of objects")
        quotes = []
        for entry in entries:
            symbol = SYMBOLS.get(str(entry.get("symbol")))
            if symbol is None:
                raise ParseError(f"unexpected symbol {str(entry.get('symbol'))[:40]!r}")
            bid, ask = price(entry, "bidPrice"), price(entry, "askPrice")
            quotes.append(
                Quote(self.name, symbol, exact_mid(bid, ask), received_ms, Transport.REST, bid, ask)
            )
        return quotes


async def fetch_exchange_info(
    client: httpx.AsyncClient, symbols: list[str]
) -> tuple[dict[str, str], int | None]:
    """Status per symbol (an unknown symbol is absent) and the REQUEST_WEIGHT/min limit if given.

    Raises:
        RateLimited, SourceError: the call failed.
    """
    try:
        response = await client.get(
            "/api/v3/exchangeInfo", params={"symbols": orjson.dumps(symbols).decode()}
        )
    except SourceError as err:
        if err.code != INVALID_SYMBOL:
            raise
        # one unknown symbol fails a whole batched call: ask one by one
        found: dict[str, str] = {}
        limit = None
        for symbol in symbols if len(symbols) > 1 else []:
            statuses, limit = await fetch_exchange_info(client, [symbol])
            found |= statuses
        return found, limit
    return parse_exchange_info(response.content)


def parse_exchange_info(raw: bytes) -> tuple[dict[str, str], int | None]:
    """Pure: status per symbol and the REQUEST_WEIGHT/min limit (if given) of an exchangeInfo body.

    Statuses are TRADING, END_OF_DAY, HALT, BREAK, CANCEL_ONLY ([BSD] enums.md); only TRADING has
    live prices. `permissions`/`permissionSets` and `filters` are not read.
    """
    try:
        body = orjson.loads(raw)
        statuses = {item["symbol"]: item["status"] for item in body["symbols"]}
    except (orjson.JSONDecodeError, KeyError, TypeError) as err:
        text = raw[:200].decode("utf-8", "replace")
        raise SourceError(f"unexpected exchangeInfo body: {text}") from err
    return statuses, _weight_limit(body.get("rateLimits"))


def _weight_limit(rate_limits: Any) -> int | None:
    for item in rate_limits if isinstance(rate_limits, list) else []:
        if isinstance(item, dict) and (
            item.get("rateLimitType"),
            item.get("interval"),
            item.get("intervalNum"),
        ) == ("REQUEST_WEIGHT", "MINUTE", 1):
            limit = item.get("limit")
            return limit if isinstance(limit, int) and limit > 0 else None
    return None


def price(event: dict[str, Any], key: str) -> Decimal:
    """A positive decimal from a Binance price string (never via float)."""
    value = event.get(key)
    if not isinstance(value, str):
        raise ParseError(f"field {key!r} missing or not a string")
    try:
        result = Decimal(value)
    except InvalidOperation as err:
        raise ParseError(f"field {key!r} is not a decimal: {value[:40]!r}") from err
    if not result.is_finite() or result <= 0:
        raise ParseError(f"field {key!r} is not a positive price: {value[:40]!r}")
    return result


def binance_error(status: int, headers: Any, body: bytes) -> SourceError:
    """Pure: the error a Binance error answer means (REST call or websocket handshake alike).

    418 is an IP ban: Banned until the end its message names (else Retry-After, else unknown);
    451 a refused location, told with the market-data-only endpoints; the rest as
    `classify_answer` (429 RateLimited with Retry-After, 403 page Blocked, 5xx Unavailable).
    """
    code, msg = _code_msg(body)
    if status == 418:
        return Banned(
            f"HTTP 418: {msg or 'IP banned'}",
            until_s=_ban_end_s(msg or ""),
            retry_after_s=retry_after_s(headers),
            status=status,
            code=code,
        )
    if status == 451:
        message = f"HTTP 451: {msg or 'restricted location'}"
        return Restricted(
            message,
            hold_s=RESTRICTED_HOLD_S,
            advice=f"Binance refuses this location ({message[:160]}). Its market-data-only "
            f"endpoints serve the same prices: set {MARKET_DATA_ONLY}. "
            f"Retrying every {RESTRICTED_HOLD_S:.0f}s meanwhile",
            status=status,
            code=code,
        )
    return classify_answer(status, headers, body, detail=msg, code=code)


def _ban_end_s(msg: str) -> float | None:
    """Epoch seconds from "banned until 1700000000000" (milliseconds; seconds accepted too)."""
    match = BANNED_UNTIL.search(msg)
    if match is None:
        return None
    until = int(match.group(1))
    return until / 1000 if until > 10**11 else float(until)


def _code_msg(body: bytes) -> tuple[int | None, str | None]:
    """``code`` and ``msg`` of a Binance error body, (None, None) when it is not one."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(parsed, dict):
        return None, None
    code, msg = parsed.get("code"), parsed.get("msg")
    return (
        code if isinstance(code, int) and not isinstance(code, bool) else None,
        msg if isinstance(msg, str) else None,
    )
