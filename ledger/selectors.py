"""Reads of the ledger, above all the consistency check behind ``ledger_verify``."""

from __future__ import annotations

from django.db.models import Case, Count, F, IntegerField, OuterRef, Q, Subquery, Sum, Value, When
from django.db.models.functions import Coalesce

from ledger.invariants import invariant_problems
from ledger.models import EITHER_SIGN, Account, JournalEntry, Posting


def ledger_problems(limit: int = 20) -> list[str]:
    """Every way the book disagrees with itself, first ones first; empty means clean.

    Checks: each entry sums to zero per currency and has at least two postings; each
    posting's currency is its account's; each account's cached balance equals the sum of
    its postings on its normal side; no account is below zero on its normal side unless
    its purpose may be (``ledger.models.EITHER_SIGN``); then the invariants the apps
    registered of their own objects (``ledger.invariants``).
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
        .filter(~Q(balance=F("expected")))
        .order_by("pk")[:limit]
    )
    problems += [
        f"account {a.code} caches balance {a.balance} but its postings give {a.expected}"
        for a in accounts
    ]

    below_zero = (
        Account.objects.filter(balance__lt=0)
        .filter(Q(non_negative=True) | ~Q(purpose__in=list(EITHER_SIGN)))
        .order_by("pk")[:limit]
    )
    problems += [
        f"account {a.code} ({a.purpose}, {a.normal_side}-normal) is below zero: {a.balance}"
        for a in below_zero
    ]
    if len(problems) < limit:
        problems += invariant_problems(limit - len(problems))
    return problems[:limit]
