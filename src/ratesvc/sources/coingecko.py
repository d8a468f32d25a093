"""CoinGecko ``/simple/price``: BTC, ETH and USDT in USD and RUB, one batched call per poll.

Docs: https://docs.coingecko.com/reference/simple-price and
https://docs.coingecko.com/docs/errors-and-rate-limits. The demo plan has a monthly call quota and
a 60 s server cache (20 s on paid plans), so the source polls slowly while standby and faster only
while it is the serving exchanger (`set_active`), never faster than its call budget allows
(sources/budget.py: per-minute cap, monthly quota spread over the rest of the month with a reserve
for failover bursts; every call counts, failed ones too). 429/5xx/timeouts back off exponentially
from the cadence, honouring Retry-After. Also the default USDT/RUB leg of Binance's RUB crosses.
Sample body (tests/fixtures/coingecko/simple_price.json), numbers parsed as Decimal::

    {"bitcoin":{"usd":67187.3412,"rub":6150123.55,"last_updated_at":1711356300},
     "tether":{"usd":1.0003,"rub":91.52,"last_updated_at":1711356290}, ...}

| variable | default | meaning |
|---|---|---|
| COINGECKO_API_URL | https://api.coingecko.com/api/v3 | API root (pro-api.coingecko.com for paid) |
| COINGECKO_API_KEY | (unset) | **secret**, optional; sent as a header, never logged |
| COINGECKO_PLAN | auto | auto (pro header if the host is pro-api.*), demo or pro |
| COINGECKO_POLL_INTERVAL_S | 300 | standby cadence (slowed further by the budget) |
| COINGECKO_ACTIVE_POLL_INTERVAL_S | 30 | cadence while CoinGecko serves (if the budget has spare) |
| COINGECKO_CALLS_PER_MINUTE | 30 | plan's per-minute cap (never more calls in any 60 s) |
| COINGECKO_CALLS_PER_MONTH | 10000 | plan's monthly call credits (UTC calendar month) |
| COINGECKO_BUDGET_RESERVE | 0.1 | share of a month's calls standby never plans: failover bursts |
| COINGECKO_MAX_BACKOFF_S | 1800 | longest wait after failures in a row (from cadence, doubling) |
| COINGECKO_TIMEOUT_S | 10 | per-request timeout |
| COINGECKO_STALE_AFTER_S | 900 | no quote for this long: stale; must exceed the standby cadence |

Plan limits (CoinGecko pricing, as published; check your dashboard, the docs disagree): Demo 30/min
(the current docs say 100) and 10,000/month; Basic 250/min, 100,000/month; Analyst 500/min,
500,000/month; Lite 500/min, 2,000,000/month. Demo at the defaults: standby every 300 s spends
about 8,640 of 10,000 calls a month, leaving about 1,360 (11 h at 30 s) for failover bursts; once
they are spent, active polls at the standby cadence. The monthly count, the time of the last call
and the last answer are kept in the ledger given to `use_ledger()` (in memory unless the collector
wires the shared one). Metered calls are spent once per deployment: only the collector holding the
lease calls (`set_metered`); a standby reads its answers from the ledger at the standby cadence
and, on taking over, calls when the deployment's cadence is due from the last call.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from decimal import Decimal
from typing import Any, Literal, NoReturn

import httpx
from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ratesvc.domain import Answer, Quote, Transport
from ratesvc.errors import Misconfigured, ParseError, SourceError
from ratesvc.metrics import COINGECKO_BUDGET_REMAINING, COINGECKO_CALLS, COINGECKO_POLL_INTERVAL
from ratesvc.sources import register
from ratesvc.sources.answers import classify_answer, describe_body
from ratesvc.sources.base import Frame
from ratesvc.sources.budget import MINUTE_S, BudgetLimits, CallBudget, CallLedger
from ratesvc.sources.gate import Gate
from ratesvc.sources.poll import Clock, PollSource, Sleep

COINS: dict[str, str] = {"bitcoin": "BTC", "ethereum": "ETH", "tether": "USDT", "usd-coin": "USDC"}
VS_CURRENCIES: dict[str, str] = {"usd": "USD", "rub": "RUB"}
REQUESTED_IDS = ("bitcoin", "ethereum", "tether")
PARAMS = {
    "ids": ",".join(REQUESTED_IDS),
    "vs_currencies": ",".join(VS_CURRENCIES),
    "include_last_updated_at": "true",
    "precision": "full",
}
DEMO_ROOT = "https://api.coingecko.com/api/v3"
PRO_ROOT = "https://pro-api.coingecko.com/api/v3"
# error_code -> the fix ([CGD] errors-and-rate-limits: 10010 pro key on the demo root, 10011 demo
# key on the pro root); COINGECKO_PLAN=auto sends the header that fits the root
WRONG_ROOT = {
    10010: f"a Pro API key goes to {PRO_ROOT} in the x-cg-pro-api-key header: "
    f"set COINGECKO_API_URL={PRO_ROOT} (and COINGECKO_PLAN=auto or pro)",
    10011: f"a Demo API key goes to {DEMO_ROOT} in the x-cg-demo-api-key header: "
    f"set COINGECKO_API_URL={DEMO_ROOT} (and COINGECKO_PLAN=auto or demo)",
}


class CoinGeckoOptions(BaseSettings):
    """CoinGecko settings, env prefix ``COINGECKO_`` (listed in the module docstring)."""

    model_config = SettingsConfigDict(env_prefix="COINGECKO_", extra="ignore", frozen=True)

    api_url: str = "https://api.coingecko.com/api/v3"
    api_key: SecretStr | None = None
    plan: Literal["auto", "demo", "pro"] = "auto"
    poll_interval_s: float = Field(300.0, ge=1, le=86_400)
    active_poll_interval_s: float = Field(30.0, ge=1, le=86_400)
    calls_per_minute: int = Field(30, ge=1, le=10_000)
    calls_per_month: int = Field(10_000, ge=1)
    budget_reserve: float = Field(0.1, ge=0, le=0.9)
    max_backoff_s: float = Field(1800.0, ge=1, le=86_400)
    timeout_s: float = Field(10.0, gt=0, le=120)
    stale_after_s: float = Field(900.0, gt=0)

    @field_validator("api_url")
    @classmethod
    def _http_scheme(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("api_key", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("stale_after_s")
    @classmethod
    def _longer_than_cadence(cls, value: float, info: ValidationInfo) -> float:
        cadence = info.data.get("poll_interval_s")
        if cadence is not None and value <= cadence:
            raise ValueError(f"must exceed COINGECKO_POLL_INTERVAL_S ({cadence:g})")
        return value

    def key_header(self) -> dict[str, str]:
        """The API-key header for the plan, or nothing when no key is set."""
        if self.api_key is None:
            return {}
        plan = self.plan
        if plan == "auto":
            plan = "pro" if httpx.URL(self.api_url).host.startswith("pro-api.") else "demo"
        return {f"x-cg-{plan}-api-key": self.api_key.get_secret_value()}


# The longest calendar month: a cadence that fits it fits every month.
WORST_MONTH_S = 31 * 86_400
# CoinGecko refreshes simple/price every 60 s on the Demo plan (20 s paid): a fetched price is up
# to this old already, so a leg fetched every N s is up to N + 60 s old before the next fetch.
DATA_REFRESH_S = 60.0


def budget_refusal(options: CoinGeckoOptions, *, fx_stale_after_s: float | None) -> str | None:
    """Why the quota cannot keep CoinGecko's values and the FX leg fresh with these settings.

    Refused (one line naming the variable), else None:
    - a 31-day month of standby polling does not fit the quota less the failover reserve
      (``31 d / COINGECKO_POLL_INTERVAL_S > COINGECKO_CALLS_PER_MONTH x (1 -
      COINGECKO_BUDGET_RESERVE)``): the budget would have to stretch the cadence, silently;
    - the active cadence is slower than the standby one;
    - `fx_stale_after_s` (FX_STALE_AFTER_S, when CoinGecko is the FX leg of Binance's RUB
      crosses): the standby cadence plus CoinGecko's data refresh reaches it, so the leg goes
      stale between two polls while CoinGecko answers.
    """
    standby_s = max(options.poll_interval_s, MINUTE_S / options.calls_per_minute)
    plannable = int(options.calls_per_month * (1 - options.budget_reserve))
    needed = math.ceil(WORST_MONTH_S / options.poll_interval_s)
    quota_s = math.ceil(WORST_MONTH_S / plannable)  # the fastest standby the quota affords
    if fx_stale_after_s is not None and quota_s + DATA_REFRESH_S >= fx_stale_after_s:
        fresh_s = fx_stale_after_s - DATA_REFRESH_S - 1
        least = math.ceil(WORST_MONTH_S / fresh_s / (1 - options.budget_reserve))
        return (
            f"invalid setting COINGECKO_CALLS_PER_MONTH: {options.calls_per_month} calls less the "
            f"failover reserve (COINGECKO_BUDGET_RESERVE={options.budget_reserve:g}) afford a "
            f"standby poll only every {quota_s} s in a 31-day month, too slow to keep the USDT/RUB "
            f"leg fresh (FX_STALE_AFTER_S={fx_stale_after_s:g} less CoinGecko's "
            f"{DATA_REFRESH_S:g} s data refresh): at least {least} are needed"
        )
    if needed > plannable:
        return (
            f"invalid setting COINGECKO_POLL_INTERVAL_S: standby polling every "
            f"{options.poll_interval_s:g} s spends {needed:,} calls in a 31-day month, more than "
            f"the {plannable:,} that COINGECKO_CALLS_PER_MONTH={options.calls_per_month} leaves "
            f"after the failover reserve (COINGECKO_BUDGET_RESERVE={options.budget_reserve:g}): "
            f"set it to at least {quota_s} s, or raise "
            "COINGECKO_CALLS_PER_MONTH"
        )
    if options.active_poll_interval_s > options.poll_interval_s:
        return (
            "invalid setting COINGECKO_ACTIVE_POLL_INTERVAL_S: must not exceed "
            f"COINGECKO_POLL_INTERVAL_S ({options.poll_interval_s:g}) (got "
            f"{options.active_poll_interval_s:g})"
        )
    if fx_stale_after_s is not None and standby_s + DATA_REFRESH_S >= fx_stale_after_s:
        return (
            f"invalid setting FX_STALE_AFTER_S: the USDT/RUB leg is fetched every "
            f"{standby_s:g} s (COINGECKO_POLL_INTERVAL_S) and is up to {DATA_REFRESH_S:g} s old "
            f"when fetched (CoinGecko's data refresh), so it would go stale between two polls: "
            f"set FX_STALE_AFTER_S above {standby_s + DATA_REFRESH_S:g} or "
            f"COINGECKO_POLL_INTERVAL_S below {fx_stale_after_s - DATA_REFRESH_S:g} "
            f"(got {fx_stale_after_s:g})"
        )
    return None


@register("coingecko")
class CoinGeckoSource(PollSource):
    """CoinGecko quotes from one batched simple/price poll; the cadence follows `set_active`."""

    Options = CoinGeckoOptions
    transport = Transport.REST

    def __init__(  # pylint: disable=too-many-arguments
        self,
        options: CoinGeckoOptions,
        *,
        http_transport: httpx.AsyncBaseTransport | None = None,
        ledger: CallLedger | None = None,
        gate: Gate | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        wall_clock: Clock = time.time,
    ) -> None:
        self.options = options
        super().__init__(
            stale_after_s=options.stale_after_s,
            timeout_s=options.timeout_s,
            http_transport=http_transport,
            gate=gate,
            clock=clock,
            sleep=sleep,
        )
        self.max_backoff_s = options.max_backoff_s
        limits = BudgetLimits(
            options.calls_per_minute, options.calls_per_month, options.budget_reserve
        )
        self.budget = CallBudget(
            self.name, limits, ledger=ledger, clock=clock, wall_clock=wall_clock
        )
        self.active = False
        # Metered calls are spent once per deployment: only the collector holding the lease calls
        # (set_metered); the others read its answers from the ledger at the standby cadence.
        self.metered = True
        self._adopt = False  # just became metered: take up the deployment's schedule first
        self._followed_at: float | None = None  # clock() of the last read of the shared answer
        self._seen_ms: int | None = None  # received_ms of the newest answer yielded
        self.wall_clock = wall_clock

    def use_ledger(self, ledger: CallLedger) -> None:
        """Count monthly calls in `ledger` (shared, persistent) instead of process memory."""
        self.budget.use_ledger(ledger)

    def poll_interval_s(self) -> float:
        """Active cadence while serving, standby otherwise; either slowed by the call budget."""
        interval_s = self.budget.interval_s(
            standby_s=self.options.poll_interval_s,
            active_s=self.options.active_poll_interval_s,
            active=self.active,
        )
        COINGECKO_POLL_INTERVAL.set(interval_s)
        self._budget_metrics()
        return interval_s

    def next_poll_at(self) -> float:
        """The cadence and back-off (PollSource), and room in the per-minute cap.

        Standing by: the next read of the shared answer, at the cadence. Just made metered: at
        once, to read the deployment's schedule (`next_frame`).
        """
        if not self.metered:
            if self._followed_at is None:
                return -math.inf
            return self._followed_at + self.poll_interval_s()
        if self._adopt:
            return -math.inf
        return max(super().next_poll_at(), self.budget.minute_free_at())

    def set_metered(self, metered: bool) -> None:
        """Spend calls (this collector leads) or only read the caller's answers (standby)."""
        if metered != self.metered:
            self.metered = metered
            self._adopt = metered
            self.log.info(
                "{what}",
                what=(
                    "calling: this collector spends the deployment's calls"
                    if metered
                    else "standing by: reading the leading collector's answers, no call"
                ),
            )
            self.wake()

    async def next_frame(self, client: httpx.AsyncClient) -> Frame | None:
        """A call's body while metered, else the leader's latest answer when it is new to us.

        On taking over it first reads the leader's last answer and the time of the
        deployment's last call, and calls only when the cadence is due from that call: a
        takeover adds no call, and the next one comes within one cadence.
        """
        if not self.metered:
            self._followed_at = self.clock()
            return await self._follow()
        if self._adopt:
            self._adopt = False
            frame = await self._follow()
            age_s = await self.budget.last_call_age_s()
            if age_s is not None:
                called_at = self.clock() - age_s
                if self.last_poll_at is None or called_at > self.last_poll_at:
                    self.last_poll_at = called_at
            if frame is not None or self.next_poll_at() > self.clock():
                return frame  # the poll loop waits until the deployment's next call is due
        response = await self._poll(client)
        received_ms = int(self.wall_clock() * 1000)
        self._seen_ms = received_ms
        await self.budget.share(Answer(response.text, received_ms))
        return Frame(response.content, received_ms)

    async def _follow(self) -> Frame | None:
        answer = await self.budget.shared()
        if answer is None or (self._seen_ms is not None and answer.received_ms <= self._seen_ms):
            return None
        self._seen_ms = answer.received_ms
        return Frame(answer.body, answer.received_ms)

    def set_active(self, active: bool) -> None:
        """Switch cadence at once; a waiting poll loop or retry re-evaluates immediately."""
        if active != self.active:
            self.active = active
            self.log.info("cadence now {interval_s:g}s", interval_s=self.poll_interval_s())
            self.wake()

    async def request(self, client: httpx.AsyncClient) -> httpx.Response:
        """One simple/price call, counted first (error answers raise `error_for()`)."""
        await self.budget.spend()
        self._budget_metrics()
        try:
            return await client.get(
                f"{self.options.api_url}/simple/price",
                params=PARAMS,
                headers={"accept": "application/json", **self.options.key_header()},
            )
        except httpx.HTTPError as err:
            status = "timeout" if isinstance(err, httpx.TimeoutException) else "error"
            COINGECKO_CALLS.labels(status=status).inc()
            raise

    def observe_response(self, status: int, headers: Any) -> None:
        """Count every answer by status (errors too: they count against the budget)."""
        COINGECKO_CALLS.labels(status=str(status)).inc()

    def error_for(self, status: int, headers: Any, body: bytes) -> SourceError:
        """A clear error for a CoinGecko error answer (never includes the key).

        Bodies come as ``{"status":{"error_code":10011,"error_message":"..."}}``, flat as
        ``{"error_code":10010,"status":{"error_message":"...","timestamp":"..."}}`` or as
        ``{"error":"..."}`` (tests/fixtures/coingecko/error_*.json).
        """
        code, text = _code_message(body)
        text = text or describe_body(headers, body)
        if code in WRONG_ROOT:
            sent = ", ".join(self.options.key_header()) or "no key header"
            host = httpx.URL(self.options.api_url).host
            return Misconfigured(
                f"HTTP {status}: CoinGecko error {code}: {text[:160]}; {WRONG_ROOT[code]} "
                f"(sent: {sent} to {host})",
                status=status,
                code=code,
            )
        if status == 401:
            return Misconfigured(
                f"HTTP 401: {text[:160]} (check COINGECKO_API_KEY and COINGECKO_PLAN)",
                status=status,
                code=code,
            )
        return classify_answer(status, headers, body, detail=text[:160], code=code)

    def _budget_metrics(self) -> None:
        COINGECKO_BUDGET_REMAINING.labels(window="minute").set(self.budget.remaining_minute())
        COINGECKO_BUDGET_REMAINING.labels(window="month").set(self.budget.remaining_month())

    def parse(self, raw: str | bytes, *, received_ms: int) -> list[Quote]:
        """Quotes per known coin and currency; missing or null prices are left out."""
        try:
            body = json.loads(raw, parse_float=Decimal, parse_int=Decimal, parse_constant=_reject)
        except ValueError as err:
            raise ParseError(f"not JSON: {err}") from err
        if not isinstance(body, dict):
            raise ParseError("expected a JSON object")
        quotes = [
            quote
            for coin_id, base in COINS.items()
            if isinstance(body.get(coin_id), dict)
            for quote in self._coin(body[coin_id], base, received_ms)
        ]
        if not quotes:
            raise ParseError("no known prices in response")
        return quotes

    def _coin(self, prices: dict[str, Any], base: str, received_ms: int) -> list[Quote]:
        updated = prices.get("last_updated_at")
        ts_ms = int(updated * 1000) if isinstance(updated, Decimal) and updated > 0 else received_ms
        quotes = []
        for vs, quote_ccy in VS_CURRENCIES.items():
            price = prices.get(vs)
            if price is None:
                continue
            if not isinstance(price, Decimal) or not price.is_finite() or price <= 0:
                raise ParseError(
                    f"{base}/{quote_ccy} is not a positive number: {str(price)[:40]!r}"
                )
            quotes.append(Quote(self.name, f"{base}/{quote_ccy}", price, ts_ms, Transport.REST))
        return quotes


def _reject(constant: str) -> NoReturn:
    raise ValueError(f"{constant} is not a price")


def _code_message(body: bytes) -> tuple[int | None, str]:
    """error_code (top level or under "status") and message of a CoinGecko error body."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return None, ""
    if not isinstance(parsed, dict):
        return None, ""
    status = parsed.get("status") if isinstance(parsed.get("status"), dict) else {}
    code = parsed.get("error_code", status.get("error_code"))
    text = status.get("error_message") or parsed.get("error_message") or parsed.get("error")
    code = code if isinstance(code, int) and not isinstance(code, bool) else None
    return code, str(text or "")
