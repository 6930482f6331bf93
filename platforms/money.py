"""Money conversion between ``Decimal`` amounts and platform integers.

Only adapters call these. Every conversion is exact or refused: a value that cannot be
represented in the target unit raises ``MoneyError`` instead of being rounded.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

# ISO 4217 minor-unit exponents that differ from 2. Every other active code has 2.
_EXPONENTS: dict[str, int] = {
    **dict.fromkeys(
        [
            "BIF",
            "CLP",
            "DJF",
            "GNF",
            "ISK",
            "JPY",
            "KMF",
            "KRW",
            "PYG",
            "RWF",
            "UGX",
            "UYI",
            "VND",
            "VUV",
            "XAF",
            "XOF",
            "XPF",
        ],
        0,
    ),
    **dict.fromkeys(["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"], 3),
    **dict.fromkeys(["CLF", "UYW"], 4),
}

# Every ISO 4217 code in current use (funds and precious metals excluded).
KNOWN_CURRENCIES = frozenset(
    """AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD
    BTN BWP BYN BZD CAD CDF CHF CLF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB
    EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK
    JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD
    MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR
    PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL
    THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD UYI UYU UYW UZS VED VES VND VUV WST XAF
    XCD XOF XPF YER ZAR ZMW ZWG""".split()
)

MICROS_PER_UNIT = 1_000_000


class MoneyError(ValueError):
    """A money value that cannot be converted exactly (or an unknown currency)."""


def currency_exponent(currency: str) -> int:
    """Number of minor-unit digits of an ISO 4217 currency (EUR 2, JPY 0, KWD 3)."""
    code = (currency or "").upper()
    if code not in KNOWN_CURRENCIES:
        raise MoneyError(f"Unknown currency code {currency!r}: expected an ISO 4217 code such as EUR.")
    return _EXPONENTS.get(code, 2)


def _as_decimal(amount: Decimal | str | int) -> Decimal:
    try:
        value = Decimal(amount) if not isinstance(amount, Decimal) else amount
    except (InvalidOperation, TypeError, ValueError):
        raise MoneyError(f"{amount!r} is not a decimal amount.") from None
    if not value.is_finite():
        raise MoneyError(f"{amount!r} is not a finite amount.")
    return value


def check_precision(amount: Decimal | str | int, currency: str) -> Decimal:
    """Return ``amount`` as Decimal if it has no more decimals than ``currency`` allows."""
    value = _as_decimal(amount)
    exponent = currency_exponent(currency)
    scaled = value.scaleb(exponent)
    if scaled != scaled.to_integral_value():
        raise MoneyError(
            f"{value} {currency.upper()} has more than {exponent} decimal place"
            f"{'s' if exponent != 1 else ''}; {currency.upper()} cannot represent it exactly."
        )
    return value


def to_minor_units(amount: Decimal | str | int, currency: str) -> int:
    """Decimal amount -> integer minor units (Meta). 12.34 EUR -> 1234, 500 JPY -> 500."""
    value = check_precision(amount, currency)
    return int(value.scaleb(currency_exponent(currency)))


def from_minor_units(minor: int | str, currency: str) -> Decimal:
    """Integer minor units -> Decimal amount, quantized to the currency's exponent."""
    try:
        units = int(minor)
    except (TypeError, ValueError):
        raise MoneyError(f"{minor!r} is not an integer number of minor units.") from None
    exponent = currency_exponent(currency)
    return Decimal(units).scaleb(-exponent).quantize(Decimal(1).scaleb(-exponent))


def to_micros(amount: Decimal | str | int, currency: str) -> int:
    """Decimal amount -> Google Ads micros (x 1,000,000).

    The amount must also be representable in the currency itself (no 0.001 EUR), because
    Google bills in the currency's minor units and would round silently.
    """
    value = check_precision(amount, currency)
    return int(value * MICROS_PER_UNIT)


def from_micros(micros: int | str, currency: str) -> Decimal:
    """Google Ads micros -> Decimal amount in the account currency.

    Refuses micros that are not a whole number of the currency's minor units.
    """
    try:
        units = int(micros)
    except (TypeError, ValueError):
        raise MoneyError(f"{micros!r} is not an integer number of micros.") from None
    exponent = currency_exponent(currency)
    value = Decimal(units) / MICROS_PER_UNIT
    check_precision(value, currency)
    return value.quantize(Decimal(1).scaleb(-exponent))


def quantize(amount: Decimal, currency: str) -> Decimal:
    """``amount`` shown with exactly the currency's decimals (100.0000 EUR -> 100.00).

    For display and snapshots of values already stored exactly; never for converting
    user input (use ``check_precision``, which refuses instead of rounding).
    """
    return amount.quantize(Decimal(1).scaleb(-currency_exponent(currency)))
