"""Collections KPIs, aggregated in SQL (two queries whatever the volume).

Definitions (amounts in minor units, per currency):

- A debit request counts in the week (Monday) of its installment's due date once a debit
  was attempted (it has an attempt number 1).
- First-attempt success: its attempt 1 succeeded. Final success: the request is settled
  (the installment is paid, by a retry, an extra payment or any other way).
- Failed debits: attempt 1 failed; recovered: such a request settled afterwards. The
  recovery rate is recovered ÷ failed.
- Amounts by bucket: the unpaid amount (principal, interest, fees, late fees not yet paid)
  of active plans, by the plan's delinquency bucket ("" = current), and the part overdue.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

from django.db.models import BigIntegerField, Count, Q, Sum, Value
from django.db.models.functions import Coalesce, TruncWeek

from bnpl.models import (
    DebitRequest,
    DebitRequestStatus,
    Installment,
    InstallmentStatus,
    PlanStatus,
)
from bnpl.selectors import installment_outstanding
from collections_.buckets import buckets_parse
from collections_.models import AttemptStatus
from collections_.selectors import collections_settings


def rate(part: int, whole: int) -> Decimal | None:
    """``part`` ÷ ``whole`` in percent, two decimals (half-even); None without a whole."""
    if not whole:
        return None
    return (Decimal(part) * 100 / Decimal(whole)).quantize(
        Decimal("0.01"), rounding=ROUND_HALF_EVEN
    )


@dataclass(frozen=True)
class CollectionWeek:
    week: date | None  # the Monday; None on the totals row
    currency: str
    attempted: int
    paid_first_attempt: int
    paid: int
    failed_first_attempt: int
    recovered: int
    attempted_amount: int
    paid_first_attempt_amount: int
    failed_amount: int
    recovered_amount: int

    @property
    def first_attempt_rate(self) -> Decimal | None:
        return rate(self.paid_first_attempt, self.attempted)

    @property
    def final_rate(self) -> Decimal | None:
        return rate(self.paid, self.attempted)

    @property
    def recovery_rate(self) -> Decimal | None:
        return rate(self.recovered, self.failed_first_attempt)


_COUNTS = (
    "attempted",
    "paid_first_attempt",
    "paid",
    "failed_first_attempt",
    "recovered",
    "attempted_amount",
    "paid_first_attempt_amount",
    "failed_amount",
    "recovered_amount",
)


def _sum(condition: Q | None = None):
    return Coalesce(
        Sum("attempts__amount", filter=condition), Value(0), output_field=BigIntegerField()
    )


def collection_weeks(*, due_from: date, due_to: date) -> list[CollectionWeek]:
    """Success and recovery by due week and currency, for installments due in the range
    (both ends included). One query."""
    succeeded = Q(attempts__status=AttemptStatus.SUCCEEDED)
    failed = Q(attempts__status=AttemptStatus.FAILED)
    settled = Q(status=DebitRequestStatus.SETTLED)
    rows = (
        # The attempt join is restricted to attempt 1 here; the annotations below reuse it.
        DebitRequest.objects.filter(
            installment__due_date__gte=due_from,
            installment__due_date__lte=due_to,
            attempts__attempt_no=1,
        )
        .annotate(week=TruncWeek("installment__due_date"))
        .values("week", "plan__currency")
        .annotate(
            attempted=Count("pk"),
            paid_first_attempt=Count("pk", filter=succeeded),
            paid=Count("pk", filter=settled),
            failed_first_attempt=Count("pk", filter=failed),
            recovered=Count("pk", filter=failed & settled),
            attempted_amount=_sum(),
            paid_first_attempt_amount=_sum(succeeded),
            failed_amount=_sum(failed),
            recovered_amount=_sum(failed & settled),
        )
        .order_by("week", "plan__currency")
    )
    return [
        CollectionWeek(
            week=row["week"],
            currency=row["plan__currency"],
            **{name: row[name] for name in _COUNTS},
        )
        for row in rows
    ]


def collection_totals(weeks: list[CollectionWeek]) -> list[CollectionWeek]:
    """The weeks added up per currency."""
    totals: dict[str, dict[str, int]] = {}
    for week in weeks:
        into = totals.setdefault(week.currency, dict.fromkeys(_COUNTS, 0))
        for name in _COUNTS:
            into[name] += getattr(week, name)
    return [
        CollectionWeek(week=None, currency=currency, **values)
        for currency, values in sorted(totals.items())
    ]


@dataclass(frozen=True)
class BucketAmount:
    bucket: str  # "" = current
    currency: str
    plans: int
    outstanding: int  # minor units still to pay
    overdue: int  # of which on installments past due


def amounts_by_bucket() -> list[BucketAmount]:
    """What active plans still owe, by delinquency bucket and currency, in the settings'
    bucket order (current first). One query."""
    unpaid = installment_outstanding()
    rows = (
        Installment.objects.filter(
            plan__status=PlanStatus.ACTIVE,
            status__in=[InstallmentStatus.SCHEDULED, InstallmentStatus.OVERDUE],
        )
        .values("plan__delinquency_bucket", "plan__currency")
        .annotate(
            plans=Count("plan", distinct=True),
            outstanding=Coalesce(Sum(unpaid), Value(0), output_field=BigIntegerField()),
            overdue=Coalesce(
                Sum(unpaid, filter=Q(status=InstallmentStatus.OVERDUE)),
                Value(0),
                output_field=BigIntegerField(),
            ),
        )
    )
    order = {"": 0} | {
        b.name: i + 1 for i, b in enumerate(buckets_parse(collections_settings().buckets))
    }
    found = [
        BucketAmount(
            bucket=row["plan__delinquency_bucket"],
            currency=row["plan__currency"],
            plans=row["plans"],
            outstanding=row["outstanding"],
            overdue=row["overdue"],
        )
        for row in rows
    ]
    return sorted(found, key=lambda b: (order.get(b.bucket, len(order)), b.bucket, b.currency))


@dataclass(frozen=True)
class CollectionsReport:
    due_from: date
    due_to: date
    weeks: list[CollectionWeek]
    totals: list[CollectionWeek]
    buckets: list[BucketAmount]


def default_window(today: date) -> tuple[date, date]:
    """The 12 due weeks up to ``today``: from the Monday 11 weeks back, to today."""
    monday = today - timedelta(days=today.weekday())
    return monday - timedelta(weeks=11), today


def collections_report(*, due_from: date, due_to: date) -> CollectionsReport:
    """Everything the KPI endpoint and the admin page show: three queries."""
    weeks = collection_weeks(due_from=due_from, due_to=due_to)
    return CollectionsReport(
        due_from=due_from,
        due_to=due_to,
        weeks=weeks,
        totals=collection_totals(weeks),
        buckets=amounts_by_bucket(),
    )
