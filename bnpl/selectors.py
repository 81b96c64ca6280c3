"""Reads of installment plans, scoped to their customer, and the income-day inference.

- ``plans_for_customer`` / ``plan_for_customer``: another customer's plan does not exist
  (``bnpl.plan_not_found``, a 404).
- ``plan_view``: the live schedule as of a business date: each installment's parts, what is
  paid and outstanding, and its state (paid, due today, overdue, scheduled, cancelled,
  written off); totals and the next installment due. Two queries for a plan with any
  number of installments (the plan, its installments).
- ``income_inference``: the customer's observed income days, inferred from the wallet
  top-ups of the last months, with the evidence (which credits, how many months, the
  confidence), and ``suggested_due_dates`` that align a schedule's due dates with them.

Income rule (documented, deterministic): a top-up counts toward day ``d`` of the month when
it lands within ``INCOME_TOLERANCE_DAYS`` of ``d`` (``d`` clamped to the month's last day).
Day ``d`` is an income day when top-ups near it recur in at least ``INCOME_MIN_MONTHS``
distinct months of the lookback window; the best day is the one recurring in the most
months, then the one with the smallest total distance, then the earliest. A second income
day is looked for among the top-ups the first did not explain. Confidence is the share of
the observed months (from the first to the last top-up's month) that had a top-up near the
best day. A suggested due date is ``ALIGN_OFFSET_DAYS`` after an income day, the candidate
nearest to the priced date within ``MAX_ALIGN_SHIFT_DAYS``; only monthly schedules are
aligned (a weekly or biweekly plan pays several times between two monthly incomes).
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal

from django.db.models import (
    Case,
    CharField,
    F,
    OuterRef,
    Prefetch,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)
from django.db.models.expressions import CombinedExpression
from django.db.models.functions import Cast, Coalesce

from bnpl import pricing
from bnpl.errors import PlanNotFound
from bnpl.models import (
    ApplicationStatus,
    BorrowerProfile,
    CreditApplication,
    Installment,
    InstallmentStatus,
    Plan,
    PlanProduct,
    PlanRecovery,
    PlanStatus,
)
from core import clock
from core.money import Money
from customers.models import Customer
from ledger.models import Account, Posting, Purpose
from wallet.models import Direction, TransactionKind, WalletTransaction

# --- plans ----------------------------------------------------------------------------


def installment_outstanding() -> CombinedExpression:
    """What an installment still owes (minor units), as an expression over its own
    columns: ``Installment.outstanding`` for queries (``.annotate(owed=…)``)."""
    return (
        F("principal")
        + F("interest")
        + F("fee")
        + F("late_fee")
        - F("paid_principal")
        - F("paid_interest")
        - F("paid_fee")
        - F("paid_late_fee")
    )


def plans_for_customer(*, customer: Customer) -> QuerySet[Plan]:
    """The customer's plans, newest first, with their installments in number order."""
    return (
        Plan.objects.filter(customer=customer)
        .prefetch_related(Prefetch("installments", queryset=Installment.objects.order_by("number")))
        .order_by("-created_at", "-id")
    )


def plan_for_customer(*, customer: Customer, plan_id: int) -> Plan:
    plan = plans_for_customer(customer=customer).filter(pk=plan_id).first()
    if plan is None:
        raise PlanNotFound()
    return plan


# What a customer sees for an installment.
PAID, DUE, OVERDUE, SCHEDULED = "paid", "due", "overdue", "scheduled"
CANCELLED, WRITTEN_OFF = "cancelled", "written_off"


def installment_state(installment: Installment, today: date) -> str:
    """paid | due (falls due today) | overdue | scheduled | cancelled | written_off."""
    if installment.status == InstallmentStatus.PAID:
        return PAID
    if installment.status == InstallmentStatus.CANCELLED:
        return CANCELLED
    if installment.status == InstallmentStatus.WRITTEN_OFF:
        return WRITTEN_OFF
    if installment.status == InstallmentStatus.OVERDUE or installment.due_date < today:
        return OVERDUE
    if installment.due_date == today:
        return DUE
    return SCHEDULED


@dataclass(frozen=True)
class InstallmentView:
    number: int
    due_date: date
    original_due_date: date
    principal: Money
    interest: Money
    fee: Money
    late_fee: Money
    total: Money
    paid: Money
    outstanding: Money
    status: str


