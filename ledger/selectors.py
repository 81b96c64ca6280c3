"""Reads of the ledger, above all the consistency check behind ``ledger_verify``."""

from __future__ import annotations

from django.db.models import Case, Count, F, IntegerField, OuterRef, Q, Subquery, Sum, Value, When
from django.db.models.functions import Coalesce

from ledger.models import Account, JournalEntry, Posting


def ledger_problems(limit: int = 20) -> list[str]:
    """Every way the book disagrees with itself, first ones first; empty means clean.

    Checks: each entry sums to zero per currency and has at least two postings; each
    posting's currency is its account's; each account's cached balance equals the sum of
    its postings on its normal side; no non-negative account is below zero.
    """
    problems: list[str] = []

    unbalanced = (
        Posting.objects.values("entry_id", "currency")
        .annotate(total=Sum("amount"))
        .exclude(total=0)
        .order_by("entry_id", "currency")[:limit]
    )
    problems += [
        f"entry #{row['entry_id']} does not balance in {row['currency']}: "
        f"postings sum to {row['total']}"
        for row in unbalanced
    ]

    thin = JournalEntry.objects.annotate(n=Count("postings")).filter(n__lt=2).order_by("pk")[:limit]
    problems += [f"entry #{e.pk} has {e.n} posting(s)" for e in thin]

    wrong_currency = (
        Posting.objects.exclude(currency=F("account__currency"))
        .select_related("account")
        .order_by("pk")[:limit]
    )
    problems += [
        f"posting #{p.pk} is in {p.currency} but account {p.account.code} is in "
        f"{p.account.currency}"
        for p in wrong_currency
    ]

    posted = (
        Posting.objects.filter(account=OuterRef("pk"))
        .order_by()
        .values("account")
        .annotate(total=Sum("amount"))
        .values("total")
    )
    accounts = (
        Account.objects.annotate(raw=Coalesce(Subquery(posted), Value(0)))
        .annotate(
            expected=Case(
                When(normal_side="debit", then=F("raw")),
                default=-F("raw"),
                output_field=IntegerField(),
            )
        )
        .filter(~Q(balance=F("expected")) | Q(non_negative=True, balance__lt=0))
        .order_by("pk")[:limit]
    )
    problems += [
        f"account {a.code} caches balance {a.balance} but its postings give {a.expected}"
        for a in accounts
    ]
    return problems[:limit]
