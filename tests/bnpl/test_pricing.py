"""Pricing of installment plans: properties for every method, worked examples written out."""

import itertools
from datetime import date, timedelta
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bnpl import pricing
from bnpl.pricing import (
    APR_CEILING,
    DOWN_PAYMENTS,
    FREQUENCIES,
    INTEREST_METHODS,
    Terms,
    annuity_payment,
    apply_promotion,
    due_date,
    periodic_rate,
    price_schedule,
)
from core.money import Money

CURRENCIES = ("JPY", "EUR", "KWD")  # exponents 0, 2 and 3


def eur(amount: str) -> int:
    return Money.parse(amount, "EUR").minor


@st.composite
def terms_strategy(draw, methods=INTEREST_METHODS):
    method = draw(st.sampled_from(methods))
    down = draw(st.sampled_from(DOWN_PAYMENTS))
    return Terms(
        currency=draw(st.sampled_from(CURRENCIES)),
        installment_count=draw(
            st.integers(min_value=2 if down == "first_installment" else 1, max_value=48)
        ),
        frequency=draw(st.sampled_from(FREQUENCIES)),
        down_payment=down,
        down_payment_percent=(
            draw(st.decimals(min_value="0.01", max_value="90", places=2))
            if down == "percent"
            else Decimal(0)
        ),
        interest_method=method,
        apr=(
            Decimal(0)
            if method == "zero"
            else draw(st.decimals(min_value="0.01", max_value="99.99", places=2))
        ),
        origination_fee_flat=draw(st.integers(min_value=0, max_value=5000)),
        origination_fee_percent=draw(st.decimals(min_value="0", max_value="5", places=2)),
        installment_fee=draw(st.integers(min_value=0, max_value=500)),
    )


starts = st.dates(min_value=date(2024, 1, 1), max_value=date(2032, 12, 31))
amounts = st.integers(min_value=1, max_value=10**9)


# --- an exact oracle: Fractions throughout, one half-even rounding at the end ---------

YEARS = {"weekly": Fraction(7, 365), "biweekly": Fraction(14, 365), "monthly": Fraction(1, 12)}


def half_even(value: Fraction) -> int:
    """The integer nearest ``value``, an exact tie to the even one."""
    floor = value.numerator // value.denominator
    twice_rest = 2 * (value - floor)
    if twice_rest > 1 or (twice_rest == 1 and floor % 2):
        return floor + 1
    return floor


def oracle_totals(terms: Terms, amount: int) -> tuple[int, int, int]:
    """(principal, interest, fees) of ``amount`` under ``terms``, worked out from the rules
    alone in exact arithmetic (no module function)."""
    n, pct = terms.installment_count, Fraction(terms.down_payment_percent)
    down = half_even(amount * pct / 100) if terms.down_payment == "percent" else 0
    financed = amount - down
    rate = Fraction(terms.apr) / 100 * YEARS[terms.frequency]
    interest = 0
    if terms.interest_method == "flat":
        interest = half_even(financed * rate * n)
    elif terms.interest_method == "declining":
        due = terms.down_payment == "first_installment"
        payment = financed * rate / (1 - (1 + rate) ** -n)
        payment = half_even(payment / (1 + rate) if due else payment)
        balance = financed
        for k in range(n):
            line_interest = half_even(balance * rate * (0 if due and k == 0 else 1))
            principal = balance if k == n - 1 else max(0, min(payment - line_interest, balance))
            balance -= principal
            interest += line_interest
    origination = terms.origination_fee_flat + half_even(
        financed * Fraction(terms.origination_fee_percent) / 100
    )
    return amount, interest, origination + n * terms.installment_fee


def check_invariants(schedule, amount):
    lines = schedule.lines
    terms = schedule.terms
    principal, interest, fees = oracle_totals(terms, amount)
    assert (schedule.principal, schedule.interest, schedule.fees) == (principal, interest, fees)
    assert sum(line.total for line in lines) == schedule.total == principal + interest + fees
    assert all(line.principal >= 0 and line.interest >= 0 and line.fee >= 0 for line in lines)
    assert all(a.due_date < b.due_date for a, b in itertools.pairwise(lines))
    numbered = [line for line in lines if line.number >= 1]
    assert [line.number for line in numbered] == list(range(1, terms.installment_count + 1))
    if interest + fees == 0:
        assert (schedule.apr, schedule.apr_status) == (0, "rate")
    else:
        # A plan that costs money never shows 0, and never shows the ceiling as its rate.
        assert schedule.apr is None or 0 < schedule.apr <= APR_CEILING
        assert (schedule.apr is None) == (schedule.apr_status != "rate")
    return numbered


