"""Exact decimal arithmetic and text for prices: mids and products never rounded, plain text.

Pure; imports nothing from ratesvc. Money never goes through float anywhere in the service.
"""

from __future__ import annotations

from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal, Inexact

# Sums and products of exchange decimals, never rounded (the default context keeps 28 digits).
# Division never goes through it: 1/3 has no exact result (Inexact is trapped to be sure).
_EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN, traps=[Inexact])


def exact_product(*factors: Decimal) -> Decimal:
    """The exact product of decimals (no rounding, whatever their number of digits)."""
    result = Decimal(1)
    for factor in factors:
        result = _EXACT.multiply(result, factor)
    return result


def exact_mid(bid: Decimal, ask: Decimal) -> Decimal:
    """(bid + ask) / 2, exactly (half of an n-digit number needs at most n + 1 digits)."""
    total = _EXACT.add(bid, ask)
    return Context(prec=len(total.as_tuple().digits) + 1, traps=[Inexact]).divide(total, 2)


def plain(value: Decimal) -> str:
    """The exact decimal text of `value`: no exponent, no insignificant trailing zeros.

    ``65000.10000000`` -> ``65000.1``, ``1E+2`` -> ``100``; never rounds.
    """
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text
