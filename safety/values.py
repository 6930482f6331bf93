"""Value sanity: the amounts a change may set at all, before any guardrail policy.

A guardrail policy says what a team allows; this says what no team could mean. Every
money value a change sets (budget, bid) must be:
- a finite decimal (no NaN, no infinity, no float);
- at least the currency's floor (default: its smallest unit, 0.01 EUR or 1 JPY);
- at most the currency's ceiling (default below; a daily budget of ten million euros on
  one entity is a typo, not a plan);
- representable exactly on the platform (no 0.001 EUR).

Ceilings are an order of magnitude, not an exchange rate: ``DEFAULT_CEILING`` units of a
currency worth about a US dollar, ten times that for a currency worth about a tenth of
one, and so on (``UNITS_PER_USD_EXPONENT``, 2025 rates rounded down to a power of ten).
``MONEY_CEILINGS`` / ``MONEY_FLOORS`` (settings, from the environment) replace them per
currency. No ceiling exceeds what the mirror's columns hold (``MONEY`` digits).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings

from platforms.models import MONEY
from platforms.money import MoneyError, currency_exponent, money_rules, quantize

DEFAULT_CEILING = Decimal("1000000")
# The largest amount a MONEY column stores (18 digits, 4 of them decimals).
COLUMN_MAXIMUM = Decimal(10) ** (MONEY["max_digits"] - MONEY["decimal_places"]) - 1

# Units per US dollar as a power of ten, for currencies worth less than ten cents of a
# dollar per ten units; every other currency counts as 0 (about a dollar or more).
UNITS_PER_USD_EXPONENT: dict[str, int] = {
    **dict.fromkeys(
        """AFN ALL BTN BWP CZK DOP EGP ERN GMD HNL INR KGS LSL MAD MDL MKD MRU MUR MVR MXN MZN NAD
        NIO NOK PHP RUB SCR SEK SLE SRD STN SZL THB TJS TRY TWD UAH UYU VES ZAR ZMW ZWG""".split(),
        1,
    ),
    **dict.fromkeys(
        """AMD AOA BDT CLP CRC CVE DJF DZD ETB GYD HTG HUF ISK JMD JPY KES KMF KPW KZT LKR LRD NPR
        PKR RSD SDG SOS VUV XAF XOF XPF YER""".split(),
        2,
    ),
    **dict.fromkeys(
        "ARS BIF CDF COP GNF IQD KHR KRW MGA MMK MNT MWK NGN PYG RWF SSP TZS UGX".split(),
        3,
    ),
    **dict.fromkeys("IDR IRR LAK LBP SYP UZS VND".split(), 4),
}


class ValueRefused(ValueError):
    """A value no change may set; ``field`` names it (``params.new_budget``, ``items[3].bid``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def money_floor(currency: str) -> Decimal:
    """The smallest amount a change may set in ``currency``."""
    configured = getattr(settings, "MONEY_FLOORS", {}).get(currency.upper())
    if configured is not None:
        return Decimal(configured)
    return Decimal(1).scaleb(-currency_exponent(currency))


def money_ceiling(currency: str) -> Decimal:
    """The largest amount a change may set in ``currency`` (never above the column's)."""
    configured = getattr(settings, "MONEY_CEILINGS", {}).get(currency.upper())
    if configured is not None:
        return min(Decimal(configured), COLUMN_MAXIMUM)
    exponent = UNITS_PER_USD_EXPONENT.get(currency.upper(), 0)
    return min(DEFAULT_CEILING * 10**exponent, COLUMN_MAXIMUM)


def check_money(
    value: Any, *, field: str, currency: str, platform: str, subject: str, billable_unit_micros: int | None = None
) -> Decimal:
    """``value`` as a Decimal a change may set on ``platform``, or ``ValueRefused``.

    ``subject`` names the entity in the message (``"EU Brand (campaign 1001)"``);
    ``billable_unit_micros`` is the Google account's billable unit when sync read it.
    """
    amount = _decimal(value, field=field, subject=subject)
    unit = currency.upper()
    floor, ceiling = money_floor(unit), money_ceiling(unit)
    if amount < floor:
        raise ValueRefused(
            field,
            f"{subject}: {field} {_show(amount)} {unit} is below the floor of {quantize(floor, unit)} {unit}; "
            "a change must set a positive amount (pause the entity to stop its spend).",
        )
    if amount > ceiling:
        raise ValueRefused(
            field,
            f"{subject}: {field} {_show(amount)} {unit} is above the ceiling of {quantize(ceiling, unit)} {unit} "
            "that any change may set; check the amount (an extra digit?), or ask an operator of BudgetRadar "
            "to raise MONEY_CEILINGS for this currency.",
        )
    try:
        platform_precision(amount, currency=unit, platform=platform, billable_unit_micros=billable_unit_micros)
    except MoneyError as exc:
        raise ValueRefused(field, f"{subject}: {field}: {exc}") from None
    return amount


def platform_precision(
    amount: Decimal, *, currency: str, platform: str, billable_unit_micros: int | None = None
) -> Decimal:
    """``amount`` when ``platform`` can set it exactly in ``currency``; else ``MoneyError``.

    The platform's own grain (``platforms.money.money_rules``): Meta's currency offsets,
    the Google account's billable unit, ISO 4217 minor units for the sandbox.
    """
    return money_rules(platform, currency, billable_unit_micros=billable_unit_micros).check(amount)


def _decimal(value: Any, *, field: str, subject: str) -> Decimal:
    if isinstance(value, float | bool) or value is None:
        raise ValueRefused(field, f'{subject}: {field} must be a decimal amount such as "120.00"; got {value!r}.')
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise ValueRefused(
            field, f'{subject}: {field} must be a decimal amount such as "120.00"; got {value!r}.'
        ) from None
    if not amount.is_finite():
        raise ValueRefused(field, f"{subject}: {field} must be a finite amount; got {value!r}.")
    return amount


def _show(amount: Decimal) -> str:
    """An amount as a person typed it, without scientific notation for big ones."""
    if abs(amount.adjusted()) > 30:
        return f"{amount:E}"
    return f"{amount:f}"