@settings(max_examples=300, deadline=None)
@given(terms=terms_strategy(), amount=amounts, start=starts)
def test_every_method_sums_exactly_with_no_negative_part_and_increasing_dates(terms, amount, start):
    schedule = price_schedule(terms=terms, amount=Money(amount, terms.currency), start_date=start)
    numbered = check_invariants(schedule, amount)
    origination = numbered[0].fee - terms.installment_fee
    assert origination >= terms.origination_fee_flat
    assert all(line.fee == terms.installment_fee for line in numbered[1:])
    if terms.down_payment == "percent":
        assert schedule.lines[0].number == 0
        assert (schedule.lines[0].interest, schedule.lines[0].fee) == (0, 0)
        assert schedule.lines[0].due_date == start
    if terms.down_payment == "first_installment":
        assert numbered[0].due_date == start
    assert (
        schedule.financed_principal
        + (schedule.down_payment_line.principal if schedule.down_payment_line else 0)
        == amount
    )


@settings(max_examples=300, deadline=None)
@given(terms=terms_strategy(methods=("zero", "flat")), amount=amounts, start=starts)
def test_zero_and_flat_split_principal_and_interest_equally(terms, amount, start):
    schedule = price_schedule(terms=terms, amount=Money(amount, terms.currency), start_date=start)
    numbered = check_invariants(schedule, amount)
    principals = [line.principal for line in numbered]
    interests = [line.interest for line in numbered]
    assert max(principals) - min(principals) <= 1
    assert max(interests) - min(interests) <= 1
    # The remainder rule: the larger parts come first.
    assert principals == sorted(principals, reverse=True)
    if terms.interest_method == "zero":
        assert schedule.interest == 0


@settings(max_examples=300, deadline=None)
@given(
    terms=terms_strategy(methods=("declining",)),
    amount=st.integers(min_value=1000, max_value=10**9),
    start=starts,
)
def test_declining_balance_interest_is_the_rate_on_the_balance_still_owed(terms, amount, start):
    schedule = price_schedule(terms=terms, amount=Money(amount, terms.currency), start_date=start)
    numbered = check_invariants(schedule, amount)
    rate = Fraction(terms.apr) / 100 * YEARS[terms.frequency]
    due = terms.down_payment == "first_installment"
    balance = sum(line.principal for line in numbered)
    payment = int(
        annuity_payment(balance, periodic_rate(terms), terms.installment_count, due=due).quantize(
            Decimal(1), "ROUND_HALF_EVEN"
        )
    )
    for i, line in enumerate(numbered):
        elapsed = 0 if (i == 0 and due) else 1
        assert line.interest == half_even(balance * rate * elapsed)
        if i < len(numbered) - 1:
            # The level payment, unless the balance runs out first (rounding on tiny amounts).
            assert line.principal == max(0, min(payment - line.interest, balance))
        balance -= line.principal
    assert balance == 0


# Exact half-unit ties of interest, per frequency: (frequency, APR, amounts whose exact
# interest per period ends in .5 of a minor unit). Weekly at 36.5 %: amount × 7/1000 a week,
# a tie for odd multiples of 5.00; biweekly: × 14/1000, odd multiples of 2.50; monthly at
# 12 %: amount/100 a month, odd multiples of 0.50.
TIES = [("weekly", "36.5", 500), ("biweekly", "36.5", 250), ("monthly", "12", 50)]


