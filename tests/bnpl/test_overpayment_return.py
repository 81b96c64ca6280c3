"""Money a plan receives beyond what it owes goes back to the customer's wallet.

A capture can land on an installment a merchant refund has already cancelled (the refund
came first, the card's capture was reported after). What it paid is a credit on the
installment receivable; after commit the task ``bnpl.plan_credit_return`` moves it to the
wallet, through the wallet's credit service, which repays wallet BNPL debts first. The
settlement itself never locks a wallet (it holds a payment transaction and ledger accounts,
which come after the wallet in the lock order).
"""

from __future__ import annotations

from datetime import date

import pytest
from django.db import transaction

from bnpl import servicing, tasks
from bnpl.models import InstallmentStatus, Plan
from bnpl.services import installments_settle, plan_receivable
from core.models import AuditEntry
from core.money import Money
from ledger.models import JournalEntry, Posting, Purpose
from ledger.services import credit, debit, ledger_post, system
from payments.events import Settlement
from tests.bnpl.factories import after_commit_tasks, make_plan
from tests.factories import approve_kyc, borrow, enable_wallet_bnpl, make_customer
from wallet.models import DebtStatus, Wallet, WalletDebt, WalletTransaction

pytestmark = pytest.mark.django_db


def eur(amount: str) -> Money:
    return Money.parse(amount, "EUR")


def wallet_balance(customer) -> int:
    return Wallet.objects.select_related("account").get(customer=customer).account.balance


def receivable(plan: Plan) -> int:
    return plan_receivable(customer_id=plan.customer_id, currency="EUR").balance


def plan_with_last_installment_refunded(customer) -> Plan:
    """300.00 in 3 monthly installments; a 100.00 refund cancels installment 3."""
    plan = make_plan(customer=customer, amount="300.00", start_date=date(2026, 1, 10))
    servicing.plan_refund(plan_id=plan.pk, amount=eur("100.00"))
    assert plan.installments.get(number=3).status == InstallmentStatus.CANCELLED
    assert receivable(plan) == 20_000
    return plan


def late_capture(
    plan: Plan, amount: Money, payment_id: int = 9001, kind="capture", commit_hooks=True
) -> None:
    """The card processor reports a capture (or its refund) for installment 3; the
    after-commit hooks run (or, ``commit_hooks=False``, are lost as in a crash)."""
    with after_commit_tasks(run=commit_hooks), transaction.atomic():
        installments_settle(
            [
                Settlement(
                    payment_id=payment_id,
                    reference_id=str(plan.installments.get(number=3).pk),
                    kind=kind,
                    amount=amount,
                    clearing=system(Purpose.GATEWAY_CLEARING, "EUR"),
                )
            ]
        )


def test_a_capture_on_a_refunded_installment_goes_back_to_the_wallet(customer):
    plan = plan_with_last_installment_refunded(customer)
    before = wallet_balance(customer)

    late_capture(plan, eur("100.00"))

    assert wallet_balance(customer) == before + 10_000
    assert receivable(plan) == 20_000  # what the two open installments still owe, no credit
    credit = WalletTransaction.objects.get(
        wallet__customer=customer, reference_type="bnpl.receivable"
    )
    assert (credit.kind, credit.direction, credit.amount) == ("refund", "credit", 10_000)
    entry = JournalEntry.objects.get(pk=credit.journal_entry_id)
    legs = {(p.account.code, p.amount) for p in Posting.objects.filter(entry=entry)}
    # Debit the receivable (the credit on it is used up), credit the wallet.
    assert legs == {
        (f"installments:{customer.pk}:EUR", 10_000),
        (f"wallet:{customer.pk}:EUR", -10_000),
    }
    returned = AuditEntry.objects.get(action="bnpl.overpayment_returned")
    assert returned.changes["amount"] == "100.00 EUR"
    assert returned.changes["wallet_transaction"] == credit.pk


def test_the_returned_overpayment_repays_wallet_debts_first(web_channel):
    enable_wallet_bnpl()
    customer = approve_kyc(make_customer())
    debt_id = borrow(customer, "60.00")
    assert wallet_balance(customer) == 0
    plan = plan_with_last_installment_refunded(customer)

    late_capture(plan, eur("100.00"))

    debt = WalletDebt.objects.get(pk=debt_id)
    assert debt.status == DebtStatus.REPAID
    assert debt.principal_repaid == 6_000
    assert wallet_balance(customer) == 10_000 - 6_000 - debt.interest_paid
    assert receivable(plan) == 20_000