@dataclass(frozen=True)
class PlanView:
    id: int
    status: str
    currency: str
    amount: Money
    down_payment: Money
    apr: Decimal | None  # None: no rate shown, ``apr_status`` says why
    apr_status: str
    terms: dict
    start_date: date
    created_at: datetime
    reschedule_count: int
    reference_type: str
    reference_id: str
    as_of: date
    installments: list[InstallmentView] = field(default_factory=list)
    total: Money | None = None
    paid: Money | None = None
    outstanding: Money | None = None
    next_due: InstallmentView | None = None


def installment_view(installment: Installment, currency: str, today: date) -> InstallmentView:
    def m(minor: int) -> Money:
        return Money(minor, currency)

    return InstallmentView(
        number=installment.number,
        due_date=installment.due_date,
        original_due_date=installment.original_due_date,
        principal=m(installment.principal),
        interest=m(installment.interest),
        fee=m(installment.fee),
        late_fee=m(installment.late_fee),
        total=m(installment.total),
        paid=m(installment.paid),
        outstanding=m(installment.outstanding),
        status=installment_state(installment, today),
    )


def plan_view(
    plan: Plan,
    *,
    installments: Sequence[Installment] | None = None,
    today: date | None = None,
) -> PlanView:
    """The live schedule of ``plan`` (or of ``installments``, e.g. a proposed reschedule).

    Uses the prefetched installments when there are some: no query per installment.
    """
    today = today or clock.business_date()
    rows = list(installments if installments is not None else plan.installments.all())
    rows.sort(key=lambda i: i.number)
    views = [installment_view(i, plan.currency, today) for i in rows]
    owed = [v for v in views if v.status in (DUE, OVERDUE, SCHEDULED)]
    zero = Money.zero(plan.currency)
    return PlanView(
        id=plan.pk,
        status=plan.status,
        currency=plan.currency,
        amount=plan.amount_money,
        down_payment=Money(plan.down_payment, plan.currency),
        apr=plan.apr,
        apr_status=plan.apr_status,
        terms=plan.terms,
        start_date=plan.start_date,
        created_at=plan.created_at,
        reschedule_count=plan.reschedule_count,
        reference_type=plan.reference_type,
        reference_id=plan.reference_id,
        as_of=today,
        installments=views,
        total=sum((v.total for v in views), zero),
        paid=sum((v.paid for v in views), zero),
        outstanding=sum((v.outstanding for v in owed), zero),
        next_due=min(owed, key=lambda v: (v.due_date, v.number), default=None),
    )


def plan_views(plans: Iterable[Plan], *, today: date | None = None) -> list[PlanView]:
    today = today or clock.business_date()
    return [plan_view(plan, today=today) for plan in plans]


# --- income days ----------------------------------------------------------------------

INCOME_KINDS = (TransactionKind.TOP_UP,)
INCOME_LOOKBACK_MONTHS = 6
INCOME_TOLERANCE_DAYS = 2
INCOME_MIN_MONTHS = 3
MAX_INCOME_DAYS = 2
ALIGN_OFFSET_DAYS = 1
MAX_ALIGN_SHIFT_DAYS = 15


@dataclass(frozen=True)
class IncomeCredit:
    on: date
    amount: Money
    kind: str


@dataclass(frozen=True)
class IncomeDay:
    day: int  # of the month, clamped to the month's last day
    months: int  # distinct months with a top-up near it
    credits: list[IncomeCredit]


@dataclass(frozen=True)
class IncomeInference:
    since: date
    until: date
    credits_considered: int
    months_observed: int
    days: list[IncomeDay]
    confidence: Decimal  # 0..1: share of the observed months that had the best day
    explanation: str

    @property
    def found(self) -> bool:
        return bool(self.days)


def months_before(day: date, months: int) -> date:
    """``day`` moved back ``months`` calendar months, clamped to the month end."""
    index = day.year * 12 + day.month - 1 - months
    year, month = divmod(index, 12)
    month += 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def _month_day(year: int, month: int, day: int) -> date:
    return date(year, month, min(day, calendar.monthrange(year, month)[1]))


def _distance(credit: IncomeCredit, day: int) -> int:
    return abs(credit.on.day - min(day, calendar.monthrange(credit.on.year, credit.on.month)[1]))