@settings(max_examples=200, deadline=None)
@given(
    tie=st.sampled_from(TIES),
    odd=st.integers(min_value=0, max_value=10**6).map(lambda k: 2 * k + 1),
    method=st.sampled_from(("flat", "declining")),
)
def test_interest_ties_round_half_even_for_every_frequency(tie, odd, method):
    frequency, apr, unit = tie
    terms = Terms(
        currency="EUR",
        installment_count=1,
        frequency=frequency,
        interest_method=method,
        apr=Decimal(apr),
    )
    amount = unit * odd
    exact = amount * Fraction(apr) / 100 * YEARS[frequency]
    assert exact.denominator == 2  # a tie, exactly
    schedule = price_schedule(terms=terms, amount=Money(amount, "EUR"), start_date=date(2026, 1, 1))
    assert schedule.interest == half_even(exact) == round(exact)  # Python rounds half-even
    assert schedule.interest % 2 == 0


def test_weekly_flat_interest_of_exactly_half_a_cent_rounds_to_even():
    # 75.00 EUR, 1 weekly line at 36.5 % flat: 75.00 × 0.365 × 7/365 = 0.525 → 0.52.
    terms = Terms(
        currency="EUR", installment_count=1, frequency="weekly", interest_method="flat",
        apr=Decimal("36.5"),
    )  # fmt: skip
    schedule = price_schedule(
        terms=terms, amount=Money.parse("75.00", "EUR"), start_date=date(2026, 1, 1)
    )
    assert schedule.interest == eur("0.52")


@settings(max_examples=300, deadline=None)
@given(
    terms=terms_strategy(methods=("declining",)),
    amount=amounts,
    days=st.integers(min_value=-400, max_value=400),
)
def test_accrued_interest_is_the_exact_actual_365_accrual_rounded_half_even(terms, amount, days):
    exact = amount * Fraction(terms.apr) / 100 * Fraction(abs(days), 365)
    expected = half_even(exact) * (1 if days >= 0 else -1)
    assert pricing.accrued_interest(terms=terms, balance=amount, days=days) == expected


def test_a_week_of_accrual_of_exactly_half_a_cent_rounds_to_even():
    terms = Terms(
        currency="EUR", installment_count=3, interest_method="declining", apr=Decimal("36.5")
    )
    # 75.00 × 0.365 × 7/365 = 0.525 → 0.52, and back.
    assert pricing.accrued_interest(terms=terms, balance=eur("75.00"), days=7) == 52
    assert pricing.accrued_interest(terms=terms, balance=eur("75.00"), days=-7) == -52


@settings(max_examples=100, deadline=None)
@given(terms=terms_strategy(), amount=st.integers(min_value=10_000, max_value=10**9), start=starts)
def test_apr_is_the_rate_at_which_the_lines_repay_the_amount(terms, amount, start):
    schedule = price_schedule(terms=terms, amount=Money(amount, terms.currency), start_date=start)
    if schedule.apr_status != "rate" or schedule.apr <= Decimal("0.01"):
        return  # no rate, or the least one shown for a plan that costs anything
    period = {"weekly": Decimal(7) / 365, "biweekly": Decimal(14) / 365}.get(
        terms.frequency, Decimal(1) / 12
    )
    first = 0 if terms.down_payment in ("percent", "first_installment") else 1

    def present_value(percent: Decimal) -> Decimal:
        growth = 1 + percent / 100
        return sum(
            Decimal(line.total) / growth ** (period * (first + k))
            for k, line in enumerate(schedule.lines)
        )

    # The reported rate is the root rounded to two decimals.
    assert present_value(schedule.apr - Decimal("0.005")) >= amount
    assert present_value(schedule.apr + Decimal("0.005")) <= amount


@settings(max_examples=100, deadline=None)
@given(terms=terms_strategy(), amount=st.integers(min_value=10_000, max_value=10**9), start=starts)
def test_the_bisection_fallback_finds_the_same_apr_as_newton(terms, amount, start):
    schedule = price_schedule(terms=terms, amount=Money(amount, terms.currency), start_date=start)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pricing, "_NEWTON_STEPS", 1)  # Newton gives up at once
        again = price_schedule(terms=terms, amount=Money(amount, terms.currency), start_date=start)
    assert (again.apr, again.apr_status) == (schedule.apr, schedule.apr_status)