def test_part_of_a_capture_beyond_what_an_installment_owes_goes_back(customer):
    plan = make_plan(customer=customer, amount="300.00", start_date=date(2026, 1, 10))
    first = plan.installments.get(number=1)
    before = wallet_balance(customer)

    with after_commit_tasks(), transaction.atomic():
        installments_settle(
            [
                Settlement(
                    payment_id=9002,
                    reference_id=str(first.pk),
                    kind="capture",
                    amount=eur("102.50"),
                    clearing=system(Purpose.GATEWAY_CLEARING, "EUR"),
                )
            ]
        )

    first.refresh_from_db()
    assert (first.status, first.paid_principal) == (InstallmentStatus.PAID, 10_000)
    assert wallet_balance(customer) == before + 250
    assert receivable(plan) == 20_000


def test_running_the_return_twice_returns_once(customer):
    plan = plan_with_last_installment_refunded(customer)
    before = wallet_balance(customer)
    late_capture(plan, eur("100.00"))

    assert tasks.plan_credit_return(customer.pk, "EUR") == 0

    assert wallet_balance(customer) == before + 10_000
    assert AuditEntry.objects.filter(action="bnpl.overpayment_returned").count() == 1


def test_the_sweep_returns_a_credit_whose_return_never_ran(customer):
    """A credit left on the receivable (an after-commit hook lost in a crash, or one from
    before returns existed) is found and returned by the periodic sweep."""
    plan = plan_with_last_installment_refunded(customer)
    before = wallet_balance(customer)
    late_capture(plan, eur("100.00"), commit_hooks=False)
    assert receivable(plan) == 20_000 - 10_000
    assert wallet_balance(customer) == before

    with after_commit_tasks():
        assert tasks.plan_credits_sweep() == 1

    assert wallet_balance(customer) == before + 10_000
    assert receivable(plan) == 20_000
    assert tasks.plan_credits_sweep() == 0


def test_a_refunded_overpayment_not_yet_returned_is_not_returned(customer):
    plan = plan_with_last_installment_refunded(customer)
    before = wallet_balance(customer)
    late_capture(plan, eur("100.00"), commit_hooks=False)  # its return not made yet

    late_capture(plan, eur("100.00"), kind="refund")  # the processor gave it back to the card
    with after_commit_tasks():
        assert tasks.plan_credits_sweep() == 0

    assert wallet_balance(customer) == before
    assert receivable(plan) == 20_000
    assert AuditEntry.objects.filter(action="bnpl.overpayment_returned").count() == 0


def test_a_refunded_overpayment_already_returned_is_taken_back_from_the_wallet(customer):
    plan = plan_with_last_installment_refunded(customer)
    before = wallet_balance(customer)
    late_capture(plan, eur("100.00"))
    assert wallet_balance(customer) == before + 10_000

    late_capture(plan, eur("100.00"), kind="refund")  # the card got it back too

    assert wallet_balance(customer) == before  # paid once, on the card
    assert receivable(plan) == 20_000
    assert AuditEntry.objects.filter(action="bnpl.overpayment_taken_back").count() == 1
    merchant = system(Purpose.MERCHANT, "EUR")
    assert not Posting.objects.filter(
        entry__kind="bnpl.installment_refunded", account__code=merchant
    ).exists()  # the merchant does not pay for a refund of money it never kept


def test_only_a_refunded_overpayment_is_ever_taken_from_the_wallet(customer):
    """A receivable holding more than the plans owe for any other reason (a wrong entry)
    is not the customer's debt: nothing is taken from the wallet for it."""
    make_plan(customer=customer, amount="300.00", start_date=date(2026, 1, 10))
    before = wallet_balance(customer)
    ledger_post(
        kind="test.wrong_entry",
        legs=[
            debit(plan_receivable(customer_id=customer.pk, currency="EUR"), eur("50.00")),
            credit(system(Purpose.MERCHANT, "EUR"), eur("50.00")),
        ],
        reference_type="test",
        reference_id="1",
    )

    assert tasks.plan_credit_return(customer.pk, "EUR") == 0
    assert wallet_balance(customer) == before