def _best_day(credits: list[IncomeCredit]) -> IncomeDay | None:
    best: tuple[tuple[int, int, int], IncomeDay] | None = None
    for day in range(1, 32):
        near = [c for c in credits if _distance(c, day) <= INCOME_TOLERANCE_DAYS]
        months = len({(c.on.year, c.on.month) for c in near})
        if months < INCOME_MIN_MONTHS:
            continue
        score = (-months, sum(_distance(c, day) for c in near), day)
        if best is None or score < best[0]:
            best = (score, IncomeDay(day=day, months=months, credits=near))
    return best[1] if best else None


def infer_income_days(
    credits: Sequence[IncomeCredit], *, since: date, until: date
) -> IncomeInference:
    """Pure: the income days the ``credits`` (between ``since`` and ``until``) show."""
    credits = sorted(credits, key=lambda c: c.on)
    observed = 0
    if credits:
        first, last = credits[0].on, credits[-1].on
        observed = (last.year - first.year) * 12 + last.month - first.month + 1
    days: list[IncomeDay] = []
    left = list(credits)
    while len(days) < MAX_INCOME_DAYS:
        found = _best_day(left)
        if found is None:
            break
        days.append(found)
        left = [c for c in left if c not in found.credits]
    confidence = (
        (Decimal(days[0].months) / Decimal(observed)).quantize(Decimal("0.01"))
        if days
        else Decimal(0)
    )
    if days:
        parts = [
            f"day {d.day} (top-ups in {d.months} of {observed} months: "
            + ", ".join(f"{c.on:%Y-%m-%d} {c.amount}" for c in d.credits)
            + ")"
            for d in days
        ]
        explanation = (
            f"{len(credits)} wallet top-ups between {since} and {until}; income recurs on "
            + "; ".join(parts)
            + f". Confidence {confidence}: the share of observed months with a top-up "
            f"within {INCOME_TOLERANCE_DAYS} days of day {days[0].day}."
        )
    else:
        explanation = (
            f"{len(credits)} wallet top-ups between {since} and {until}: no day of the month "
            f"has top-ups (within {INCOME_TOLERANCE_DAYS} days) in {INCOME_MIN_MONTHS} or "
            "more months, so no income day is inferred."
        )
    return IncomeInference(
        since=since,
        until=until,
        credits_considered=len(credits),
        months_observed=observed,
        days=days,
        confidence=confidence,
        explanation=explanation,
    )


def income_inference(
    *, customer: Customer, currency: str, months: int = INCOME_LOOKBACK_MONTHS
) -> IncomeInference:
    """The customer's income days from their wallet top-ups of the last ``months``. One query."""
    until = clock.business_date()
    since = months_before(until, months)
    tz = clock.business_tz()
    rows = WalletTransaction.objects.filter(
        wallet__customer_id=customer.pk,
        wallet__currency=currency,
        direction=Direction.CREDIT,
        kind__in=INCOME_KINDS,
        created_at__gte=datetime.combine(since, time.min, tzinfo=tz),
    ).values_list("created_at", "amount", "kind")
    credits = [
        IncomeCredit(on=at.astimezone(tz).date(), amount=Money(amount, currency), kind=kind)
        for at, amount, kind in rows
    ]
    return infer_income_days(credits, since=since, until=until)


def _aligned(day: date, income_days: Sequence[int]) -> date | None:
    """The income-aligned date nearest ``day`` (a later one on a tie), if close enough."""
    candidates = []
    for income_day in income_days:
        for shift in (-1, 0, 1):
            index = day.year * 12 + day.month - 1 + shift
            year, month = divmod(index, 12)
            aligned = _month_day(year, month + 1, income_day) + timedelta(days=ALIGN_OFFSET_DAYS)
            distance = abs((aligned - day).days)
            if distance <= MAX_ALIGN_SHIFT_DAYS:
                candidates.append((distance, aligned < day, aligned))
    return min(candidates)[2] if candidates else None


def align_due_dates(
    dates: Sequence[date], *, income_days: Sequence[int], after: date, frequency: str
) -> list[date]:
    """Pure: ``dates`` moved to income-aligned days where that keeps them after ``after``
    and strictly increasing; a date that cannot move keeps its priced value."""
    if frequency != pricing.MONTHLY or not income_days:
        return list(dates)
    result: list[date] = []
    previous = after
    for index, day in enumerate(dates):
        following = dates[index + 1] if index + 1 < len(dates) else None
        moved = _aligned(day, income_days)
        if moved is None or moved <= previous or (following is not None and moved >= following):
            moved = day
        result.append(moved)
        previous = moved
    return result


