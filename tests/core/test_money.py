from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.money import MAX_MINOR, Money, MoneyError, allocate, to_minor

CURRENCY_BY_EXPONENT = {0: "JPY", 2: "EUR", 3: "KWD"}
amounts = st.integers(min_value=1, max_value=10**9)
part_counts = st.integers(min_value=1, max_value=48)
currencies = st.sampled_from(sorted(CURRENCY_BY_EXPONENT.values()))


@settings(max_examples=300, deadline=None)
@given(total=amounts, parts=part_counts, currency=currencies)
def test_split_parts_sum_to_total_and_differ_by_at_most_one(total, parts, currency):
    split = Money(total, currency).split(parts)
    assert len(split) == parts
    assert sum(p.minor for p in split) == total
    assert all(p.minor >= 0 and p.currency == currency for p in split)
    assert max(p.minor for p in split) - min(p.minor for p in split) <= 1
    # The remainder rule: larger parts come first.
    assert [p.minor for p in split] == sorted((p.minor for p in split), reverse=True)


@settings(max_examples=300, deadline=None)
@given(
    total=amounts,
    weights=st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=48).filter(
        any
    ),
)
def test_weighted_allocation_sums_exactly_and_never_goes_negative(total, weights):
    parts = allocate(total, weights)
    assert sum(parts) == total
    assert all(p >= 0 for p in parts)
    assert all(p == 0 for p, w in zip(parts, weights, strict=True) if w == 0)
    weight_sum = sum(weights)
    for part, weight in zip(parts, weights, strict=True):
        exact = Decimal(total) * weight / weight_sum
        assert abs(Decimal(part) - exact) < 1


@given(total=st.integers(min_value=-(10**9), max_value=-1), parts=part_counts)
def test_negative_totals_split_to_negative_parts_that_sum_exactly(total, parts):
    split = allocate(total, [1] * parts)
    assert sum(split) == total
    assert all(p <= 0 for p in split)


def test_equal_split_worked_example():
    assert [m.amount_str() for m in Money.parse("100.00", "EUR").split(3)] == [
        "33.34",
        "33.33",
        "33.33",
    ]


@pytest.mark.parametrize(
    ("currency", "text", "minor"),
    [
        ("EUR", "123.45", 12345),
        ("EUR", "7", 700),
        ("JPY", "1500", 1500),
        ("KWD", "1.234", 1234),
        ("EUR", "0.1", 10),
    ],
)
def test_parse_is_exact_in_minor_units(currency, text, minor):
    assert Money.parse(text, currency) == Money(minor, currency)


@pytest.mark.parametrize(
    ("currency", "text", "code"),
    [
        ("EUR", "1.234", "money.too_many_decimals"),
        ("JPY", "1.5", "money.too_many_decimals"),
        ("XXX", "1", "money.unknown_currency"),
        ("EUR", "abc", "money.invalid"),
        ("EUR", "NaN", "money.invalid"),
        ("EUR", "Infinity", "money.invalid"),
        ("EUR", str(MAX_MINOR), "money.too_large"),
    ],
)
def test_parse_refuses_what_is_not_exact_money(currency, text, code):
    with pytest.raises(MoneyError) as excinfo:
        Money.parse(text, currency)
    assert excinfo.value.code == code


def test_float_never_becomes_money():
    with pytest.raises(MoneyError):
        Money.parse(0.1, "EUR")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Money(1.0, "EUR")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Money(100, "EUR") * Decimal("1.5")  # type: ignore[operator]


def test_arithmetic_refuses_mixed_currencies():
    with pytest.raises(ValueError, match="currency mismatch"):
        Money(1, "EUR") + Money(1, "USD")


@pytest.mark.parametrize(
    ("value", "currency", "minor"),
    [
        (Decimal("0.125"), "EUR", 12),  # half to even: down to the even cent
        (Decimal("0.135"), "EUR", 14),  # half to even: up to the even cent
        (Decimal("2.5"), "JPY", 2),
        (Decimal("1.0005"), "KWD", 1000),
    ],
)
def test_to_minor_rounds_half_to_even(value, currency, minor):
    assert to_minor(value, currency) == minor
