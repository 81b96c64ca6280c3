"""Pricing of installment plans: one pure function prices quotes, plans and reschedules.

No database, no clock: ``price_schedule(terms=…, amount=…, start_date=…)`` turns a plan's
``Terms`` and an order amount into a ``Schedule`` of lines (due date, principal, interest,
fee). Every amount is an ``int`` of minor units; rates are ``Decimal``.

Rules (the contract in the shared design, written out):

- **Remainder rule.** A total is split with ``core.money.allocate``: each part gets the floor
  of its exact share, the minor units left over go one each to the parts with the largest
  remainders, the earlier part first on a tie. Equal splits therefore differ by at most one
  minor unit and the larger parts come first: 100.00 in three is 33.34, 33.33, 33.33.
- **Rounding.** A computed amount becomes minor units only through ``core.money.to_minor``
  (half to even). Interest, percent fees and down payments are exact fractions until then
  (periods are exactly 7/365, 14/365 and 1/12 of a year; ``minor_of_fraction`` divides last),
  so an exact half-unit tie rounds to even: 75.00 at 36.5 % for a week is 0.525 → 0.52.
- **Due dates.** ``due_date(start, frequency, k)`` is the k-th due date counted from the start
  date, never chained from the previous one: weekly +7k days, biweekly +14k days, monthly +k
  months with the day clamped to the month's last day (Jan 31 → Feb 28/29 → Mar 31).
- **Down payment.** ``none``: lines 1..n fall due one period apart from one period after the
  start. ``first_installment``: the whole amount is split into n lines and line 1 falls due on
  the start date (charged at checkout). ``percent``: line 0 is
  ``to_minor(amount × percent / 100)``, due on the start date (charged at checkout), and the
  rest is split into lines 1..n due from one period after the start. Line 0 carries neither
  interest nor fees.
- **Financed amount.** The amount split into the n numbered lines: the order amount less a
  percent down payment (a first installment is one of the n lines).
- **Interest.** ``zero``: none. ``flat``: ``to_minor(apr/100 × financed × n × period)`` with the
  period in years (weekly 7/365, biweekly 14/365, monthly 1/12), split over the n lines with
  ``allocate``. ``declining``: amortization at the periodic rate ``r = apr/100 × period``; the
  level payment is the annuity ``PMT = P·r / (1 − (1+r)^−n)`` (payments in arrears) or
  ``P·r / ((1 − (1+r)^−n)(1+r))`` when line 1 is due on the start date (annuity due),
  computed in ``Decimal`` at 50 digits and rounded with ``to_minor``; each line's interest is
  ``to_minor(balance × r × periods elapsed since the previous line)``, its principal the
  payment less that interest, and the last line takes whatever principal is left, so the
  principal parts sum exactly to the financed amount. (On tiny amounts in a currency without
  decimals the rounded payment can pay the balance off early; the lines after it then owe
  only what is left, possibly nothing.)
- **Fees.** The origination fee (``origination_fee_flat`` + ``to_minor(financed ×
  origination_fee_percent / 100)``) is added to the fee of line 1, the first numbered line;
  ``installment_fee`` is added to every numbered line (never to line 0).
- **APR shown.** ``Schedule.apr`` is the effective annual rate of the whole cost of credit
  (interest and fees): the rate ``i`` at which the present value of every line's total
  equals the amount, each line discounted by ``(1+i)^−t`` with ``t`` its time after the start
  in years (a period is 1/12, 7/365 or 14/365 of a year, as in the EU consumer-credit APRC
  convention of equal months). It is found by Newton's method on the periodic rate to
  10^−12 (``effective_apr``) and reported in percent, rounded half-even to two decimals; a
  plan that costs anything shows at least 0.01 %. ``Schedule.apr_status`` says what the
  figure is: ``rate`` (the rate; 0 for a plan without cost), ``above_ceiling`` (the rate
  exceeds ``APR_CEILING``, 9,999.99 %: tiny amounts with large fees over a week reach absurd
  rates) or ``no_finite_rate`` (what is paid at checkout already covers the amount, so
  whatever follows is cost without credit). In the last two ``apr`` is ``None``: no figure is
  shown as if it were the rate.
"""