def suggested_due_dates(*, customer: Customer, schedule: pricing.Schedule) -> list[date] | None:
    """Income-aligned due dates for the lines of ``schedule`` collected after checkout.

    One date per ``schedule.scheduled_lines`` (the shape ``bnpl.services.plan_create`` takes
    as ``due_dates``), or ``None`` when no income day is inferred or the schedule is not
    monthly. The customer's opt-in is not checked here (see ``income_aligned_due_dates``).
    """
    inference = income_inference(customer=customer, currency=schedule.terms.currency)
    if not inference.found or schedule.terms.frequency != pricing.MONTHLY:
        return None
    lines = schedule.scheduled_lines
    return align_due_dates(
        [line.due_date for line in lines],
        income_days=[d.day for d in inference.days],
        after=schedule.start_date,
        frequency=schedule.terms.frequency,
    )


def income_aligned_due_dates(
    *, customer: Customer, product: PlanProduct, schedule: pricing.Schedule
) -> list[date] | None:
    """``suggested_due_dates`` when the product is cash-flow aware and the customer opted in
    (``BorrowerProfile.income_aligned_dates``); otherwise ``None`` (keep the priced dates)."""
    if not product.cash_flow_aware:
        return None
    opted_in = BorrowerProfile.objects.filter(customer=customer, income_aligned_dates=True).exists()
    if not opted_in:
        return None
    return suggested_due_dates(customer=customer, schedule=schedule)


@dataclass(frozen=True)
class DateSuggestion:
    number: int
    due_date: date
    suggested: date
    within_policy: bool  # a reschedule to it would be allowed by the plan's terms


def plan_suggested_dates(*, plan: Plan) -> tuple[IncomeInference, list[DateSuggestion]]:
    """Income-aligned dates for the plan's open installments, and whether the plan's
    reschedule policy allows moving each one there."""
    inference = income_inference(customer=Customer(pk=plan.customer_id), currency=plan.currency)
    terms = pricing.Terms.from_json(plan.terms)
    today = clock.business_date()
    rows = sorted(plan.installments.all(), key=lambda i: i.number)
    open_rows = [
        i
        for i in rows
        if i.status == InstallmentStatus.SCHEDULED and i.due_date > today and i.number > 0
    ]
    suggestions = []
    income_days = [d.day for d in inference.days]
    if terms.frequency == pricing.MONTHLY and income_days:
        for row in open_rows:
            moved = _aligned(row.due_date, income_days)
            if moved is None or moved == row.due_date:
                continue
            before = [i.due_date for i in rows if i.number < row.number]
            after = [i.due_date for i in rows if i.number > row.number]
            ordered = (not before or moved > max(before)) and (not after or moved < min(after))
            within = (
                ordered
                and moved > today
                and abs((moved - row.original_due_date).days) <= terms.reschedule_max_days
                and plan.reschedule_count < terms.reschedule_max_count
            )
            suggestions.append(DateSuggestion(row.number, row.due_date, moved, within))
    return inference, suggestions


def payment_method_users(customer_id: int, token: str) -> str:
    """The customer's active plans and undecided applications still debited from ``token``
    (``payments.events.register_payment_method_user``): "" when none."""
    plans = list(
        Plan.objects.filter(
            customer_id=customer_id, payment_method=token, status=PlanStatus.ACTIVE
        ).values_list("pk", flat=True)
    )
    applications = CreditApplication.objects.filter(
        customer_id=customer_id,
        payment_method=token,
        status__in=(
            ApplicationStatus.PENDING,
            ApplicationStatus.REVIEW,
            ApplicationStatus.REFERRED,
        ),
    ).exists()
    named = [f"plan {pk}" for pk in plans]
    if applications:
        named.append("a credit application being decided")
    return ", ".join(named)