@settings(max_examples=200, deadline=None)
@given(terms=terms_strategy())
def test_terms_survive_a_json_round_trip(terms):
    data = terms.to_json()
    assert all(not isinstance(v, Decimal | float) for v in data.values())
    assert Terms.from_json(data) == terms


@settings(max_examples=300, deadline=None)
@given(start=starts, k=st.integers(min_value=0, max_value=120))
def test_monthly_due_dates_keep_the_start_day_clamped_to_the_month_end(start, k):
    due = due_date(start, "monthly", k)
    assert (due.year * 12 + due.month) - (start.year * 12 + start.month) == k
    last_day = ((due.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)).day
    assert due.day == min(start.day, last_day)


# --- worked examples ------------------------------------------------------------------


def test_zero_interest_with_25_percent_down_payment_and_three_monthly_installments():
    terms = Terms(
        currency="EUR",
        installment_count=3,
        down_payment="percent",
        down_payment_percent=Decimal("25"),
    )
    schedule = price_schedule(
        terms=terms, amount=Money.parse("1000.00", "EUR"), start_date=date(2026, 3, 15)
    )
    assert [
        (line.number, line.due_date, line.principal, line.interest, line.fee)
        for line in schedule.lines
    ] == [
        (0, date(2026, 3, 15), eur("250.00"), 0, 0),
        (1, date(2026, 4, 15), eur("250.00"), 0, 0),
        (2, date(2026, 5, 15), eur("250.00"), 0, 0),
        (3, date(2026, 6, 15), eur("250.00"), 0, 0),
    ]
    assert schedule.down_payment_line == schedule.lines[0]
    assert schedule.financed_principal == eur("750.00")
    assert (schedule.total, schedule.cost, schedule.apr) == (eur("1000.00"), 0, Decimal(0))


# 1,200.00 EUR over 12 months at 19.99 % a year, declining balance: r = 0.1999 / 12.
# PMT = 1200 · r / (1 − (1 + r)^−12) = 111.15566… → 111.16 a month.
ANNUITY_TABLE = [
    # number, due date, principal, interest, total
    (1, date(2026, 2, 28), "91.17", "19.99", "111.16"),
    (2, date(2026, 3, 31), "92.69", "18.47", "111.16"),
    (3, date(2026, 4, 30), "94.23", "16.93", "111.16"),
    (4, date(2026, 5, 31), "95.80", "15.36", "111.16"),
    (5, date(2026, 6, 30), "97.40", "13.76", "111.16"),
    (6, date(2026, 7, 31), "99.02", "12.14", "111.16"),
    (7, date(2026, 8, 31), "100.67", "10.49", "111.16"),
    (8, date(2026, 9, 30), "102.35", "8.81", "111.16"),
    (9, date(2026, 10, 31), "104.05", "7.11", "111.16"),
    (10, date(2026, 11, 30), "105.79", "5.37", "111.16"),
    (11, date(2026, 12, 31), "107.55", "3.61", "111.16"),
    (12, date(2027, 1, 31), "109.28", "1.82", "111.10"),  # the last line takes what is left
]


def test_declining_balance_at_19_99_percent_matches_the_annuity_formula_to_the_cent():
    terms = Terms(
        currency="EUR", installment_count=12, interest_method="declining", apr=Decimal("19.99")
    )
    schedule = price_schedule(
        terms=terms, amount=Money.parse("1200.00", "EUR"), start_date=date(2026, 1, 31)
    )
    assert [
        (line.number, line.due_date, line.principal, line.interest, line.total)
        for line in schedule.lines
    ] == [(n, d, eur(p), eur(i), eur(t)) for n, d, p, i, t in ANNUITY_TABLE]
    assert all(line.fee == 0 for line in schedule.lines)

    # The same numbers from the textbook formula, independently of the module.
    r = Decimal("0.1999") / 12
    payment = (Decimal("1200.00") * r / (1 - (1 + r) ** -12)).quantize(Decimal("0.01"))
    assert payment == Decimal("111.16")
    assert annuity_payment(eur("1200.00"), periodic_rate(terms), 12).quantize(1) == 11116
    balance = Decimal("1200.00")
    for line in schedule.lines:
        interest = (balance * r).quantize(Decimal("0.01"), "ROUND_HALF_EVEN")
        principal = payment - interest if line.number < 12 else balance
        assert (eur(str(principal)), eur(str(interest))) == (line.principal, line.interest)
        balance -= principal
    assert balance == 0

    assert (schedule.principal, schedule.interest, schedule.total) == (
        eur("1200.00"),
        eur("133.86"),
        eur("1333.86"),
    )
    # Effective annual rate of monthly 19.99 % compounding: (1 + r)^12 − 1 = 21.927… %.
    assert schedule.apr == Decimal("21.93")
    assert ((1 + r) ** 12 - 1).quantize(Decimal("0.0001")) == Decimal("0.2193")


