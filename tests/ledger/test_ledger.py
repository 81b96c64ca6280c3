import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import IntegrityError, connection, transaction

from core.money import Money
from ledger.errors import InsufficientFunds, UnbalancedEntry
from ledger.models import Account, JournalEntry, Posting, Purpose
from ledger.selectors import ledger_problems
from ledger.services import (
    EntryDraft,
    account_get_or_create,
    credit,
    debit,
    ledger_post,
    ledger_post_many,
    ledger_reverse,
    system_account,
)

pytestmark = pytest.mark.django_db

EUR = "EUR"


def eur(amount: str) -> Money:
    return Money.parse(amount, EUR)


@pytest.fixture
def accounts():
    return system_account(Purpose.CASH_CLEARING, EUR), system_account(Purpose.MERCHANT, EUR)


def test_post_writes_balanced_entry_and_moves_cached_balances(accounts):
    cash, merchant = accounts
    with transaction.atomic():
        entry = ledger_post(
            kind="test.sale", legs=[debit(cash, eur("12.34")), credit(merchant, eur("12.34"))]
        )
    assert sorted(entry.postings.values_list("amount", flat=True)) == [-1234, 1234]
    cash.refresh_from_db()
    merchant.refresh_from_db()
    # Both on their normal side: cash (debit-normal) and merchant (credit-normal) are up.
    assert (cash.balance, merchant.balance) == (1234, 1234)
    assert ledger_problems() == []


def test_post_refuses_an_unbalanced_entry_and_writes_nothing(accounts):
    cash, merchant = accounts
    with pytest.raises(UnbalancedEntry), transaction.atomic():
        ledger_post(
            kind="test.bad", legs=[debit(cash, eur("10.00")), credit(merchant, eur("9.99"))]
        )
    assert JournalEntry.objects.count() == 0


def test_post_refuses_mixed_currency_postings(accounts):
    cash, _ = accounts
    usd = system_account(Purpose.MERCHANT, "USD")
    with pytest.raises(UnbalancedEntry), transaction.atomic():
        ledger_post(
            kind="test.bad", legs=[debit(cash, eur("1.00")), credit(usd, Money(100, "USD"))]
        )


@pytest.mark.django_db(transaction=True)
def test_post_must_run_inside_its_cause_transaction(accounts):
    cash, merchant = accounts
    with pytest.raises(RuntimeError, match="inside the transaction"):
        ledger_post(kind="x", legs=[debit(cash, eur("1.00")), credit(merchant, eur("1.00"))])
    assert JournalEntry.objects.count() == 0


def test_non_negative_account_cannot_go_below_zero(customer):
    wallet_account = Account.objects.get(customer=customer, purpose=Purpose.CUSTOMER_WALLET)
    merchant = system_account(Purpose.MERCHANT, EUR)
    with pytest.raises(InsufficientFunds), transaction.atomic():
        ledger_post(
            kind="test.overdraw",
            legs=[debit(wallet_account, eur("500.01")), credit(merchant, eur("500.01"))],
        )
    # The database refuses too, whatever Python does.
    with pytest.raises(IntegrityError), transaction.atomic():
        Account.objects.filter(pk=wallet_account.pk).update(balance=-1)


