"""Words for reasons: amounts in major units, windows in plain time, counts."""

from __future__ import annotations

from typing import Final

_ZERO_DECIMALS: Final = frozenset(
    {"BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG"}
    | {"RWF", "UGX", "UYI", "VND", "VUV", "XAF", "XOF", "XPF"}
)
_THREE_DECIMALS: Final = frozenset({"BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"})
_UNITS: Final = ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second"))


def exponent(currency: str) -> int:
    """Decimal places of a currency's minor unit (ISO 4217; 2 when not listed)."""
    if currency in _ZERO_DECIMALS:
        return 0
    if currency in _THREE_DECIMALS:
        return 3
    return 2


def money(amount: int, currency: str) -> str:
    """``125000, "EUR"`` → ``"1,250.00 EUR"``."""
    places = exponent(currency)
    sign = "-" if amount < 0 else ""
    major, minor = divmod(abs(amount), 10**places)
    if places == 0:
        return f"{sign}{major:,} {currency}"
    return f"{sign}{major:,}.{minor:0{places}d} {currency}"


def window(seconds: int) -> str:
    """``600`` → ``"the last 10 minutes"``; ``3600`` → ``"the last hour"``.

    Days are used from two days up, so a day-long window reads "24 hours".
    """
    for size, unit in _UNITS:
        if seconds % size == 0 and (size != 86400 or seconds >= 2 * 86400):
            count = seconds // size
            return f"the last {unit}" if count == 1 else f"the last {count:,} {unit}s"
    return f"the last {seconds} seconds"  # pragma: no cover - the seconds unit always divides


def times(count: int) -> str:
    return "1 time" if count == 1 else f"{count:,} times"


def transactions(count: int) -> str:
    return "1 transaction" if count == 1 else f"{count:,} transactions"
