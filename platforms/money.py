"""Money: ISO 4217 currencies, and how each platform writes amounts of them.

``currency_exponent`` / ``check_precision`` / ``quantize`` are the ISO view (display,
forecasts, the sandbox). What a platform accepts is a different question, answered per
platform by ``money_rules``: Meta counts in its own per-currency offsets (not ISO
exponents: 5,000 HUF is ``5000``, 10.50 BHD is ``1050``), Google Ads in micros in steps
of the currency's billable unit. Every conversion is exact or refused: a value the
platform cannot represent raises ``MoneyError`` instead of being rounded.
"""

from __future__ import annotations

from dataclasses import dataclass
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


# Per-platform rules ---------------------------------------------------------------------

# Meta's own "offset" per currency: the API's integer amounts are the amount times the
# offset. https://developers.facebook.com/docs/marketing-api/currencies lists 1 for these
# currencies and 100 for every other currency it lists, whatever the ISO 4217 exponent
# (BHD and JOD have three ISO decimals, yet Meta counts them in hundredths; so KWD, which
# the audit of issue 9 found listed with 100).
META_OFFSET_ONE = frozenset({"CLP", "COP", "CRC", "HUF", "ISK", "IDR", "JPY", "KRW", "PYG", "TWD", "VND"})
# Every currency on that page ("Marketing API supports all of the currencies supported by
# ad accounts"), including codes ISO 4217 has since retired (HRK, LTL, LVL, SKK, VEF).
META_CURRENCIES = frozenset(
    """DZD ARS AUD BHD BDT BOB BGN BRL GBP CAD CLP CNY COP CRC HRK CZK DKK EGP EUR GTQ HNL HKD
    HUF ISK INR IDR ILS JPY JOD KES KRW KWD LVL LTL MOP MYR MXN NZD NIO NGN NOK PKR PYG PEN PHP
    PLN QAR RON RUB SAR RSD SGD SKK ZAR SEK CHF TWD THB TRY AED UYU USD VEF VND""".split()
)


@dataclass(frozen=True)
class MoneyRules:
    """How one platform writes amounts of one currency.

    ``unit`` is the platform's integer for one unit of the currency (Meta's offset, or
    1,000,000 micros for Google); ``grain`` the smallest step the platform accepts, in
    platform integers (1 for Meta, the billable unit in micros for Google). Amounts
    cross the interface as ``Decimal``; every conversion is exact or raises
    ``MoneyError``: nothing is ever rounded.
    """

    platform: str
    currency: str
    unit: int
    grain: int
    display_places: int

    @property
    def step(self) -> Decimal:
        """The grain as an amount of the currency (0.01 EUR on Meta, 1 HUF on Meta)."""
        return Decimal(self.grain) / Decimal(self.unit)

    def check(self, amount: Decimal | str | int) -> Decimal:
        """``amount`` as Decimal when the platform can take it exactly; else ``MoneyError``."""
        value = _as_decimal(amount)
        scaled = value * self.unit
        if scaled != scaled.to_integral_value() or int(scaled) % self.grain:
            places = _places(self.step)
            if _places(value) > places:
                plural = "s" if places != 1 else ""
                lead = f"{value} {self.currency} has more than {places} decimal place{plural}"
            else:
                lead = f"{value} {self.currency} is not a whole multiple of {self.describe_step()}"
            raise MoneyError(
                f"{lead}: the smallest amount {PLATFORM_LABELS.get(self.platform, self.platform)} accepts in "
                f"{self.currency} is {self.describe_step()}."
            )
        return value

    def to_platform(self, amount: Decimal | str | int) -> int:
        """Decimal amount -> the platform's integer (Meta minor units, Google micros)."""
        return int(self.check(amount) * self.unit)

    def from_platform(self, value: int | str) -> Decimal:
        """The platform's integer -> Decimal amount with ``display_places`` decimals.

        Refuses an integer that is not a multiple of the grain: a value the platform
        should never report, and that a diff must not show rounded.
        """
        try:
            units = int(value)
        except (TypeError, ValueError):
            raise MoneyError(f"{value!r} is not an integer amount of the platform's units.") from None
        if units % self.grain:
            raise MoneyError(f"{units} is not a whole multiple of the {self.currency} grain of {self.grain}.")
        return (Decimal(units) / self.unit).quantize(Decimal(1).scaleb(-self.display_places))

    def exact(self, value: int | str) -> Decimal:
        """The platform's integer as an amount, whatever the grain (for live values that
        break the platform's own rule: shown as they are, never rounded)."""
        amount = Decimal(int(value)) / self.unit
        return amount.quantize(Decimal(1).scaleb(-max(self.display_places, _places(amount))))

    def describe_step(self) -> str:
        step = self.step
        return f"{step.quantize(Decimal(1).scaleb(-self.display_places))} {self.currency}"