def test_postings_and_entries_are_append_only_in_the_database(accounts):
    cash, merchant = accounts
    with transaction.atomic():
        entry = ledger_post(
            kind="test.sale", legs=[debit(cash, eur("5.00")), credit(merchant, eur("5.00"))]
        )
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        Posting.objects.filter(entry=entry).update(amount=1)
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        Posting.objects.filter(entry=entry).delete()
    with (
        pytest.raises(IntegrityError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("UPDATE ledger_journalentry SET kind = 'x' WHERE id = %s", [entry.pk])
    assert Posting.objects.filter(entry=entry).count() == 2


def test_reversal_is_a_new_mirror_entry(accounts):
    cash, merchant = accounts
    with transaction.atomic():
        entry = ledger_post(
            kind="test.sale", legs=[debit(cash, eur("7.00")), credit(merchant, eur("7.00"))]
        )
        reversal = ledger_reverse(entry=entry, kind="test.sale_reversed")
    assert reversal.reverses == entry
    cash.refresh_from_db()
    assert cash.balance == 0
    assert JournalEntry.objects.count() == 2


def test_ledger_verify_names_the_first_mismatch(accounts):
    cash, merchant = accounts
    with transaction.atomic():
        ledger_post(
            kind="test.sale", legs=[debit(cash, eur("3.00")), credit(merchant, eur("3.00"))]
        )
    call_command("ledger_verify")  # clean
    Account.objects.filter(pk=merchant.pk).update(balance=299)  # a lost update, simulated
    with pytest.raises(
        CommandError, match=r"merchant:EUR caches balance 299 but its postings give 300"
    ):
        call_command("ledger_verify")
    Account.objects.filter(pk=merchant.pk).update(balance=300)  # put it right again


class _Rollback(Exception):
    pass


def test_ledger_verify_catches_an_unbalanced_entry_written_behind_its_back(accounts):
    cash, _ = accounts
    found: dict[str, object] = {}

    def write_raw_entry_and_look() -> None:
        with transaction.atomic():
            found["entry"] = JournalEntry.objects.create(
                created_at=cash.created_at, kind="test.raw"
            )
            Posting.objects.create(entry=found["entry"], account=cash, amount=100, currency=EUR)
            found["problems"] = ledger_problems()
            raise _Rollback  # undo the raw write; the append-only trigger refuses a DELETE

    with pytest.raises(_Rollback):
        write_raw_entry_and_look()
    entry, problems = found["entry"], found["problems"]
    assert problems[0] == f"entry #{entry.pk} does not balance in EUR: postings sum to 100"
    assert "account cash_clearing:EUR caches balance 0 but its postings give 100" in problems


def test_account_codes_are_unique_per_purpose_and_currency():
    a = account_get_or_create(code="merchant:EUR", purpose=Purpose.MERCHANT, currency=EUR)
    b = system_account(Purpose.MERCHANT, EUR)
    assert a.pk == b.pk


# --- many entries at once ---------------------------------------------------------------


def test_post_many_writes_each_entry_in_order_in_five_queries(accounts, django_assert_num_queries):
    """Whatever the number of entries: the accounts read, the entries and their postings
    written, the deferred checks run, the balances moved."""
    cash, merchant = accounts
    drafts = [
        EntryDraft(
            kind="test.sale",
            legs=[debit(cash, Money(100 + n, EUR)), credit(merchant, Money(100 + n, EUR))],
            reference_type="test",
            reference_id=str(n),
        )
        for n in range(50)
    ]
    # Accounts, entries, postings, the deferred checks, the balances; SQLite checks at commit.
    queries = 5 if connection.vendor == "postgresql" else 4
    with transaction.atomic(), django_assert_num_queries(queries):
        ids = ledger_post_many(drafts)
    entries = JournalEntry.objects.in_bulk(ids)
    assert [entries[i].reference_id for i in ids] == [str(n) for n in range(50)]
    assert all(
        sorted(entries[i].postings.values_list("amount", flat=True)) == [-(100 + n), 100 + n]
        for n, i in enumerate(ids)
    )
    cash.refresh_from_db()
    merchant.refresh_from_db()
    assert (cash.balance, merchant.balance) == (sum(range(100, 150)), sum(range(100, 150)))
    assert ledger_problems() == []


@pytest.mark.postgres  # SQLite holds one lock for every writer: it checks at commit
def test_post_many_runs_the_checks_deferred_to_commit_before_it_moves_balances(accounts):
    """A row this transaction wrote earlier that breaks a foreign key is refused by the
    batch post itself, before the balances move (and the accounts are held), not later
    by the commit."""
    cash, merchant = accounts
    draft = EntryDraft(
        "test.sale", [debit(cash, Money(100, EUR)), credit(merchant, Money(100, EUR))]
    )
    with transaction.atomic():
        with connection.cursor() as cursor:  # a posting whose entry does not exist
            cursor.execute(
                "INSERT INTO ledger_posting (entry_id, account_id, amount, currency) "
                "VALUES (-1, %s, 1, 'EUR')",
                [cash.pk],
            )
        with pytest.raises(IntegrityError):
            ledger_post_many([draft])
        transaction.set_rollback(True)
    cash.refresh_from_db()
    assert cash.balance == 0
    assert ledger_problems() == []


@pytest.mark.postgres  # PostgreSQL's catalog; SQLite has no SET CONSTRAINTS
def test_no_constraint_is_deferrable_but_initially_immediate():
    """The batch post runs the deferred checks early with SET CONSTRAINTS ALL IMMEDIATE,
    then ALL DEFERRED: right only while every deferrable constraint starts deferred."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT conrelid::regclass::text, conname FROM pg_constraint "
            "WHERE condeferrable AND NOT condeferred"
        )
        assert cursor.fetchall() == []


def test_post_many_checks_a_non_negative_account_after_each_entry_in_order(customer):
    wallet = Account.objects.get(customer=customer, purpose=Purpose.CUSTOMER_WALLET)
    merchant = system_account(Purpose.MERCHANT, EUR)
    held = Money(wallet.balance, EUR)
    top_up = EntryDraft(
        "test.top_up", [debit(merchant, eur("10.00")), credit(wallet, eur("10.00"))]
    )
    spend_all = EntryDraft(
        "test.spend", [debit(wallet, held + eur("10.00")), credit(merchant, held + eur("10.00"))]
    )
    before = JournalEntry.objects.count()
    # Spending first overdraws, whatever comes after it: nothing is written.
    with pytest.raises(InsufficientFunds), transaction.atomic():
        ledger_post_many([spend_all, top_up])
    assert JournalEntry.objects.count() == before
    with transaction.atomic():
        ledger_post_many([top_up, spend_all])
    wallet.refresh_from_db()
    assert wallet.balance == 0
    assert ledger_problems() == []


def test_post_many_refuses_the_batch_if_one_entry_is_unbalanced(accounts):
    cash, merchant = accounts
    good = EntryDraft("test.sale", [debit(cash, eur("1.00")), credit(merchant, eur("1.00"))])
    bad = EntryDraft("test.sale", [debit(cash, eur("1.00")), credit(merchant, eur("0.99"))])
    with pytest.raises(UnbalancedEntry), transaction.atomic():
        ledger_post_many([good, bad])
    assert not JournalEntry.objects.exists()


def test_every_purpose_has_a_normal_side_and_its_sign_rule_names_only_purposes():
    from ledger.models import EITHER_SIGN, NORMAL_SIDE

    assert set(NORMAL_SIDE) == set(Purpose.values)
    assert set(EITHER_SIGN) <= set(Purpose.values)


def _problems_after(legs) -> list[str]:
    """The problems ``ledger_problems`` sees with ``legs`` posted; then rolled back."""
    found: list[str] = []

    def post_and_look() -> None:
        with transaction.atomic():
            ledger_post(kind="test.entry", legs=legs)
            found.extend(ledger_problems())
            raise _Rollback

    with pytest.raises(_Rollback):
        post_and_look()
    return found


def test_an_account_below_zero_on_its_normal_side_is_a_problem_unless_its_purpose_may_be():
    expense = system_account(Purpose.WRITE_OFF_EXPENSE, EUR)
    cash = system_account(Purpose.CASH_CLEARING, EUR)
    income = system_account(Purpose.INTEREST_INCOME, EUR)

    problems = _problems_after([credit(expense, eur("30.00")), debit(income, eur("30.00"))])
    assert problems == [
        "account write_off_expense:EUR (write_off_expense, debit-normal) is below zero: -3000",
        "account interest_income:EUR (interest_income, credit-normal) is below zero: -3000",
    ]
    # Cash clearing may be on either side: a withdrawal of goodwill money.
    assert _problems_after([credit(cash, eur("30.00")), debit(expense, eur("30.00"))]) == []


def test_an_apps_registered_invariant_is_checked_with_the_ledger():
    from ledger.invariants import _checks, invariant_register

    assert {"wallet", "bnpl", "oms", "payments"} <= set(_checks)
    invariant_register("test", lambda limit: ["something is off"][:limit])
    try:
        assert ledger_problems() == ["test: something is off"]
        with pytest.raises(CommandError, match="test: something is off"):
            call_command("ledger_verify")
    finally:
        del _checks["test"]
