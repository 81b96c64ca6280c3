"""The one way money moves: ``ledger_post`` writes a balanced journal entry.

It runs inside the caller's transaction, the one that makes the domain change the entry
records. Accounts are locked after every domain row, in one order that every transaction
follows, so two entries touching the same accounts cannot deadlock: first the accounts
that may not go below zero, in ascending id order (their balances are checked before
anything is written), then every account the entry moves, in ascending id order, by the
statement that moves the balances, the last one. A shared account every entry touches
(the gateway's clearing account) is then held only from that statement to the commit.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from django.db import connection, transaction
from django.db.models import Q

from core import clock
from core.db import array_literal, insert_rows, update_rows
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
    the same statement that reads the entry's other accounts.
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


def accounts_lock(accounts: Iterable[AccountLike]) -> None:
    """Lock accounts (objects, ids or system codes) in the ledger's order (see the module),
    ahead of the entries a caller will post in the same transaction.

    For a caller that posts several entries one after another (a batch whose later entries
    are posted one by one): each ``ledger_post`` then finds its accounts held already, so
    the transaction never waits for an account while holding another out of order.
    """
    found = _accounts(_ref(account) for account in accounts)
    ids = sorted({a.pk for a in found.values()})
    _lock_guarded([pk for pk in ids if found[pk].non_negative])
    _lock_in_order(ids)


def _accounts(refs: Iterable[int | str]) -> dict[int | str, Account]:
    """The accounts (ids or codes), read without a lock, keyed by id and by code; a system
    account's code is created on its first use. What is read here (currency, normal side,
    whether it may go below zero) never changes; the balance is read under lock."""
    ids: set[int] = set()
    codes: set[str] = set()
    for ref in refs:
        (ids if isinstance(ref, int) else codes).add(ref)  # type: ignore[arg-type]

    def fetch() -> list[Account]:
        # Each part only if it has values: an OR with an empty list is planned as a scan.
        by_id, by_code = Q(pk__any=ids), Q(code__any=codes)
        wanted = by_id | by_code if ids and codes else by_id if ids else by_code
        return list(Account.objects.filter(wanted))

    accounts = fetch()
    missing = codes - {a.code for a in accounts}
    if missing:  # a system account's first use
        for code in missing:
            purpose, currency = code.split(":")
            system_account(Purpose(purpose), currency)
        accounts = fetch()
    return {**{a.pk: a for a in accounts}, **{a.code: a for a in accounts}}


def _lock_guarded(ids: Sequence[int]) -> dict[int, int]:
    """Lock the accounts that may not go below zero, in id order: their balances now."""
    if not ids:
        return {}
    return dict(
        Account.objects.select_for_update(no_key=True)
        .filter(pk__any=ids)
        .order_by("pk")
        .values_list("pk", "balance")
    )


_LOCK_IN_ORDER = """
    SELECT id FROM ledger_account WHERE id = ANY(%s) ORDER BY id FOR NO KEY UPDATE
"""

# The accounts are locked by the CTE, which yields them in id order, before the UPDATE
# writes a row: each row it writes is one the CTE holds already.
_MOVE_BALANCES = f"""
    WITH held AS ({_LOCK_IN_ORDER})
    UPDATE ledger_account AS a SET balance = a.balance + v.delta
    FROM unnest(%s::bigint[], %s::bigint[]) AS v(id, delta)
    WHERE a.id = v.id AND a.id IN (SELECT id FROM held)
"""


def _lock_in_order(ids: Sequence[int]) -> None:
    if not ids:
        return
    if connection.vendor != "postgresql":  # SQLite (``make run``) locks the whole file
        return
    with connection.cursor() as cursor:
        cursor.execute(_LOCK_IN_ORDER, [array_literal(ids)])


def _move_balances(deltas: dict[int, int]) -> None:
    """Lock the accounts in id order and add each its delta: one statement."""
    rows = sorted((pk, delta) for pk, delta in deltas.items() if delta)
    if not rows:
        return
    if connection.vendor != "postgresql":  # SQLite (``make run``) locks the whole file
        moved = update_rows(Account, ["balance"], rows, add=["balance"])
        if moved != len(rows):
            raise UnbalancedEntry(f"{len(rows) - moved} account(s) vanished.")
        return
    ids = [pk for pk, _ in rows]
    with connection.cursor() as cursor:
        cursor.execute(
            _MOVE_BALANCES,
            [array_literal(ids), array_literal(ids), array_literal(d for _, d in rows)],
        )
        if cursor.rowcount != len(rows):
            raise UnbalancedEntry(f"{len(rows) - cursor.rowcount} account(s) vanished.")


def _run_deferred_checks() -> None:
    """Run now the checks PostgreSQL defers to COMMIT (the foreign keys of every row this
    transaction wrote), instead of at COMMIT while the accounts are held; later rows are
    deferred again."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE; SET CONSTRAINTS ALL DEFERRED")