PLATFORM_LABELS = {"meta": "Meta", "google_ads": "Google Ads", "sandbox": "the sandbox"}


def _display_places(currency: str, grain_places: int) -> int:
    """The ISO exponent, or more when the platform's grain is finer (never fewer: a diff
    shows amounts the way the account's people read them)."""
    try:
        iso = currency_exponent(currency)
    except MoneyError:
        iso = 2  # retired codes Meta still lists (HRK, LTL, LVL, SKK, VEF) all had two decimals
    return max(iso, grain_places)


def _places(step: Decimal) -> int:
    """Decimals needed to write ``step`` (0.01 -> 2, 0.5 -> 1, 10 -> 0)."""
    return max(0, -step.normalize().as_tuple().exponent)


def meta_offset(currency: str) -> int:
    """Meta's offset for ``currency`` (1 or 100); ``MoneyError`` for a currency Meta does not list."""
    code = (currency or "").upper()
    if code not in META_CURRENCIES:
        raise MoneyError(
            f"Meta ad accounts do not bill in {currency!r}; see the currencies Meta lists "
            "(developers.facebook.com/docs/marketing-api/currencies)."
        )
    return 1 if code in META_OFFSET_ONE else 100


def meta_rules(currency: str) -> MoneyRules:
    """Meta: integers are amount x offset; the grain is one such integer."""
    offset = meta_offset(currency)
    return MoneyRules("meta", currency.upper(), offset, 1, _display_places(currency, _places(Decimal(1) / offset)))


def default_billable_unit_micros(currency: str) -> int:
    """The ISO minor unit in micros (10,000 for EUR, 1,000,000 for JPY): what BudgetRadar
    assumes for a Google account until it has read ``currency_constant.billable_unit_micros``."""
    return MICROS_PER_UNIT // 10 ** currency_exponent(currency)


def google_rules(currency: str, billable_unit_micros: int | None = None) -> MoneyRules:
    """Google Ads: micros, in steps of the currency's billable unit
    (https://developers.google.com/google-ads/api/reference/rpc/latest/CurrencyConstant:
    "Billed amounts should be multiples of this value"); shown with the ISO exponent."""
    unit = billable_unit_micros or default_billable_unit_micros(currency)
    if unit <= 0:
        raise MoneyError(f"A billable unit of {unit} micros for {currency} is not a usable step.")
    places = _places(Decimal(unit) / MICROS_PER_UNIT)
    return MoneyRules("google_ads", currency.upper(), MICROS_PER_UNIT, unit, _display_places(currency, places))


def iso_rules(currency: str, platform: str = "sandbox") -> MoneyRules:
    """Whole ISO 4217 minor units (the sandbox's rule)."""
    exponent = currency_exponent(currency)
    return MoneyRules(platform, currency.upper(), 10**exponent, 1, exponent)


def money_rules(platform: str, currency: str, *, billable_unit_micros: int | None = None) -> MoneyRules:
    """The rules ``platform`` applies to ``currency`` (Google: the account's billable unit
    when known, else the ISO minor unit)."""
    if platform == "meta":
        return meta_rules(currency)
    if platform == "google_ads":
        return google_rules(currency, billable_unit_micros)
    return iso_rules(currency, platform)


def quantize(amount: Decimal, currency: str) -> Decimal:
    """``amount`` shown with exactly the currency's decimals (100.0000 EUR -> 100.00).

    For display and snapshots of values already stored exactly; never for converting
    user input (use ``check_precision``, which refuses instead of rounding).
    """
    return amount.quantize(Decimal(1).scaleb(-currency_exponent(currency)))