def plan_invariant_problems(limit: int) -> list[str]:
    """Installment plans' invariants, registered with ``ledger.invariants`` (see apps.py).

    A plan never recovers more than was written off, its recoveries add up to its
    ``recovered_amount``, the ledger's write-off expense for it is its write-off less
    what was recovered, and it never refunds more than its amount.
    """
    recoveries = (
        PlanRecovery.objects.filter(plan=OuterRef("pk"))
        .order_by()
        .values("plan")
        .annotate(total=Sum("amount"))
        .values("total")
    )
    # The write-off expense the ledger books for the plan: its write-off less recoveries.
    booked = (
        Posting.objects.filter(
            entry__reference_type="bnpl.plan",
            entry__reference_id=Cast(OuterRef("pk"), CharField()),
            account__purpose=Purpose.WRITE_OFF_EXPENSE,
        )
        .order_by()
        .values("entry__reference_id")
        .annotate(total=Sum("amount"))
        .values("total")
    )
    # Only a plan with something written off or recovered runs the two subqueries (a
    # recovery needs a write-off first); every other plan adds 0 for both.
    touched = Q(written_off_amount__gt=0) | Q(recovered_amount__gt=0)
    rows = (
        Plan.objects.annotate(
            recovered_sum=Case(
                When(touched, then=Coalesce(Subquery(recoveries), Value(0))), default=Value(0)
            ),
            booked=Case(When(touched, then=Coalesce(Subquery(booked), Value(0))), default=Value(0)),
        )
        .filter(
            Q(recovered_amount__gt=F("written_off_amount"))
            | ~Q(recovered_amount=F("recovered_sum"))
            | ~Q(booked=F("written_off_amount") - F("recovered_amount"))
            | Q(refunded_amount__gt=F("amount"))
        )
        .order_by("pk")
        .values_list(
            "pk",
            "written_off_amount",
            "recovered_amount",
            "recovered_sum",
            "booked",
            "refunded_amount",
            "amount",
        )[:limit]
    )
    return [
        f"plan #{pk}: written off {written_off}, recovered {recovered} "
        f"(recoveries sum to {summed}, the write-off expense holds {booked}), "
        f"refunded {refunded} of {amount}"
        for pk, written_off, recovered, summed, booked, refunded, amount in rows
    ]


# --- credits on the installment receivable -----------------------------------------------


def _open_principal(customer_id: object, currency: object) -> Coalesce:
    """The principal the customer's open installments in ``currency`` still owe, minor units
    (what the installment receivable holds when nothing was overpaid)."""
    owed = (
        Installment.objects.filter(
            plan__customer_id=customer_id,
            plan__currency=currency,
            status__in=[InstallmentStatus.SCHEDULED, InstallmentStatus.OVERDUE],
        )
        .order_by()
        .values("plan__customer_id")
        .annotate(owed=Sum(F("principal") - F("paid_principal")))
        .values("owed")
    )
    return Coalesce(Subquery(owed), 0)


def receivable_credit(*, customer_id: int, currency: str) -> int:
    """What the customer's installment receivable holds beyond what the open installments
    owe, minor units: positive is owed to the customer (an overpayment), negative is owed
    by the customer (a refunded overpayment already returned). One statement, one snapshot."""
    row = (
        Account.objects.filter(code=f"installments:{customer_id}:{currency}")
        .annotate(owed=_open_principal(customer_id, currency))
        .values_list("owed", "balance")
        .first()
    )
    return 0 if row is None else row[0] - row[1]


def receivables_off_balance() -> list[tuple[int, str]]:
    """(customer, currency) of every installment receivable holding more or less than the
    open installments owe: a credit to return to the wallet, or one to take back."""
    return list(
        Account.objects.filter(code__startswith="installments:")
        .annotate(owed=_open_principal(OuterRef("customer_id"), OuterRef("currency")))
        .exclude(owed=F("balance"))
        .order_by("pk")
        .values_list("customer_id", "currency")
    )


def receivable_refunds_to_take_back(*, customer_id: int, currency: str) -> int:
    """Overpayments a card refund took off the installment receivable that were not yet
    taken back from the wallet, minor units: the most ``plan_credit_return`` may take."""
    legs = Posting.objects.filter(account__code=f"installments:{customer_id}:{currency}")
    refunded = legs.filter(
        entry__kind__in=["bnpl.installment_refunded", "bnpl.payoff_refunded"]
    ).aggregate(total=Sum("amount"))["total"]
    taken_back = legs.filter(
        entry__kind="wallet.refund", entry__reference_type="bnpl.receivable", amount__lt=0
    ).aggregate(total=Sum("amount"))["total"]
    return (refunded or 0) + (taken_back or 0)