def test_declining_balance_with_first_installment_at_checkout_is_an_annuity_due():
    terms = Terms(
        currency="EUR",
        installment_count=12,
        down_payment="first_installment",
        interest_method="declining",
        apr=Decimal("19.99"),
    )
    schedule = price_schedule(
        terms=terms, amount=Money.parse("1200.00", "EUR"), start_date=date(2026, 1, 31)
    )
    first, second = schedule.lines[0], schedule.lines[1]
    # PMT due = 111.15566… / (1 + r) = 109.3342… → 109.33; nothing accrues before line 1.
    assert (first.number, first.due_date, first.principal, first.interest) == (
        1,
        date(2026, 1, 31),
        eur("109.33"),
        0,
    )
    assert schedule.down_payment_line == first
    # Line 2 pays a month's interest on 1,200.00 − 109.33 = 1,090.67: 18.17.
    assert (second.due_date, second.interest, second.total) == (
        date(2026, 2, 28),
        eur("18.17"),
        eur("109.33"),
    )
    assert schedule.financed_principal == eur("1090.67")


def test_flat_interest_and_fees_worked_example():
    # 1,200.00 EUR, 12 months at 10 % flat: 1,200.00 × 10 % × 12/12 = 120.00, 10.00 a line.
    # Origination 2.00 + 1.5 % of 1,200.00 = 20.00 on line 1; 0.50 on every line.
    terms = Terms(
        currency="EUR",
        installment_count=12,
        interest_method="flat",
        apr=Decimal("10"),
        origination_fee_flat=eur("2.00"),
        origination_fee_percent=Decimal("1.5"),
        installment_fee=eur("0.50"),
    )
    schedule = price_schedule(
        terms=terms, amount=Money.parse("1200.00", "EUR"), start_date=date(2026, 1, 1)
    )
    assert schedule.lines[0].fee == eur("20.50")
    assert all(line.fee == eur("0.50") for line in schedule.lines[1:])
    assert all(
        (line.principal, line.interest) == (eur("100.00"), eur("10.00")) for line in schedule.lines
    )
    assert (schedule.interest, schedule.fees, schedule.total) == (
        eur("120.00"),
        eur("26.00"),
        eur("1346.00"),
    )
    assert schedule.cost == eur("146.00")
    assert Decimal("20") < schedule.apr < Decimal("30")


def test_flat_interest_weekly_counts_seven_days_of_365():
    # 100.00 EUR, 4 weekly lines at 36.5 % flat: 100.00 × 0.365 × 28/365 = 2.80.
    terms = Terms(
        currency="EUR", installment_count=4, frequency="weekly", interest_method="flat",
        apr=Decimal("36.5"),
    )  # fmt: skip
    schedule = price_schedule(
        terms=terms, amount=Money.parse("100.00", "EUR"), start_date=date(2026, 1, 1)
    )
    assert [line.interest for line in schedule.lines] == [70, 70, 70, 70]
    assert [line.due_date for line in schedule.lines] == [
        date(2026, 1, 8), date(2026, 1, 15), date(2026, 1, 22), date(2026, 1, 29)
    ]  # fmt: skip


def test_remainder_goes_to_the_earliest_lines():
    terms = Terms(currency="EUR", installment_count=3)
    schedule = price_schedule(
        terms=terms, amount=Money.parse("100.00", "EUR"), start_date=date(2026, 1, 1)
    )
    assert [line.principal for line in schedule.lines] == [eur("33.34"), eur("33.33"), eur("33.33")]


