"""The one way money moves: ``ledger_post`` writes a balanced journal entry.

It runs inside the caller's transaction, the one that makes the domain change the entry
records. Accounts are locked last, after every domain row, in ascending id order, so two
entries touching the same accounts cannot deadlock.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from django.db import transaction
from django.db.models import BigIntegerField, Case, F, Q, Value, When

from core import clock
from core.money import Money
from ledger.errors import InsufficientFunds, UnbalancedEntry
from ledger.models import NORMAL_SIDE, Account, JournalEntry, Posting, Purpose


@dataclass(frozen=True)
class Leg:
    # An account id, or the code of a system account (see ``system``).
    account: int | str
    # Signed: positive = debit, negative = credit.
    amount: Money


AccountLike = Account | int | str


def _ref(account: AccountLike) -> int | str:
    return account.pk if isinstance(account, Account) else account


def debit(account: AccountLike, amount: Money) -> Leg:
    return Leg(_ref(account), amount)


def credit(account: AccountLike, amount: Money) -> Leg:
    return Leg(_ref(account), -amount)


def system(purpose: Purpose, currency: str) -> str:
    """The code of the product's own account for ``purpose`` in ``currency``.

    Legs may name it by code: ``ledger_post`` finds (or, the first time, creates) it in
    the same statement that locks the entry's other accounts.
    """
    return f"{purpose}:{currency}"


def account_get_or_create(
    *, code: str, purpose: Purpose, currency: str, customer=None, non_negative: bool = False
) -> Account:
    account, _ = Account.objects.get_or_create(
        code=code,
        defaults={
            "purpose": purpose,
            "currency": currency,
            "customer": customer,
            "normal_side": NORMAL_SIDE[purpose],
            "non_negative": non_negative,
            "created_at": clock.now(),
        },
    )
    return account


def system_account(purpose: Purpose, currency: str) -> Account:
    """The product's own account for ``purpose`` in ``currency`` (merchant, income, …)."""
    return account_get_or_create(code=system(purpose, currency), purpose=purpose, currency=currency)


def _lock_accounts(legs: Sequence[Leg]) -> dict[int | str, Account]:
    """Lock the legs' accounts in id order; key them by id and by code."""
    ids = {leg.account for leg in legs if isinstance(leg.account, int)}
    codes = {leg.account for leg in legs if isinstance(leg.account, str)}

    def fetch() -> list[Account]:
        return list(
            Account.objects.select_for_update(no_key=True)
            .filter(Q(pk__in=ids) | Q(code__in=codes))
            .order_by("pk")
        )

    accounts = fetch()
    missing = codes - {a.code for a in accounts}
    if missing:  # a system account's first use
        for code in missing:
            purpose, currency = code.split(":")
            system_account(Purpose(purpose), currency)
        accounts = fetch()
    return {**{a.pk: a for a in accounts}, **{a.code: a for a in accounts}}


def ledger_post(
    *,
    kind: str,
    legs: Sequence[Leg],
    reference_type: str = "",
    reference_id: str = "",
    memo: str = "",
    reverses: JournalEntry | None = None,
) -> JournalEntry:
    """Write one balanced entry and move the cached balances. Four queries, any size."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("ledger_post must run inside the transaction of its cause")
    legs = [leg for leg in legs if leg.amount.minor != 0]
    if len(legs) < 2:
        raise UnbalancedEntry("An entry needs at least two non-zero postings.")
    totals: dict[str, int] = defaultdict(int)
    for leg in legs:
        totals[leg.amount.currency] += leg.amount.minor
    if any(totals.values()):
        raise UnbalancedEntry(f"Postings do not sum to zero: {dict(totals)}")

    accounts = _lock_accounts(legs)
    deltas: dict[int, int] = defaultdict(int)
    resolved: list[tuple[Account, Money]] = []
    for leg in legs:
        account = accounts.get(leg.account)
        if account is None:
            raise UnbalancedEntry(f"Unknown account {leg.account}.")
        resolved.append((account, leg.amount))
        if account.currency != leg.amount.currency:
            raise UnbalancedEntry(f"{leg.amount.currency} posting to {account.code}.")
        deltas[account.pk] += account.sign * leg.amount.minor
    for account_id, delta in deltas.items():
        account = accounts[account_id]
        if account.non_negative and account.balance + delta < 0:
            raise InsufficientFunds(
                f"{account.code} holds {account.balance} and cannot give {-delta} (minor units)."
            )

    entry = JournalEntry.objects.create(
        created_at=clock.now(),
        kind=kind,
        memo=memo[:255],
        reference_type=reference_type,
        reference_id=str(reference_id),
        reverses=reverses,
    )
    Posting.objects.bulk_create(
        Posting(entry=entry, account=account, amount=amount.minor, currency=amount.currency)
        for account, amount in resolved
    )
    Account.objects.filter(pk__in=deltas).update(
        balance=F("balance")
        + Case(
            *(When(pk=pk, then=Value(delta)) for pk, delta in deltas.items()),
            output_field=BigIntegerField(),
        )
    )
    return entry


def ledger_reverse(*, entry: JournalEntry, kind: str, memo: str = "") -> JournalEntry:
    """Undo ``entry`` with its mirror image; the original stays as it was."""
    legs = [Leg(p.account_id, Money(-p.amount, p.currency)) for p in entry.postings.all()]
    return ledger_post(
        kind=kind,
        legs=legs,
        reference_type=entry.reference_type,
        reference_id=entry.reference_id,
        memo=memo,
        reverses=entry,
    )