@dataclass(frozen=True)
class EntryDraft:
    """One balanced entry to write (``ledger_post_many``)."""

    kind: str
    legs: Sequence[Leg]
    reference_type: str = ""
    reference_id: str = ""
    memo: str = ""
    reverses: JournalEntry | None = None


def _checked_legs(draft: EntryDraft) -> list[Leg]:
    legs = [leg for leg in draft.legs if leg.amount.minor != 0]
    if len(legs) < 2:
        raise UnbalancedEntry("An entry needs at least two non-zero postings.")
    totals: dict[str, int] = defaultdict(int)
    for leg in legs:
        totals[leg.amount.currency] += leg.amount.minor
    if any(totals.values()):
        raise UnbalancedEntry(f"Postings do not sum to zero: {dict(totals)}")
    return legs


def ledger_post(
    *,
    kind: str,
    legs: Sequence[Leg],
    reference_type: str = "",
    reference_id: str = "",
    memo: str = "",
    reverses: JournalEntry | None = None,
) -> JournalEntry:
    """Write one balanced entry and move the cached balances. Four queries, any size (five
    if an account that may not go below zero is moved)."""
    draft = EntryDraft(kind, legs, reference_type, str(reference_id), memo[:255], reverses)
    ((entry_id, created_at),) = _post([draft])
    return JournalEntry(
        pk=entry_id,
        created_at=created_at,
        kind=draft.kind,
        memo=draft.memo,
        reference_type=draft.reference_type,
        reference_id=draft.reference_id,
        reverses=reverses,
    )


def ledger_post_many(entries: Sequence[EntryDraft]) -> list[int]:
    """Write many balanced entries at once; the ids of the new entries, in order.

    The same rules as ``ledger_post`` applied one entry after the other (an account that
    may not go below zero is checked after each entry, in order), and the same queries
    whatever the number of entries: for a batch (the debit run's chunk) that would
    otherwise lock the same accounts and move the same balances a thousand times. The
    checks PostgreSQL defers to COMMIT run before the balances move, so that the commit
    holds the accounts only as long as it takes to write it.
    """
    if not entries:
        return []
    return [entry_id for entry_id, _ in _post(entries, deferred_checks_first=True)]


def _post(
    drafts: Sequence[EntryDraft], *, deferred_checks_first: bool = False
) -> list[tuple[int, datetime]]:
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("ledger_post must run inside the transaction of its cause")
    checked = [_checked_legs(draft) for draft in drafts]
    accounts = _accounts(leg.account for legs in checked for leg in legs)
    deltas: dict[int, int] = defaultdict(int)
    moves: list[dict[int, int]] = []  # per entry, in order
    postings: list[tuple[int, int, int, str]] = []  # (draft index, account, amount, currency)
    for index, legs in enumerate(checked):
        moved: dict[int, int] = defaultdict(int)
        for leg in legs:
            account = accounts.get(leg.account)
            if account is None:
                raise UnbalancedEntry(f"Unknown account {leg.account}.")
            if account.currency != leg.amount.currency:
                raise UnbalancedEntry(f"{leg.amount.currency} posting to {account.code}.")
            postings.append((index, account.pk, leg.amount.minor, leg.amount.currency))
            moved[account.pk] += account.sign * leg.amount.minor
        moves.append(moved)
        for account_id, delta in moved.items():
            deltas[account_id] += delta
    # Accounts that may not go below zero: locked first, checked after each entry in order,
    # before anything is written.
    balances = _lock_guarded(sorted(pk for pk in deltas if accounts[pk].non_negative))
    for moved in moves:
        for account_id, delta in moved.items():
            if account_id in balances:
                if balances[account_id] + delta < 0:
                    raise InsufficientFunds(
                        f"{accounts[account_id].code} holds {balances[account_id]} and cannot "
                        f"give {-delta} (minor units)."
                    )
                balances[account_id] += delta

    now = clock.now()
    entry_ids = insert_rows(
        JournalEntry,
        ["created_at", "kind", "memo", "reference_type", "reference_id", "reverses_id"],
        [
            (
                now,
                d.kind,
                d.memo[:255],
                d.reference_type,
                str(d.reference_id),
                d.reverses.pk if d.reverses else None,
            )
            for d in drafts
        ],
    )
    insert_rows(
        Posting,
        ["entry_id", "account_id", "amount", "currency"],
        [
            (entry_ids[index], account_id, amount, currency)
            for index, account_id, amount, currency in postings
        ],
        returning=None,
    )
    if deferred_checks_first:
        _run_deferred_checks()
    _move_balances(deltas)
    return [(entry_id, now) for entry_id in entry_ids]


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
