"""Reads of collections: the settings record, what is due, a run's totals."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Sum, Value
from django.db.models.functions import Coalesce

from bnpl.models import DebitRequest, DebitRequestStatus, Plan, PlanStatus
from collections_.models import (
    AttemptStatus,
    CollectionsSettings,
    DebitAttempt,
    DebitRun,
    FailureClass,
)
from core import clock
from payments.selectors import payment_method_saved


def collections_settings() -> CollectionsSettings:
    """The one settings record (primary key 1), created with the defaults on first use."""
    found, _ = CollectionsSettings.objects.get_or_create(pk=1)
    return found


def run_cutoff(business_date: date) -> datetime:
    """The end of ``business_date`` in the business time zone: requests due before it run."""
    return datetime.combine(business_date + timedelta(days=1), time.min, tzinfo=clock.business_tz())


def request_due(*, cutoff: datetime) -> Q:
    """A debit request's own part of being due: scheduled, and its next attempt before
    ``cutoff``. A request with an attempt in flight has no ``next_attempt_at``."""
    return Q(status=DebitRequestStatus.SCHEDULED, next_attempt_at__lt=cutoff)


def plan_debits_run(prefix: str = "") -> Q:
    """A plan's part of being due: active, its debits not paused (a dispute). ``prefix``
    reaches the plan through a relation (``"plan__"``)."""
    return Q(**{f"{prefix}status": PlanStatus.ACTIVE, f"{prefix}debits_paused": False})


def due_requests(*, cutoff: datetime) -> QuerySet[DebitRequest]:
    """Scheduled debit requests due before ``cutoff`` on active plans whose debits run
    (``request_due`` on the request, ``plan_debits_run`` on its plan)."""
    return DebitRequest.objects.filter(request_due(cutoff=cutoff), plan_debits_run("plan__"))


@dataclass(frozen=True)
class PlanDebiting:
    """What a claim reads of a plan whose debits run: its currency, and the token its card
    is charged with when that is one of the plan customer's saved cards ("" otherwise)."""

    currency: str
    owned_token: str


def plans_debiting(plan_ids: Iterable[int]) -> dict[int, PlanDebiting]:
    """Of ``plan_ids``, the plans whose debits run (active, not paused), by id.

    By id, through the primary key's index: for a claim that has its requests already,
    rather than a join the planner may make by reading every plan. Whether the plan's card
    is its customer's (``payments.selectors.payment_method_saved``) is read in the same
    query, so checking it costs the claim nothing."""
    rows = (
        Plan.objects.filter(plan_debits_run(), pk__any=list(plan_ids))
        .annotate(
            owned=payment_method_saved(
                customer_id=OuterRef("customer_id"), token=OuterRef("payment_method")
            )
        )
        .order_by()
        .values_list("pk", "currency", "payment_method", "owned")
    )
    return {
        pk: PlanDebiting(currency, token if owned else "") for pk, currency, token, owned in rows
    }


def due_request_id_pages(*, cutoff: datetime, page_size: int) -> Iterator[list[int]]:
    """The ids of ``due_requests``, ascending, ``page_size`` at a time (keyset over ids).

    One query per page; memory holds one page, whatever the day's volume.
    """
    last = 0
    while True:
        page = list(
            due_requests(cutoff=cutoff)
            .filter(pk__gt=last)
            .order_by("pk")
            .values_list("pk", flat=True)[:page_size]
        )
        if not page:
            return
        yield page
        last = page[-1]


def technical_retries_due(*, now: datetime, limit: int) -> list[int]:
    """Requests whose last attempt failed for a technical reason and whose retry is due."""
    last_technical = DebitAttempt.objects.filter(
        request_id=OuterRef("pk"),
        attempt_no=OuterRef("attempts_made"),
        failure_class=FailureClass.TECHNICAL,
    )
    return list(
        due_requests(cutoff=now)
        .filter(attempts_made__gt=0)
        .filter(Exists(last_technical))
        .order_by("next_attempt_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )


def attempts_to_reconcile(*, now: datetime, pending_older_than: timedelta, limit: int) -> list[int]:
    """Attempts without a known outcome that are due a question to the provider.

    A ``pending`` attempt is left to its worker for ``pending_older_than`` after ``sent_at``
    (a charge still on the wire must not be declared unknown to the provider), or after its
    claim if it has none (claimed by an earlier version and never sent). ``unknown`` ones
    are asked about at their ``next_retry_at``.
    """
    since = now - pending_older_than
    return list(
        DebitAttempt.objects.filter(
            Q(status=AttemptStatus.PENDING, sent_at__lt=since)
            | Q(status=AttemptStatus.PENDING, sent_at__isnull=True, created_at__lt=since)
            | Q(status=AttemptStatus.UNKNOWN, next_retry_at__lte=now)
        )
        .order_by("pk")
        .values_list("pk", flat=True)[:limit]
    )


# --- a run's totals -------------------------------------------------------------------


@dataclass(frozen=True)
class Bucket:
    count: int = 0
    amount: int = 0  # minor units


@dataclass(frozen=True)
class RunTotals:
    """What became of a run's attempts: paid, failed for good, retrying, not yet known."""

    paid: Bucket
    failed: Bucket
    retrying: Bucket
    unknown: Bucket

    @property
    def attempted(self) -> int:
        return self.paid.count + self.failed.count + self.retrying.count + self.unknown.count


_OPEN = (AttemptStatus.PENDING, AttemptStatus.UNKNOWN)
_FILTERS = {
    "paid": Q(status=AttemptStatus.SUCCEEDED),
    "failed": Q(status=AttemptStatus.FAILED, next_retry_at__isnull=True),
    "retrying": Q(status=AttemptStatus.FAILED, next_retry_at__isnull=False),
    "unknown": Q(status__in=_OPEN),
}


def _aggregates(prefix: str = "") -> dict:
    out = {}
    for name, condition in _FILTERS.items():
        scoped = Q(**{f"{prefix}{k}": v for k, v in condition.children}) if prefix else condition
        out[f"{name}_count"] = Count(f"{prefix}pk" if prefix else "pk", filter=scoped)
        out[f"{name}_amount"] = Coalesce(Sum(f"{prefix}amount", filter=scoped), Value(0))
    return out


def run_totals(*, run_id: int) -> RunTotals:
    """One aggregate query over the run's attempts (counts and minor-unit amounts)."""
    row = DebitAttempt.objects.filter(run_id=run_id).aggregate(**_aggregates())
    return RunTotals(
        **{name: Bucket(row[f"{name}_count"], row[f"{name}_amount"]) for name in _FILTERS}
    )


def runs_with_totals() -> QuerySet[DebitRun]:
    """Runs annotated with ``<bucket>_count`` / ``<bucket>_amount``: one GROUP BY query."""
    return DebitRun.objects.annotate(**_aggregates("attempts__"))