def test_currencies_without_and_with_three_decimals():
    jpy = price_schedule(
        terms=Terms(currency="JPY", installment_count=4),
        amount=Money.parse("10001", "JPY"),
        start_date=date(2026, 1, 1),
    )
    assert [line.principal for line in jpy.lines] == [2501, 2500, 2500, 2500]
    kwd = price_schedule(
        terms=Terms(currency="KWD", installment_count=3, interest_method="flat", apr=Decimal(12)),
        amount=Money.parse("100.000", "KWD"),
        start_date=date(2026, 1, 1),
    )
    # 100.000 × 12 % × 3/12 = 3.000 KWD, 1.000 a line.
    assert [(line.principal, line.interest) for line in kwd.lines] == [
        (33334, 1000), (33333, 1000), (33333, 1000)
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("start", "expected"),
    [
        (date(2026, 1, 31), [date(2026, 2, 28), date(2026, 3, 31), date(2026, 4, 30)]),
        (date(2028, 1, 31), [date(2028, 2, 29), date(2028, 3, 31), date(2028, 4, 30)]),
        (date(2026, 1, 30), [date(2026, 2, 28), date(2026, 3, 30), date(2026, 4, 30)]),
        (date(2026, 11, 30), [date(2026, 12, 30), date(2027, 1, 30), date(2027, 2, 28)]),
    ],
)
def test_monthly_due_dates_clamp_to_month_end_and_are_counted_from_the_start(start, expected):
    schedule = price_schedule(
        terms=Terms(currency="EUR", installment_count=3),
        amount=Money.parse("300.00", "EUR"),
        start_date=start,
    )
    assert [line.due_date for line in schedule.lines] == expected


def test_biweekly_due_dates():
    assert [due_date(date(2026, 2, 20), "biweekly", k) for k in range(3)] == [
        date(2026, 2, 20), date(2026, 3, 6), date(2026, 3, 20)
    ]  # fmt: skip


@pytest.mark.parametrize(
    "bad",
    [
        {"installment_count": 0},
        {"frequency": "daily"},
        {"down_payment": "percent", "down_payment_percent": Decimal(100)},
        {"down_payment": "first_installment", "installment_count": 1},
        {"interest_method": "zero", "apr": Decimal(5)},
        {"interest_method": "flat"},
        {"installment_fee": -1},
        {"apr": 5},
    ],
)
def test_inconsistent_terms_are_refused(bad):
    with pytest.raises(ValueError, match=r"must|need|only|have"):
        Terms(**({"currency": "EUR", "installment_count": 3} | bad))


def test_terms_from_json_refuses_unknown_fields_and_floats():
    data = Terms(currency="EUR", installment_count=3).to_json()
    with pytest.raises(ValueError, match="unknown terms field"):
        Terms.from_json(data | {"surprise": 1})
    with pytest.raises(ValueError, match="decimal string"):
        Terms.from_json(data | {"apr": 1.5})


def test_amount_in_another_currency_is_refused():
    with pytest.raises(ValueError, match="currency mismatch"):
        price_schedule(
            terms=Terms(currency="EUR", installment_count=3),
            amount=Money.parse("1", "JPY"),
            start_date=date(2026, 1, 1),
        )


def test_apr_counts_fees_as_cost_of_credit():
    # 1,200.00 EUR in 12 monthly lines without interest, 12.00 origination fee on line 1:
    # the rate i with 1200 = 112.00/(1+i)^(1/12) + Σ 100.00/(1+i)^(k/12), k = 2..12.
    schedule = price_schedule(
        terms=Terms(currency="EUR", installment_count=12, origination_fee_flat=eur("12.00")),
        amount=Money.parse("1200.00", "EUR"),
        start_date=date(2026, 1, 1),
    )
    assert schedule.lines[0].total == eur("112.00")

    def present_value(percent):
        i = percent / 100
        return sum(
            Decimal(line.total) / (1 + i) ** (Decimal(k + 1) / 12)
            for k, line in enumerate(schedule.lines)
        )

    # The rate rounded to two decimals: the exact root lies within half a hundredth of it.
    assert present_value(schedule.apr - Decimal("0.005")) > eur("1200.00")
    assert present_value(schedule.apr + Decimal("0.005")) < eur("1200.00")
    assert schedule.apr == Decimal("1.87")


