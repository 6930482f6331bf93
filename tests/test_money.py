"""Money per platform: exact or refused, over every currency each platform lists.

Meta counts in its own offsets (https://developers.facebook.com/docs/marketing-api/currencies),
Google Ads in micros on the currency's billable unit
(https://developers.google.com/google-ads/api/reference/rpc/latest/CurrencyConstant).
The ISO 4217 exponent is only the display precision. These properties replace the old
ISO-exponent tests, which encoded the misunderstanding that Meta uses ISO minor units.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from platforms.money import (
    KNOWN_CURRENCIES,
    META_CURRENCIES,
    META_OFFSET_ONE,
    MICROS_PER_UNIT,
    MoneyError,
    check_precision,
    currency_exponent,
    default_billable_unit_micros,
    google_rules,
    meta_offset,
    meta_rules,
    money_rules,
)

meta_currencies = st.sampled_from(sorted(META_CURRENCIES))
iso_currencies = st.sampled_from(sorted(KNOWN_CURRENCIES))
platform_integers = st.integers(min_value=0, max_value=10**13)
# Billable units Google could report: whole minor units and coarser steps (0.10, 0.50, 1, 10).
billable_units = st.sampled_from([1, 10, 100, 1_000, 10_000, 100_000, 500_000, 1_000_000, 10_000_000])


def test_meta_offsets_are_metas_not_iso_exponents():
    assert {code: meta_offset(code) for code in ("HUF", "TWD", "IDR", "JPY", "EUR", "BHD", "JOD", "KWD")} == {
        "HUF": 1,
        "TWD": 1,
        "IDR": 1,
        "JPY": 1,
        "EUR": 100,
        "BHD": 100,
        "JOD": 100,
        "KWD": 100,
    }
    assert {currency_exponent(c) for c in ("HUF", "TWD", "IDR")} == {2}  # ISO says two decimals
    assert {currency_exponent(c) for c in ("BHD", "JOD", "KWD")} == {3}  # ISO says three


def test_5000_huf_is_5000_on_meta_and_10_50_bhd_is_1050():
    assert meta_rules("HUF").to_platform(Decimal("5000")) == 5000
    assert meta_rules("HUF").from_platform(5000) == Decimal("5000.00")
    assert meta_rules("BHD").to_platform(Decimal("10.50")) == 1050
    assert meta_rules("BHD").from_platform(1050) == Decimal("10.500")


@given(value=platform_integers, currency=meta_currencies)
def test_meta_integers_round_trip_for_every_listed_currency(value, currency):
    rules = meta_rules(currency)
    amount = rules.from_platform(value)
    assert amount == Decimal(value) / meta_offset(currency)
    assert rules.to_platform(amount) == value
    assert rules.to_platform(str(amount)) == value


@given(value=platform_integers, currency=meta_currencies, extra=st.integers(min_value=1, max_value=9))
def test_meta_refuses_amounts_finer_than_its_offset(value, currency, extra):
    rules = meta_rules(currency)
    finer = Decimal(value) / meta_offset(currency) + Decimal(extra) / (meta_offset(currency) * 10)
    with pytest.raises(MoneyError, match="smallest amount Meta accepts"):
        rules.to_platform(finer)


@given(currency=st.sampled_from(sorted(META_OFFSET_ONE)), fraction=st.integers(min_value=1, max_value=99))
def test_offset_one_currencies_take_whole_units_only_on_meta(currency, fraction):
    """ISO gives HUF, TWD, IDR and others two decimals; Meta takes none of them."""
    with pytest.raises(MoneyError):
        meta_rules(currency).to_platform(Decimal(5000) + Decimal(fraction) / 100)


@given(code=st.text(min_size=0, max_size=5).filter(lambda c: c.upper() not in META_CURRENCIES))
def test_meta_refuses_currencies_it_does_not_list(code):
    with pytest.raises(MoneyError, match="do not bill in"):
        meta_rules(code)


@given(steps=platform_integers, currency=iso_currencies, unit=billable_units)
def test_google_micros_round_trip_on_the_billable_unit(steps, currency, unit):
    rules = google_rules(currency, unit)
    micros = steps * unit
    amount = rules.from_platform(micros)
    assert amount == Decimal(micros) / MICROS_PER_UNIT
    assert rules.to_platform(amount) == micros
    assert -amount.as_tuple().exponent >= currency_exponent(currency)  # never fewer decimals than ISO


@given(steps=platform_integers, currency=iso_currencies, unit=billable_units.filter(lambda u: u > 1))
def test_google_refuses_amounts_between_billable_units(steps, currency, unit):
    rules = google_rules(currency, unit)
    off_grain = Decimal(steps * unit + unit // 2 or 1) / MICROS_PER_UNIT
    with pytest.raises(MoneyError, match="smallest amount Google Ads accepts"):
        rules.to_platform(off_grain)
    with pytest.raises(MoneyError):
        rules.from_platform(steps * unit + max(unit // 2, 1))


@given(currency=iso_currencies)
def test_google_defaults_to_the_iso_minor_unit_until_the_account_is_read(currency):
    assert google_rules(currency).grain == default_billable_unit_micros(currency)
    assert google_rules(currency).step == Decimal(1).scaleb(-currency_exponent(currency))


def test_a_coarser_google_billable_unit_refuses_what_iso_allows():
    assert check_precision(Decimal("5000.50"), "HUF") == Decimal("5000.50")  # ISO is happy
    with pytest.raises(MoneyError, match="1.00 HUF"):
        google_rules("HUF", 1_000_000).to_platform(Decimal("5000.50"))


@given(micros=st.integers(min_value=0, max_value=10**13), currency=iso_currencies)
def test_exact_shows_off_grain_live_values_without_rounding(micros, currency):
    assert google_rules(currency).exact(micros) == Decimal(micros) / MICROS_PER_UNIT


@pytest.mark.parametrize("value", ["NaN", "sNaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("platform", ["meta", "google_ads", "sandbox"])
def test_non_finite_amounts_are_refused(value, platform):
    with pytest.raises(MoneyError, match="not a finite amount"):
        money_rules(platform, "EUR").to_platform(Decimal(value))


@pytest.mark.parametrize("value", ["abc", "", "1,5"])
def test_text_that_is_not_an_amount_is_refused(value):
    with pytest.raises(MoneyError, match="not a decimal amount"):
        money_rules("google_ads", "EUR").to_platform(value)


@given(code=st.text(min_size=0, max_size=5).filter(lambda c: c.upper() not in KNOWN_CURRENCIES))
def test_unknown_iso_currencies_are_refused(code):
    with pytest.raises(MoneyError, match="Unknown currency code"):
        currency_exponent(code)


def test_the_iso_exponents_are_the_iso_4217_ones():
    assert {c: currency_exponent(c) for c in ("EUR", "USD", "JPY", "KRW", "KWD")} == {
        "EUR": 2,
        "USD": 2,
        "JPY": 0,
        "KRW": 0,
        "KWD": 3,
    }