from __future__ import annotations

import calendar
import decimal
import itertools
import math
from dataclasses import dataclass, field, fields, replace
from datetime import date, timedelta
from decimal import Decimal
from fractions import Fraction
from typing import Any

from core.money import ROUNDING, Money, allocate, exponent, to_minor

WEEKLY, BIWEEKLY, MONTHLY = "weekly", "biweekly", "monthly"
FREQUENCIES = (WEEKLY, BIWEEKLY, MONTHLY)

DOWN_NONE, DOWN_FIRST_INSTALLMENT, DOWN_PERCENT = "none", "first_installment", "percent"
DOWN_PAYMENTS = (DOWN_NONE, DOWN_FIRST_INSTALLMENT, DOWN_PERCENT)

INTEREST_ZERO, INTEREST_FLAT, INTEREST_DECLINING = "zero", "flat", "declining"
INTEREST_METHODS = (INTEREST_ZERO, INTEREST_FLAT, INTEREST_DECLINING)

PROMO_ZERO_INTEREST, PROMO_REDUCED_APR, PROMO_FEE_WAIVED = (
    "zero_interest",
    "reduced_apr",
    "fee_waived",
)
PROMOTION_KINDS = (PROMO_ZERO_INTEREST, PROMO_REDUCED_APR, PROMO_FEE_WAIVED)

REFUND_LAST_FIRST, REFUND_RESPREAD = "last_first", "respread"
REFUND_ALLOCATIONS = (REFUND_LAST_FIRST, REFUND_RESPREAD)

MAX_INSTALLMENTS = 120

# A period's length in years, exact: flat interest, the declining-balance periodic rate and
# the APR. Amounts computed from it stay exact fractions until ``to_minor`` rounds them.
PERIOD_YEARS: dict[str, Fraction] = {
    WEEKLY: Fraction(7, 365),
    BIWEEKLY: Fraction(14, 365),
    MONTHLY: Fraction(1, 12),
}
DAYS_A_YEAR = 365  # actual/365: the day count of the 7/365 and 14/365 periods

# Working precision of rate arithmetic (annuity factor, APR search); amounts stay exact ints.
_CONTEXT = decimal.Context(prec=50, rounding=decimal.ROUND_HALF_EVEN)
_APR_TOLERANCE = Decimal("1e-12")
# Highest APR reported (percent): beyond it a rate says nothing more and fits no column.
APR_CEILING = Decimal("9999.99")
# What ``Schedule.apr`` is (module docstring, "APR shown").
APR_RATE, APR_ABOVE_CEILING, APR_NO_FINITE_RATE = "rate", "above_ceiling", "no_finite_rate"
APR_STATUSES = (APR_RATE, APR_ABOVE_CEILING, APR_NO_FINITE_RATE)
_APR_STEP = Decimal("0.01")
_HUNDRED = Decimal(100)
_NEWTON_STEPS = 60
# The periodic rate that annualizes to APR_CEILING, per frequency.
_CEILING_RATE = {
    frequency: _CONTEXT.subtract(
        _CONTEXT.power(
            _CONTEXT.add(1, APR_CEILING / _HUNDRED),
            _CONTEXT.divide(years.numerator, years.denominator),
        ),
        Decimal(1),
    )
    for frequency, years in PERIOD_YEARS.items()
}

_DECIMAL_FIELDS = frozenset(
    {"down_payment_percent", "apr", "origination_fee_percent", "late_fee_cap_plan_percent"}
)


