"""CoinGecko ``/simple/price``: BTC, ETH and USDT in USD and RUB, one batched call per poll.

Docs: https://docs.coingecko.com/reference/simple-price and
https://docs.coingecko.com/docs/errors-and-rate-limits. The demo plan has a monthly call quota and
a 60 s server cache (20 s on paid plans), so the source polls slowly while standby and faster only
while it is the serving exchanger (`set_active`). Also the default USDT/RUB leg of Binance's RUB
crosses. Sample body (tests/fixtures/coingecko/simple_price.json), numbers parsed as Decimal::

    {"bitcoin":{"usd":67187.3412,"rub":6150123.55,"last_updated_at":1711356300},
     "tether":{"usd":1.0003,"rub":91.52,"last_updated_at":1711356290}, ...}

| variable | default | meaning |
|---|---|---|
| COINGECKO_API_URL | https://api.coingecko.com/api/v3 | API root (pro-api.coingecko.com for paid) |
| COINGECKO_API_KEY | (unset) | **secret**, optional; sent as a header, never logged |
| COINGECKO_PLAN | auto | auto (pro header if the host is pro-api.*), demo or pro |
| COINGECKO_POLL_INTERVAL_S | 300 | standby cadence (demo: >= 260 s keeps 10k calls/month) |
| COINGECKO_ACTIVE_POLL_INTERVAL_S | 30 | cadence while CoinGecko is the serving exchanger |
| COINGECKO_TIMEOUT_S | 10 | per-request timeout |
| COINGECKO_STALE_AFTER_S | 900 | no quote for this long: stale; must exceed the standby cadence |
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, Literal, NoReturn

import httpx
from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ratesvc.domain import Quote, Transport
from ratesvc.errors import ParseError
from ratesvc.sources import register
from ratesvc.sources.base import PollSource, raise_for_status

COINS: dict[str, str] = {"bitcoin": "BTC", "ethereum": "ETH", "tether": "USDT", "usd-coin": "USDC"}
VS_CURRENCIES: dict[str, str] = {"usd": "USD", "rub": "RUB"}
REQUESTED_IDS = ("bitcoin", "ethereum", "tether")
PARAMS = {
    "ids": ",".join(REQUESTED_IDS),
    "vs_currencies": ",".join(VS_CURRENCIES),
    "include_last_updated_at": "true",
    "precision": "full",
}
WRONG_ROOT = {
    10010: "a pro key needs COINGECKO_API_URL=https://pro-api.coingecko.com/api/v3",
    10011: "a demo key needs COINGECKO_API_URL=https://api.coingecko.com/api/v3",
}


class CoinGeckoOptions(BaseSettings):
    """CoinGecko settings, env prefix ``COINGECKO_`` (listed in the module docstring)."""

    model_config = SettingsConfigDict(env_prefix="COINGECKO_", extra="ignore", frozen=True)

    api_url: str = "https://api.coingecko.com/api/v3"
    api_key: SecretStr | None = None
    plan: Literal["auto", "demo", "pro"] = "auto"
    poll_interval_s: float = Field(300.0, ge=1, le=86_400)
    active_poll_interval_s: float = Field(30.0, ge=1, le=86_400)
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


@register("coingecko")
class CoinGeckoSource(PollSource):
    """CoinGecko quotes from one batched simple/price poll; the cadence follows `set_active`."""

    Options = CoinGeckoOptions
    transport = Transport.REST

    def __init__(
        self, options: CoinGeckoOptions, *, http_transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        super().__init__(stale_after_s=options.stale_after_s, http_transport=http_transport)
        self.options = options
        self.timeout_s = options.timeout_s
        self.active = False

    def poll_interval_s(self) -> float:
        """Active cadence while serving, standby cadence otherwise."""
        return self.options.active_poll_interval_s if self.active else self.options.poll_interval_s

    def set_active(self, active: bool) -> None:
        """Switch cadence at once; a sleeping poll loop re-evaluates its wait immediately."""
        if active != self.active:
            self.active = active
            self.log.info("cadence now {interval_s:g}s", interval_s=self.poll_interval_s())
            self.wake()

    async def request(self, client: httpx.AsyncClient) -> httpx.Response:
        """One simple/price call; 429 -> RateLimited, other errors -> SourceError."""
        response = await client.get(
            f"{self.options.api_url}/simple/price",
            params=PARAMS,
            headers={"accept": "application/json", **self.options.key_header()},
        )
        if response.status_code >= 400:
            raise_for_status(response, venue_message=_explain(response))
        return response

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


def _explain(response: httpx.Response) -> str:
    """A clear one-line reason for an error response (never includes the key).

    CoinGecko error bodies look like ``{"status":{"error_code":10011,"error_message":"..."}}``
    or ``{"error":"..."}``.
    """
    try:
        body = response.json()
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    status = body.get("status") if isinstance(body.get("status"), dict) else {}
    code = status.get("error_code")
    text = str(status.get("error_message") or body.get("error") or response.text)[:160]
    if code in WRONG_ROOT:
        return f"{text} ({WRONG_ROOT[code]} or set COINGECKO_PLAN)"
    if response.status_code == 401:
        return f"{text} (check COINGECKO_API_KEY and COINGECKO_PLAN)"
    return text
