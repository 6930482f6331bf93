"""Money conversion is exact or refused: properties over many amounts and currencies."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from platforms.money import (
    KNOWN_CURRENCIES,
    MICROS_PER_UNIT,
    MoneyError,
    currency_exponent,
    from_micros,
    from_minor_units,
    to_micros,
    to_minor_units,
)

CURRENCIES = {"EUR": 2, "USD": 2, "JPY": 0, "KRW": 0, "KWD": 3}
currencies = st.sampled_from(sorted(CURRENCIES))
minor_amounts = st.integers(min_value=-(10**12), max_value=10**12)


def amount(minor: int, currency: str) -> Decimal:
    """``minor`` minor units as a Decimal amount (exactly representable)."""
    return Decimal(minor).scaleb(-CURRENCIES[currency])


def test_the_exponents_are_the_iso_4217_ones():
    assert {code: currency_exponent(code) for code in CURRENCIES} == CURRENCIES


@given(minor=minor_amounts, currency=currencies)
def test_minor_units_round_trip_through_decimal(minor, currency):
    value = from_minor_units(minor, currency)
    assert value == amount(minor, currency)
    assert value.as_tuple().exponent == -CURRENCIES[currency]
    assert to_minor_units(value, currency) == minor


@given(minor=minor_amounts, currency=currencies)
def test_decimal_round_trips_through_micros(minor, currency):
    value = amount(minor, currency)
    micros = to_micros(value, currency)
    assert micros == minor * 10 ** (6 - CURRENCIES[currency])
    assert from_micros(micros, currency) == value


@given(minor=minor_amounts, currency=currencies)
def test_decimal_strings_convert_like_decimals(minor, currency):
    value = amount(minor, currency)
    assert to_minor_units(str(value), currency) == to_minor_units(value, currency)


@given(minor=minor_amounts, currency=currencies, extra=st.integers(min_value=1, max_value=9))
def test_sub_minor_unit_amounts_are_refused_never_rounded(minor, currency, extra):
    value = amount(minor, currency) + Decimal(extra).scaleb(-CURRENCIES[currency] - 1)
    for convert in (to_minor_units, to_micros):
        with pytest.raises(MoneyError, match="cannot represent it exactly"):
            convert(value, currency)


@given(minor=minor_amounts, currency=currencies, extra=st.integers(min_value=1, max_value=9))
def test_micros_that_are_not_whole_minor_units_are_refused(minor, currency, extra):
    step = 10 ** (6 - CURRENCIES[currency])  # micros per minor unit
    micros = minor * step + extra * step // 10
    with pytest.raises(MoneyError, match=currency):
        from_micros(micros, currency)


@pytest.mark.parametrize("value", ["NaN", "sNaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("convert", [to_minor_units, to_micros])
def test_non_finite_amounts_are_refused(value, convert):
    with pytest.raises(MoneyError, match="not a finite amount"):
        convert(Decimal(value), "EUR")


@given(code=st.text(min_size=0, max_size=5).filter(lambda c: c.upper() not in KNOWN_CURRENCIES))
def test_unknown_currencies_are_refused(code):
    with pytest.raises(MoneyError, match="Unknown currency code"):
        to_minor_units(Decimal("1"), code)


@pytest.mark.parametrize("value", ["abc", "", "1,5"])
def test_text_that_is_not_an_amount_is_refused(value):
    with pytest.raises(MoneyError, match="not a decimal amount"):
        to_micros(value, "EUR")


def test_a_million_micros_is_one_unit():
    assert to_micros(Decimal("1"), "USD") == MICROS_PER_UNIT
    assert from_micros(MICROS_PER_UNIT, "JPY") == Decimal("1")
