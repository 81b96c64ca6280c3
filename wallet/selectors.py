from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from django.db.models import (
    Avg,
    CharField,
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Cast, Coalesce

from core import clock
from core.money import Money
from customers.models import Customer
from ledger.models import Account, Posting, Purpose
from wallet.bnpl import bnpl_settings, debt_amounts
from wallet.errors import DebtNotFound
from wallet.models import (
    DebtDailySnapshot,
    DebtResolution,
    DebtStatus,
    Wallet,
    WalletDebt,
    WalletTransaction,
)


def wallets_for_customer(*, customer: Customer) -> QuerySet[Wallet]:
    return Wallet.objects.filter(customer=customer).select_related("account").order_by("currency")


def debts_for_customer(*, customer: Customer, open_only: bool = False) -> QuerySet[WalletDebt]:
    debts = WalletDebt.objects.filter(wallet__customer=customer).select_related("wallet")
    if open_only:
        debts = debts.exclude(status=DebtStatus.REPAID)
    return debts.order_by("created_at", "id")


def debt_for_customer(*, customer: Customer, debt_id: int) -> WalletDebt:
    debt = debts_for_customer(customer=customer).filter(pk=debt_id).first()
    if debt is None:
        raise DebtNotFound()
    return debt


@dataclass(frozen=True)
class ActivityRow:
    created_at: datetime
    label: str
    # "credit", "debit", or "" for what does not move the balance (a BNPL purchase).
    direction: str
    amount: Money
    balance_after: Money | None


def activity_for_customer(*, customer: Customer, limit: int = 20) -> list[ActivityRow]:
    """The latest wallet movements and BNPL purchases, newest first. Two queries."""
    movements = (
        WalletTransaction.objects.filter(wallet__customer=customer)
        .select_related("wallet")
        .order_by("-created_at", "-id")[:limit]
    )
    rows = [
        ActivityRow(t.created_at, t.get_kind_display(), t.direction, t.money, t.balance_after_money)
        for t in movements
    ]
    purchases = (
        WalletDebt.objects.filter(wallet__customer=customer)
        .select_related("wallet")
        .order_by("-created_at", "-id")[:limit]
    )
    rows += [
        ActivityRow(
            d.created_at,
            f"Bought on BNPL (debt #{d.pk}, due {d.due_date:%-d %b %Y})",
            "",
            Money(d.principal, d.wallet.currency),
            None,
        )
        for d in purchases
    ]
    return sorted(rows, key=lambda row: row.created_at, reverse=True)[:limit]


def debt_totals() -> dict[str, int]:
    """Outstanding and overdue principal and the customers in debt, computed by the database.

    Minor units of the BNPL currency (debts in others are not added in); crystallized
    unpaid interest counts as outstanding.
    """
    remaining = F("principal") - F("principal_repaid") + F("interest_charged") - F("interest_paid")
    open_debts = WalletDebt.objects.exclude(status=DebtStatus.REPAID).filter(
        wallet__currency=bnpl_settings().currency
    )
    figures = open_debts.aggregate(
        outstanding=Sum(remaining),
        customers=Count("wallet__customer", distinct=True),
    )
    overdue = open_debts.filter(status=DebtStatus.OVERDUE).aggregate(total=Sum(remaining))
    return {
        "outstanding": figures["outstanding"] or 0,
        "customers": figures["customers"] or 0,
        "overdue": overdue["total"] or 0,
    }


def average_days_to_repay() -> float | None:
    """Mean of repaid_at − created_at over repaid debts; written-off ones are left out."""
    duration = ExpressionWrapper(F("repaid_at") - F("created_at"), output_field=DurationField())
    mean = WalletDebt.objects.filter(
        status=DebtStatus.REPAID, resolution=DebtResolution.REPAID
    ).aggregate(mean=Avg(duration))["mean"]
    return None if mean is None else round(mean / timedelta(days=1), 1)


def debt_history(days: int = 90) -> list[DebtDailySnapshot]:
    since = clock.business_date() - timedelta(days=days - 1)
    return list(DebtDailySnapshot.objects.filter(business_date__gte=since))


@dataclass(frozen=True)
class DebtView:
    """A debt as the customer sees it on ``on``: interest computed for that day."""

    id: int
    status: str
    resolution: str
    principal: Money
    principal_outstanding: Money
    interest_due: Money
    total_due: Money
    created_at: datetime
    due_date: date
    overdue_since: date | None
    repaid_at: datetime | None
    reference_type: str
    reference_id: str

    @property
    def is_open(self) -> bool:
        return self.status != DebtStatus.REPAID


def debt_views(debts: Iterable[WalletDebt], *, on: date | None = None) -> list[DebtView]:
    conf, on = bnpl_settings(), on or clock.business_date()
    views = []
    for debt in debts:
        currency = debt.wallet.currency
        owed = debt_amounts(debt, conf, on)
        views.append(
            DebtView(
                id=debt.pk,
                status=debt.status,
                resolution=debt.resolution,
                principal=Money(debt.principal, currency),
                principal_outstanding=Money(owed["principal"], currency),
                interest_due=Money(owed["interest"], currency),
                total_due=Money(owed["total"], currency),
                created_at=debt.created_at,
                due_date=debt.due_date,
                overdue_since=debt.overdue_since,
                repaid_at=debt.repaid_at,
                reference_type=debt.reference_type,
                reference_id=debt.reference_id,
            )
        )
    return views


def wallet_invariant_problems(limit: int) -> list[str]:
    """Wallet BNPL's invariants, registered with ``ledger.invariants`` (see apps.py).

    A debt never recovers more than was written off, and the ledger's write-off expense
    for it is its write-off less what was recovered; each customer's wallet BNPL
    receivable (``bnpl:<customer>:<ccy>``) holds exactly what their open debts still owe.
    """
    # What the ledger books to the write-off expense for each debt: its write-off less
    # what returns recovered (debit-normal, so postings add up directly).
    booked = (
        Posting.objects.filter(
            entry__reference_type="wallet.debt",
            entry__reference_id=Cast(OuterRef("pk"), CharField()),
            account__purpose=Purpose.WRITE_OFF_EXPENSE,
        )
        .order_by()
        .values("entry__reference_id")
        .annotate(total=Sum("amount"))
        .values("total")
    )
    problems = [
        f"wallet debt #{pk} books {net} to the write-off expense, not written off {written_off} "
        f"less recovered {recovered}"
        for pk, net, written_off, recovered in WalletDebt.objects.filter(
            Q(written_off__gt=0) | Q(recovered__gt=0)
        )
        .annotate(net=Coalesce(Subquery(booked), Value(0)))
        .exclude(net=F("written_off") - F("recovered"))
        .order_by("pk")
        .values_list("pk", "net", "written_off", "recovered")[:limit]
    ]
    problems += [
        f"wallet debt #{pk} recovered {recovered} of a {written_off} write-off"
        for pk, recovered, written_off in WalletDebt.objects.filter(
            Q(recovered__gt=F("written_off")) | Q(recovered__lt=0)
        )
        .order_by("pk")
        .values_list("pk", "recovered", "written_off")[:limit]
    ]
    owed = (
        WalletDebt.objects.filter(
            wallet__customer_id=OuterRef("customer_id"), wallet__currency=OuterRef("currency")
        )
        .exclude(status=DebtStatus.REPAID)
        .order_by()
        .values("wallet__customer_id")
        .annotate(
            total=Sum(
                F("principal") - F("principal_repaid") + F("interest_charged") - F("interest_paid")
            )
        )
        .values("total")
    )
    mismatched = (
        Account.objects.filter(purpose=Purpose.CUSTOMER_BNPL_RECEIVABLE, code__startswith="bnpl:")
        .annotate(owed=Coalesce(Subquery(owed), Value(0)))
        .exclude(balance=F("owed"))
        .order_by("pk")
        .values_list("code", "balance", "owed")[:limit]
    )
    problems += [
        f"receivable {code} holds {balance} but the open debts owe {owed_total}"
        for code, balance, owed_total in mismatched
    ]
    return problems[:limit]