def test_an_apr_above_the_ceiling_is_no_rate_not_the_ceiling():
    schedule = price_schedule(
        terms=Terms(currency="JPY", installment_count=1, frequency="weekly", installment_fee=5000),
        amount=Money(1, "JPY"),
        start_date=date(2026, 1, 1),
    )
    assert (schedule.apr, schedule.apr_status) == (None, "above_ceiling")


def first_installment_with_fee(fee: str):
    return price_schedule(
        terms=Terms(
            currency="EUR",
            installment_count=2,
            down_payment="first_installment",
            origination_fee_flat=eur(fee),
        ),
        amount=Money.parse("8.00", "EUR"),
        start_date=date(2026, 1, 1),
    )


def test_a_plan_that_costs_money_but_lends_nothing_has_no_finite_apr():
    # 8.00 + 4.00 at checkout covers the 8.00 bought; the 4.00 a month later is pure cost:
    # 12.00 + 4.00/(1+i)^(1/12) = 8.00 has no solution, so no rate, and never 0.
    schedule = first_installment_with_fee("4.00")
    assert [line.total for line in schedule.lines] == [eur("8.00"), eur("4.00")]
    assert schedule.cost == eur("4.00")
    assert (schedule.apr, schedule.apr_status) == (None, "no_finite_rate")


def test_a_fee_just_below_the_amount_gives_a_rate_beyond_the_ceiling_not_the_ceiling():
    # 7.99 at checkout, 4.00 a month later: 4.00/(1+i)^(1/12) = 0.01, i = 400^12 − 1.
    schedule = first_installment_with_fee("3.99")
    assert [line.total for line in schedule.lines] == [eur("7.99"), eur("4.00")]
    assert (schedule.apr, schedule.apr_status) == (None, "above_ceiling")


def test_a_plan_that_costs_a_cent_shows_at_least_the_least_rate():
    # 0.01 on 10 million over a year: about 1.8 × 10^−9 %, which would round to 0.00.
    schedule = price_schedule(
        terms=Terms(currency="EUR", installment_count=12, origination_fee_flat=1),
        amount=Money.parse("10000000.00", "EUR"),
        start_date=date(2026, 1, 1),
    )
    assert schedule.cost == 1
    assert (schedule.apr, schedule.apr_status) == (Decimal("0.01"), "rate")


DECLINING = Terms(
    currency="EUR",
    installment_count=6,
    interest_method="declining",
    apr=Decimal("19.99"),
    origination_fee_flat=500,
    installment_fee=100,
)


def test_promotions_change_the_terms_they_promise_and_nothing_else():
    zero = apply_promotion(DECLINING, kind="zero_interest", code="summer0")
    assert (zero.interest_method, zero.apr, zero.promotion) == ("zero", Decimal(0), "summer0")
    assert (zero.origination_fee_flat, zero.installment_fee) == (500, 100)

    reduced = apply_promotion(DECLINING, kind="reduced_apr", code="gold", apr=Decimal("9.9"))
    assert (reduced.interest_method, reduced.apr) == ("declining", Decimal("9.9"))
    to_zero = apply_promotion(DECLINING, kind="reduced_apr", code="gold", apr=Decimal(0))
    assert (to_zero.interest_method, to_zero.apr) == ("zero", Decimal(0))

    waived = apply_promotion(DECLINING, kind="fee_waived", code="nofee")
    assert (waived.origination_fee_flat, waived.installment_fee, waived.apr) == (
        0,
        0,
        Decimal("19.99"),
    )


def test_a_promotion_that_makes_nothing_cheaper_does_not_apply():
    free = Terms(currency="EUR", installment_count=3)
    assert apply_promotion(free, kind="zero_interest", code="x") is None
    assert apply_promotion(free, kind="fee_waived", code="x") is None
    assert apply_promotion(DECLINING, kind="reduced_apr", code="x", apr=Decimal("25")) is None
    assert apply_promotion(DECLINING, kind="reduced_apr", code="x", apr=Decimal("19.99")) is None