@dataclass(frozen=True, kw_only=True)
class Terms:
    """The priced terms of a plan product after any promotion; a plan keeps a snapshot.

    Amounts are ``int`` minor units of ``currency``; percentages and the APR are ``Decimal``
    percent (``Decimal("19.99")`` is 19.99 % a year, nominal). The late-fee, refund and
    reschedule fields are carried for servicing and collections; pricing does not read them.
    """

    currency: str
    installment_count: int  # numbered lines, after any percent down payment
    frequency: str = MONTHLY
    down_payment: str = DOWN_NONE
    down_payment_percent: Decimal = Decimal(0)
    interest_method: str = INTEREST_ZERO
    apr: Decimal = Decimal(0)
    origination_fee_flat: int = 0
    origination_fee_percent: Decimal = Decimal(0)
    installment_fee: int = 0
    late_fee_amount: int = 0
    late_fee_grace_days: int = 0
    late_fee_cap_installment: int = 0
    late_fee_cap_plan_percent: Decimal = Decimal(25)
    refund_allocation: str = REFUND_LAST_FIRST
    reschedule_max_days: int = 0
    reschedule_max_count: int = 0
    reschedule_fee: int = 0
    promotion: str = ""  # code of the promotion that shaped these terms, "" for none

    def __post_init__(self) -> None:
        exponent(self.currency)  # unknown currency → MoneyError
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _DECIMAL_FIELDS:
                if not isinstance(value, Decimal) or not value.is_finite() or value < 0:
                    raise ValueError(f"{f.name} must be a non-negative finite Decimal")
            elif f.type == "int" and (type(value) is not int or value < 0):
                raise ValueError(f"{f.name} must be a non-negative int")
        if not 1 <= self.installment_count <= MAX_INSTALLMENTS:
            raise ValueError(f"installment_count must be within 1..{MAX_INSTALLMENTS}")
        if self.frequency not in FREQUENCIES:
            raise ValueError(f"frequency must be one of {FREQUENCIES}")
        if self.down_payment not in DOWN_PAYMENTS:
            raise ValueError(f"down_payment must be one of {DOWN_PAYMENTS}")
        if self.interest_method not in INTEREST_METHODS:
            raise ValueError(f"interest_method must be one of {INTEREST_METHODS}")
        if self.refund_allocation not in REFUND_ALLOCATIONS:
            raise ValueError(f"refund_allocation must be one of {REFUND_ALLOCATIONS}")
        if self.down_payment == DOWN_PERCENT and not 0 < self.down_payment_percent < _HUNDRED:
            raise ValueError("a percent down payment must be above 0 and below 100")
        if self.down_payment != DOWN_PERCENT and self.down_payment_percent != 0:
            raise ValueError("down_payment_percent is only for a percent down payment")
        if self.down_payment == DOWN_FIRST_INSTALLMENT and self.installment_count < 2:
            raise ValueError("a first-installment down payment needs at least 2 installments")
        if self.interest_method == INTEREST_ZERO and self.apr != 0:
            raise ValueError("zero-interest terms have an APR of 0")
        if self.interest_method != INTEREST_ZERO and self.apr == 0:
            raise ValueError("flat and declining interest need an APR above 0")
        if self.apr >= 1000:
            raise ValueError("apr must be below 1000 %")

    def to_json(self) -> dict[str, Any]:
        """Plain JSON: Decimals as strings, amounts as int minor units."""
        return {
            f.name: str(getattr(self, f.name))
            if f.name in _DECIMAL_FIELDS
            else getattr(self, f.name)
            for f in fields(self)
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Terms:
        """Inverse of ``to_json``; missing keys take their defaults, unknown keys are refused."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown terms field(s): {sorted(unknown)}")
        values: dict[str, Any] = {}
        for name, value in data.items():
            if name in _DECIMAL_FIELDS:
                if isinstance(value, float | bool):
                    raise ValueError(f"{name} must be a decimal string")
                value = Decimal(str(value))
            values[name] = value
        return cls(**values)

    def replace(self, **changes: Any) -> Terms:
        """A copy with ``changes`` applied (and validated)."""
        current = {f.name: getattr(self, f.name) for f in fields(self)}
        return Terms(**(current | changes))


@dataclass(frozen=True, slots=True)
class ScheduleLine:
    """One line of a schedule; amounts in minor units. Number 0 is a percent down payment."""

    number: int
    due_date: date
    principal: int
    interest: int
    fee: int

    @property
    def total(self) -> int:
        return self.principal + self.interest + self.fee


@dataclass(frozen=True)
class Schedule:
    terms: Terms
    amount: Money  # the order amount the schedule prices
    start_date: date
    lines: list[ScheduleLine] = field(default_factory=list)
    # Effective annual cost of credit in percent, None when no rate is shown (module docstring).
    apr: Decimal | None = Decimal(0)
    apr_status: str = APR_RATE

    @property
    def principal(self) -> int:
        return sum(line.principal for line in self.lines)

    @property
    def interest(self) -> int:
        return sum(line.interest for line in self.lines)

    @property
    def fees(self) -> int:
        return sum(line.fee for line in self.lines)

    @property
    def total(self) -> int:
        return sum(line.total for line in self.lines)

    @property
    def cost(self) -> int:
        """What credit costs the customer: interest plus fees, minor units."""
        return self.total - self.principal

    @property
    def down_payment_line(self) -> ScheduleLine | None:
        """The line charged at checkout: line 0 (percent) or line 1 (first installment)."""
        if self.terms.down_payment in (DOWN_PERCENT, DOWN_FIRST_INSTALLMENT):
            return self.lines[0]
        return None

    @property
    def financed_principal(self) -> int:
        """Principal still owed after checkout: the amount less the down payment line's."""
        down = self.down_payment_line
        return self.principal - (down.principal if down else 0)

    @property
    def scheduled_lines(self) -> list[ScheduleLine]:
        """The lines collected after checkout (the down payment line excluded)."""
        down = self.down_payment_line
        return [line for line in self.lines if line is not down]


def apply_promotion(
    terms: Terms, *, kind: str, code: str, apr: Decimal = Decimal(0)
) -> Terms | None:
    """``terms`` with a promotion applied, or ``None`` when it would change nothing.

    ``zero_interest`` removes interest; ``reduced_apr`` lowers the APR to ``apr`` (to zero
    interest at 0); ``fee_waived`` removes the origination and per-installment fees (late
    fees stay). A promotion that makes nothing cheaper (zero interest on a 0 % product, a
    "reduced" APR at or above the product's, fees waived where there are none) does not
    apply, so it never hides a promotion that would.
    """
    if kind == PROMO_ZERO_INTEREST:
        if terms.interest_method == INTEREST_ZERO:
            return None
        return terms.replace(interest_method=INTEREST_ZERO, apr=Decimal(0), promotion=code)
    if kind == PROMO_REDUCED_APR:
        if terms.interest_method == INTEREST_ZERO or apr >= terms.apr:
            return None
        if apr == 0:
            return terms.replace(interest_method=INTEREST_ZERO, apr=Decimal(0), promotion=code)
        return terms.replace(apr=apr, promotion=code)
    if kind == PROMO_FEE_WAIVED:
        if not (
            terms.origination_fee_flat or terms.origination_fee_percent or terms.installment_fee
        ):
            return None
        return terms.replace(
            origination_fee_flat=0,
            origination_fee_percent=Decimal(0),
            installment_fee=0,
            promotion=code,
        )
    raise ValueError(f"promotion kind must be one of {PROMOTION_KINDS}")


def due_date(start: date, frequency: str, k: int) -> date:
    """The k-th due date after ``start`` (k = 0 is the start date itself)."""
    if k < 0:
        raise ValueError("k must not be negative")
    if frequency == WEEKLY:
        return start + timedelta(days=7 * k)
    if frequency == BIWEEKLY:
        return start + timedelta(days=14 * k)
    if frequency == MONTHLY:
        months = start.month - 1 + k
        year, month = start.year + months // 12, months % 12 + 1
        return date(year, month, min(start.day, calendar.monthrange(year, month)[1]))
    raise ValueError(f"frequency must be one of {FREQUENCIES}")


def exact_periodic_rate(terms: Terms) -> Fraction:
    """The declining-balance rate per period, exact: ``apr / 100 × period in years``."""
    return Fraction(terms.apr) / 100 * PERIOD_YEARS[terms.frequency]


def periodic_rate(terms: Terms) -> Decimal:
    """``exact_periodic_rate`` at 50 digits, for the annuity factor and the APR search."""
    rate = exact_periodic_rate(terms)
    return _CONTEXT.divide(Decimal(rate.numerator), Decimal(rate.denominator))


def minor_of_fraction(value: Fraction, currency: str) -> int:
    """``to_minor`` of an exact amount in minor units: the one division, last.

    The quotient keeps two digits more than the numerator has, so it lies nearer its exact
    value than any half-unit tie it is not (a fraction ``p/q`` off a tie is off by ≥ 1/2q).
    """
    digits = len(str(abs(value.numerator))) + 2
    context = decimal.Context(prec=max(digits, 28), rounding=ROUNDING)
    with decimal.localcontext(context):
        quotient = context.divide(Decimal(value.numerator), Decimal(value.denominator))
        return to_minor(quotient.scaleb(-exponent(currency)), currency)


def accrued_interest(*, terms: Terms, balance: int, days: int) -> int:
    """Declining-balance interest on ``balance`` minor units for ``days`` (signed) at the
    terms' APR, actual/365, rounded by ``to_minor``; 0 without declining interest."""
    if terms.interest_method != INTEREST_DECLINING or days == 0 or balance <= 0:
        return 0
    minor = minor_of_fraction(
        Fraction(balance) * Fraction(terms.apr) / 100 * Fraction(abs(days), DAYS_A_YEAR),
        terms.currency,
    )
    return minor if days > 0 else -minor


def reschedule_interest(
    *, terms: Terms, balance: int, principal: int, days: int
) -> tuple[int, int]:
    """The one re-pricing rule for a line whose due date moves by ``days`` (signed).

    ``balance`` is the principal still owed from the moved line on, ``principal`` the moved
    line's unpaid part. Returns the changes to the moved line's interest (``balance``
    accrues for the days moved) and to the next open line's (the principal left after the
    moved line accrues the same days less). Zero and flat interest do not move with dates.
    """
    return (
        accrued_interest(terms=terms, balance=balance, days=days),
        -accrued_interest(terms=terms, balance=balance - principal, days=days),
    )


def schedule_on_due_dates(schedule: Schedule, due_dates: list[date]) -> Schedule:
    """``schedule`` with its later lines (all but the checkout line) moved to ``due_dates``,
    strictly increasing: each move re-priced in turn by ``reschedule_interest``, as if the
    customer had rescheduled every line at no fee, and the APR worked out again on the
    lines' actual dates (a line's time is its priced period plus the days it moved)."""
    terms, checkout_line = schedule.terms, schedule.down_payment_line
    later = [line for line in schedule.lines if line is not checkout_line]
    if len(due_dates) != len(later) or any(a >= b for a, b in itertools.pairwise(due_dates)):
        raise ValueError("due_dates must give each later installment a date, increasing")
    interest = [line.interest for line in later]
    for index, (line, new_date) in enumerate(zip(later, due_dates, strict=True)):
        grows, offset = reschedule_interest(
            terms=terms,
            balance=sum(other.principal for other in later[index:]),
            principal=line.principal,
            days=(new_date - line.due_date).days,
        )
        interest[index] = max(0, interest[index] + grows)
        following = next((j for j in range(index + 1, len(later)) if later[j].total), None)
        if following is not None:
            interest[following] = max(0, interest[following] + offset)
    moved = {
        line.number: replace(line, due_date=new_date, interest=new_interest)
        for line, new_date, new_interest in zip(later, due_dates, interest, strict=True)
    }
    lines = [moved.get(line.number, line) for line in schedule.lines]
    # One time unit that counts both whole periods and days: 1/lcm(period, day) of a year.
    period = PERIOD_YEARS[terms.frequency]
    unit = Fraction(1, math.lcm(period.denominator, DAYS_A_YEAR))
    flows = []
    for priced, line in zip(schedule.lines, lines, strict=True):
        years = _period_of(schedule, priced) * period + Fraction(
            (line.due_date - priced.due_date).days, DAYS_A_YEAR
        )
        flows.append((int(years / unit), line.total))
    apr, apr_status = effective_apr(
        amount=schedule.amount.minor, flows=flows, frequency=terms.frequency, unit=unit
    )
    return replace(schedule, lines=lines, apr=apr, apr_status=apr_status)


def _period_of(schedule: Schedule, line: ScheduleLine) -> int:
    """The period index ``price_schedule`` gave ``line`` (0: the start date)."""
    if line.number == 0:
        return 0
    first_period = 0 if schedule.terms.down_payment == DOWN_FIRST_INSTALLMENT else 1
    return first_period + line.number - 1


def annuity_payment(principal: int, rate: Decimal, count: int, *, due: bool = False) -> Decimal:
    """The exact level payment (minor units, unrounded) of ``principal`` over ``count`` periods.

    ``PMT = P·r / (1 − (1+r)^−n)``; paid at the start of each period (``due``) it is divided
    by ``1 + r``. A zero rate gives ``P / n``.
    """
    ctx = _CONTEXT
    p = Decimal(principal)
    if rate == 0:
        return ctx.divide(p, Decimal(count))
    growth = ctx.power(ctx.add(Decimal(1), rate), -count)
    payment = ctx.divide(ctx.multiply(p, rate), ctx.subtract(Decimal(1), growth))
    if due:
        payment = ctx.divide(payment, ctx.add(Decimal(1), rate))
    return payment


def _minor_of(value: Decimal, currency: str) -> int:
    """``to_minor`` for a value already in minor units."""
    return to_minor(value.scaleb(-exponent(currency)), currency)


def price_schedule(*, terms: Terms, amount: Money, start_date: date) -> Schedule:
    """Price ``amount`` under ``terms`` from ``start_date`` (rules: the module docstring)."""
    if amount.currency != terms.currency:
        raise ValueError(f"currency mismatch: terms {terms.currency}, amount {amount.currency}")
    if amount.minor <= 0:
        raise ValueError("amount must be positive")
    currency, n = terms.currency, terms.installment_count

    lines: list[ScheduleLine] = []
    financed = amount.minor
    if terms.down_payment == DOWN_PERCENT:
        down = minor_of_fraction(
            Fraction(amount.minor) * Fraction(terms.down_payment_percent) / 100, currency
        )
        lines.append(ScheduleLine(0, start_date, down, 0, 0))
        financed -= down
    # Period index of line k (1-based): when it falls due, counted in periods from the start.
    first_period = 0 if terms.down_payment == DOWN_FIRST_INSTALLMENT else 1
    periods = [first_period + i for i in range(n)]

    if terms.interest_method == INTEREST_DECLINING:
        principals, interests = _amortize(financed, terms, periods)
    else:
        principals = allocate(financed, [1] * n)
        interest_total = 0
        if terms.interest_method == INTEREST_FLAT:
            interest_total = minor_of_fraction(
                Fraction(financed) * Fraction(terms.apr) / 100 * n * PERIOD_YEARS[terms.frequency],
                currency,
            )
        interests = allocate(interest_total, [1] * n)

    origination = terms.origination_fee_flat + minor_of_fraction(
        Fraction(financed) * Fraction(terms.origination_fee_percent) / 100, currency
    )
    for i in range(n):
        fee = terms.installment_fee + (origination if i == 0 else 0)
        lines.append(
            ScheduleLine(
                number=i + 1,
                due_date=due_date(start_date, terms.frequency, periods[i]),
                principal=principals[i],
                interest=interests[i],
                fee=fee,
            )
        )
    flows = ([(0, lines[0].total)] if terms.down_payment == DOWN_PERCENT else []) + [
        (periods[i], line.total) for i, line in enumerate(lines[-n:])
    ]
    apr, apr_status = effective_apr(amount=amount.minor, flows=flows, frequency=terms.frequency)
    return Schedule(
        terms=terms,
        amount=amount,
        start_date=start_date,
        lines=lines,
        apr=apr,
        apr_status=apr_status,
    )


def _amortize(financed: int, terms: Terms, periods: list[int]) -> tuple[list[int], list[int]]:
    """Declining-balance principal and interest parts of the numbered lines (minor units)."""
    exact_rate = exact_periodic_rate(terms)
    n = len(periods)
    due = periods[0] == 0
    payment = _minor_of(annuity_payment(financed, periodic_rate(terms), n, due=due), terms.currency)
    balance, previous = financed, 0
    principals, interests = [], []
    for i, period in enumerate(periods):
        elapsed = period - previous
        previous = period
        interest = minor_of_fraction(balance * exact_rate * elapsed, terms.currency)
        # The last line takes what is left, so the principal parts sum exactly.
        principal = balance if i == n - 1 else max(0, min(payment - interest, balance))
        balance -= principal
        principals.append(principal)
        interests.append(interest)
    return principals, interests


def effective_apr(
    *, amount: int, flows: list[tuple[int, int]], frequency: str, unit: Fraction | None = None
) -> tuple[Decimal | None, str]:
    """The effective annual rate, in percent, at which ``flows`` repay ``amount``, and its
    ``apr_status`` (``None`` and why when no rate is shown).

    ``flows`` are ``(period index, total paid)`` pairs in minor units, period 0 being the
    start date; a period is ``unit`` years (by default one period of ``frequency``). It
    solves ``f(r) = Σ total·(1+r)^−period − amount = 0`` for the periodic rate ``r`` and
    annualizes it: ``(1+r)^(periods a year) − 1``. ``f`` falls and is convex, and
    ``f(0)`` (the cost) is positive, so Newton's steps from 0 rise monotonically towards the
    root without passing it: every step is a lower bound, and once it annualizes above
    ``APR_CEILING`` the rate is above the ceiling. Newton stops when a step is below 10^−12;
    a bisection takes over should it not within ``_NEWTON_STEPS``. Without cost the rate is
    0; with a cost but nothing lent after the start (``f`` stays positive) there is none.
    """
    ctx = _CONTEXT
    cost = sum(total for _, total in flows) - amount
    at_start = sum(total for period, total in flows if period == 0)
    if cost <= 0:
        return Decimal(0), APR_RATE
    if at_start >= amount:
        return None, APR_NO_FINITE_RATE
    by_period: dict[int, int] = {}
    for period, total in flows:
        by_period[period] = by_period.get(period, 0) + total
    dated = sorted((period, Decimal(total)) for period, total in by_period.items())
    target = Decimal(amount)
    one = Decimal(1)
    year = PERIOD_YEARS[frequency] if unit is None else unit
    periods_a_year = ctx.divide(Decimal(year.denominator), Decimal(year.numerator))
    ceiling = (
        _CEILING_RATE[frequency]
        if unit is None
        else ctx.subtract(
            ctx.power(
                ctx.add(1, APR_CEILING / _HUNDRED), ctx.divide(unit.numerator, unit.denominator)
            ),
            one,
        )
    )

    def annual_percent(rate: Decimal) -> Decimal:
        growth = ctx.power(ctx.add(one, rate), periods_a_year)
        return ctx.multiply(ctx.subtract(growth, one), _HUNDRED)

    def excess(rate: Decimal) -> tuple[Decimal, Decimal]:
        """``f(rate)`` and ``f'(rate)``."""
        discount = ctx.divide(one, ctx.add(one, rate))
        value, slope = -target, Decimal(0)
        factor, at = one, 0  # factor = discount ** at
        for period, total in dated:
            if at < period:  # a gap of many periods (days) at once
                factor, at = ctx.multiply(factor, ctx.power(discount, period - at)), period
            discounted = ctx.multiply(total, factor)
            value = ctx.add(value, discounted)
            slope = ctx.subtract(slope, ctx.multiply(discounted, period * discount))
        return value, slope

    rate = Decimal(0)
    for _ in range(_NEWTON_STEPS):
        value, slope = excess(rate)
        step = ctx.divide(value, slope)  # negative: value > 0 > slope left of the root
        rate = ctx.subtract(rate, step)
        if rate > ceiling:
            return None, APR_ABOVE_CEILING
        if -step < _APR_TOLERANCE:
            break
    else:
        low, high = rate, ctx.multiply(ctx.add(rate, one), 2)
        while excess(high)[0] > 0:
            low, high = high, ctx.multiply(high, 2)
        while high - low > _APR_TOLERANCE:
            middle = ctx.divide(ctx.add(low, high), Decimal(2))
            if excess(middle)[0] > 0:
                low = middle
            else:
                high = middle
        rate = ctx.divide(ctx.add(low, high), Decimal(2))
    percent = annual_percent(rate).quantize(_APR_STEP, rounding=ROUNDING)
    if percent > APR_CEILING:
        return None, APR_ABOVE_CEILING
    return max(percent, _APR_STEP), APR_RATE
