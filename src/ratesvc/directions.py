"""How each exchanger's eight directions are derived from raw quotes (pure; no I/O).

| direction      | binance                                            | coingecko             |
|----------------|----------------------------------------------------|-----------------------|
| BTC-USD        | BTC/USDT mid (USDT is Binance's USD) [/ USDC/USDT]  | bitcoin.usd           |
| ETH-USD        | ETH/USDT mid [/ USDC/USDT]                         | ethereum.usd          |
| BTC-RUB        | BTC/USDT mid x USDT/RUB (FX leg)                   | bitcoin.rub           |
| ETH-RUB        | ETH/USDT mid x USDT/RUB (FX leg)                   | ethereum.rub          |
| USDTTRC-USD    | 1, confirmed by the live feed [1 / USDC/USDT]      | tether.usd            |
| USDTERC-USD    | same as USDTTRC-USD                                | tether.usd            |
| USDTTRC-RUB    | USDT/RUB (FX leg), confirmed by the live feed      | tether.rub            |
| USDTERC-RUB    | same as USDTTRC-RUB                                | tether.rub            |

Binance has had no RUB market since 2024-01-30, so every Binance X-RUB value is a cross through the
configured FX leg (default CoinGecko tether->rub). The bracketed USDC/USDT correction applies only
when enabled and that market trades. USDTTRC and USDTERC carry the same USDT price, each optionally
adjusted by a configured percentage. Every value keeps its legs; it is stale when any leg is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from ratesvc.domain import Leg, Quote, RateTick, Transport, quantize

ONE = Decimal(1)
COINS = ("BTC", "ETH")
USDT_DIRECTIONS = ("USDTTRC", "USDTERC")

# CoinGecko quotes are normalised to these symbols by its adapter.
_COINGECKO_SYMBOL = {"BTC": "BTC/USD", "ETH": "ETH/USD", "USDT": "USDT/USD"}


@dataclass(frozen=True, slots=True)
class DerivationConfig:
    """What the derivation needs to know: leg freshness limits, FX source, adjustments."""

    max_age_ms: Mapping[str, int]  # per source: how old its quotes may be before they are stale
    fx_source: str = "coingecko"
    fx_max_age_ms: int = 900_000
    usdc_correction: bool = False
    adjust_pct: Mapping[str, Decimal] = field(default_factory=dict)  # "USDTTRC" -> Decimal("0.5")


QuoteTable = Mapping[tuple[str, str], Quote]  # (source, symbol) -> latest quote


def derive_all(quotes: QuoteTable, config: DerivationConfig) -> list[RateTick]:
    """Every direction value that the current quotes allow, for every exchanger."""
    return derive_binance(quotes, config) + derive_coingecko(quotes, config)


def _leg(quote: Quote, max_age_ms: int) -> Leg:
    return Leg(quote.source, quote.symbol, quote.price, quote.ts_ms, max_age_ms)


def _tick(
    exchanger: str, direction: str, value: Decimal, legs: tuple[Leg, ...], rest: bool
) -> RateTick:
    return RateTick(
        exchanger=exchanger,
        direction=direction,
        value=quantize(value),
        ts_ms=max(leg.ts_ms for leg in legs),
        legs=legs,
        transport=Transport.REST if rest else Transport.WS,
    )


def _adjusted(config: DerivationConfig, network: str, value: Decimal) -> Decimal:
    pct = config.adjust_pct.get(network)
    return value * (ONE + pct / 100) if pct else value


@dataclass(frozen=True, slots=True)
class _UsdBasis:
    """How Binance's USDT maps to USD: the factor, the leg that vouches for it, its transport."""

    factor: Decimal
    leg: Leg
    rest: bool
    corrected: bool


def _usd_basis(live: list[Quote], usdc: Quote | None, age: int) -> _UsdBasis:
    if usdc is not None:
        return _UsdBasis(ONE / usdc.price, _leg(usdc, age), usdc.transport is Transport.REST, True)
    # USDT is Binance's USD: the value 1 is vouched for by the newest live Binance quote.
    newest = max(live, key=lambda q: q.ts_ms)
    leg = Leg("binance", "USDT/USD", ONE, newest.ts_ms, age)
    return _UsdBasis(ONE, leg, newest.transport is Transport.REST, False)


def derive_binance(quotes: QuoteTable, config: DerivationConfig) -> list[RateTick]:
    """Binance directions: X/USDT mids, USDT as USD, RUB through the FX leg."""
    age = config.max_age_ms.get("binance", 10_000)
    coins = {c: quotes.get(("binance", f"{c}/USDT")) for c in COINS}
    live = [q for q in coins.values() if q is not None]
    if not live:
        return []
    usdc = quotes.get(("binance", "USDC/USDT")) if config.usdc_correction else None
    usd = _usd_basis(live, usdc, age)
    fx = quotes.get((config.fx_source, "USDT/RUB"))
    fx_leg = _leg(fx, config.fx_max_age_ms) if fx else None

    # A Binance value's transport is how its Binance legs arrived (the FX leg is another venue).
    out: list[RateTick] = []
    for name, quote in coins.items():
        if quote is None:
            continue
        leg, rest = _leg(quote, age), quote.transport is Transport.REST
        usd_legs = (leg, usd.leg) if usd.corrected else (leg,)
        out.append(
            _tick("binance", f"{name}-USD", quote.price * usd.factor, usd_legs, rest or usd.rest)
        )
        if fx_leg:
            out.append(
                _tick("binance", f"{name}-RUB", quote.price * fx_leg.price, (leg, fx_leg), rest)
            )
    for network in USDT_DIRECTIONS:
        value = _adjusted(config, network, usd.factor)
        out.append(_tick("binance", f"{network}-USD", value, (usd.leg,), usd.rest))
        if fx_leg:
            value = _adjusted(config, network, fx_leg.price)
            out.append(_tick("binance", f"{network}-RUB", value, (usd.leg, fx_leg), usd.rest))
    return out


def derive_coingecko(quotes: QuoteTable, config: DerivationConfig) -> list[RateTick]:
    """CoinGecko directions: its own USD and RUB prices for bitcoin, ethereum and tether."""
    age = config.max_age_ms.get("coingecko", 900_000)
    out: list[RateTick] = []
    for asset, usd_symbol in _COINGECKO_SYMBOL.items():
        for currency in ("USD", "RUB"):
            symbol = usd_symbol.replace("/USD", f"/{currency}")
            quote = quotes.get(("coingecko", symbol))
            if quote is None:
                continue
            legs = (_leg(quote, age),)
            rest = quote.transport is Transport.REST
            if asset == "USDT":
                for network in USDT_DIRECTIONS:
                    value = _adjusted(config, network, quote.price)
                    out.append(_tick("coingecko", f"{network}-{currency}", value, legs, rest))
            else:
                out.append(_tick("coingecko", f"{asset}-{currency}", quote.price, legs, rest))
    return out
