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

Values are exact: mids and products of the venues' decimals are never rounded (API v1 rounds to 8
places when it renders). The one inexact step is the optional USDC/USDT correction, a division
(28 significant digits). Bid/ask: a Binance value carries the book its Binance legs imply
(`Priced`): BTC-USD is BTCUSDT's bid/ask, BTC-RUB is BTCUSDT's bid and ask each x the FX price
(CoinGecko has no book), the corrected USD values divide by USDCUSDT's opposite side
(`Priced.divided_by`). A value
with no book behind it has none: every CoinGecko value, and the Binance USDT values (1 by
convention, or the FX price).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from ratesvc.decimals import exact_product
from ratesvc.domain import Leg, Quote, RateTick, Transport

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


@dataclass(frozen=True, slots=True)
class Priced:
    """A price and, where a book stands behind it, the bid and ask it implies (both or neither).

    Values multiply exactly. In a product a factor without a book (the FX leg, a fixed adjustment)
    scales both sides by its price, so a cross has a book as soon as one factor has: BTC-RUB's bid
    is BTC/USDT's bid x USDT/RUB. Nothing has a book when no factor has.
    """

    value: Decimal
    bid: Decimal | None = None
    ask: Decimal | None = None

    @classmethod
    def of(cls, leg: Leg) -> Priced:
        """A leg's price and book."""
        return cls(leg.price, leg.bid, leg.ask)

    def times(self, other: Priced) -> Priced:
        """The exact product; its book as the class docstring says."""
        value = exact_product(self.value, other.value)
        if self.bid is None and other.bid is None:
            return Priced(value)
        return Priced(
            value,
            exact_product(_side(self.bid, self.value), _side(other.bid, other.value)),
            exact_product(_side(self.ask, self.value), _side(other.ask, other.value)),
        )

    def divided_by(self, other: Priced) -> Priced:
        """This price in units of `other` (X/USDT / USDC/USDT = X/USDC). Selling X there means
        buying USDC at its ask, so the bid divides by `other`'s ask and the ask by its bid.
        Division is the one inexact step: 28 significant digits (the default context)."""
        value = self.value / other.value
        if self.bid is None and other.bid is None:
            return Priced(value)
        return Priced(
            value,
            _side(self.bid, self.value) / _side(other.ask, other.value),
            _side(self.ask, self.value) / _side(other.bid, other.value),
        )


def _side(side: Decimal | None, value: Decimal) -> Decimal:
    return value if side is None else side


def derive_all(quotes: QuoteTable, config: DerivationConfig) -> list[RateTick]:
    """Every direction value that the current quotes allow, for every exchanger."""
    return derive_binance(quotes, config) + derive_coingecko(quotes, config)


def _leg(quote: Quote, max_age_ms: int) -> Leg:
    return Leg(
        quote.source, quote.symbol, quote.price, quote.ts_ms, max_age_ms, quote.bid, quote.ask
    )


def _tick(
    exchanger: str, direction: str, priced: Priced, legs: tuple[Leg, ...], rest: bool
) -> RateTick:
    return RateTick(
        exchanger=exchanger,
        direction=direction,
        value=priced.value,
        ts_ms=max(leg.ts_ms for leg in legs),
        legs=legs,
        transport=Transport.REST if rest else Transport.WS,
        bid=priced.bid,
        ask=priced.ask,
    )


def _adjusted(config: DerivationConfig, network: str, priced: Priced) -> Priced:
    pct = config.adjust_pct.get(network)
    return priced.times(Priced(ONE + pct.scaleb(-2))) if pct else priced


@dataclass(frozen=True, slots=True)
class _UsdBasis:
    """How Binance's USDT maps to USD: the USDC/USDT divisor (if corrected), the leg that vouches
    for it, its transport."""

    divisor: Priced | None
    leg: Leg
    rest: bool

    def usd(self, priced: Priced) -> Priced:
        """A USDT price in USD."""
        return priced if self.divisor is None else priced.divided_by(self.divisor)


def _usd_basis(live: list[Quote], usdc: Quote | None, age: int) -> _UsdBasis:
    if usdc is not None:
        leg = _leg(usdc, age)
        return _UsdBasis(Priced.of(leg), leg, usdc.transport is Transport.REST)
    # USDT is Binance's USD: the value 1 is vouched for by the newest live Binance quote. It is a
    # convention, not a market: no book.
    newest = max(live, key=lambda q: q.ts_ms)
    leg = Leg("binance", "USDT/USD", ONE, newest.ts_ms, age)
    return _UsdBasis(None, leg, newest.transport is Transport.REST)


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

    out: list[RateTick] = []
    for name, quote in coins.items():
        if quote is not None:
            out += _coin_ticks(name, _leg(quote, age), quote.transport, usd, fx_leg)
    for network in USDT_DIRECTIONS:
        priced = _adjusted(config, network, usd.usd(Priced(ONE)))
        out.append(_tick("binance", f"{network}-USD", priced, (usd.leg,), usd.rest))
        if fx_leg:
            priced = _adjusted(config, network, Priced.of(fx_leg))
            out.append(_tick("binance", f"{network}-RUB", priced, (usd.leg, fx_leg), usd.rest))
    return out


def _coin_ticks(
    name: str, leg: Leg, transport: Transport, usd: _UsdBasis, fx_leg: Leg | None
) -> list[RateTick]:
    """X-USD and (with an FX leg) X-RUB of one coin quoted against USDT on Binance."""
    # A Binance value's transport is how its Binance legs arrived (the FX leg is another venue).
    rest = transport is Transport.REST
    usd_legs = (leg, usd.leg) if usd.divisor is not None else (leg,)
    coin = Priced.of(leg)
    out = [_tick("binance", f"{name}-USD", usd.usd(coin), usd_legs, rest or usd.rest)]
    if fx_leg:
        rub = coin.times(Priced.of(fx_leg))
        out.append(_tick("binance", f"{name}-RUB", rub, (leg, fx_leg), rest))
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
                    priced = _adjusted(config, network, Priced.of(legs[0]))
                    out.append(_tick("coingecko", f"{network}-{currency}", priced, legs, rest))
            else:
                out.append(
                    _tick("coingecko", f"{asset}-{currency}", Priced.of(legs[0]), legs, rest)
                )
    return out
