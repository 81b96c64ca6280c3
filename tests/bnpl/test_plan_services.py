"""Plan creation, the down-payment charge and the booking of installment payments."""

from datetime import date, datetime, time
from decimal import Decimal

import pytest
import requests
from django.db import transaction

from bnpl import signals
from bnpl.models import DebitRequestStatus, InstallmentStatus, Plan, PlanStatus
from bnpl.services import (
    installment_apply_payment,
    installment_checkout_charge,
    locked_plan_installment,
    plan_receivable,
)
from bnpl.writeoff import plan_write_off
from core import clock
from core.money import Money
from ledger.models import Account, JournalEntry, Purpose
from ledger.services import system
from payments.errors import PaymentMethodUnknown
from payments.gateway import Decision
from tests.bnpl.factories import after_commit_tasks, make_plan, make_product
from tests.factories import make_customer, saved_card

pytestmark = pytest.mark.django_db


def balance(code: str) -> int:
    account = Account.objects.filter(code=code).first()
    return account.balance if account else 0


def receivable_balance(plan) -> int:
    return plan_receivable(customer_id=plan.customer_id, currency=plan.currency).balance


def test_plan_create_writes_installments_debit_requests_and_the_funding_entry(
    customer, django_capture_on_commit_callbacks
):
    approved = []
    signals.plan_approved.connect(lambda sender, plan, **kw: approved.append(plan.pk), weak=False)
    with django_capture_on_commit_callbacks(execute=True):
        plan = make_plan(customer=customer, amount="1000.00", start_date=date(2026, 1, 31))

    lines = list(plan.installments.values_list("number", "due_date", "principal"))
    assert lines == [
        (1, date(2026, 2, 28), 33_334),
        (2, date(2026, 3, 31), 33_333),
        (3, date(2026, 4, 30), 33_333),
    ]
    requests = list(
        plan.debit_requests.order_by("installment__number").values_list(
            "installment__number", "next_attempt_at", "payment_method", "idempotency_key", "status"
        )
    )
    tz = clock.business_tz()
    assert requests == [
        (
            n,
            datetime.combine(day, time.min, tzinfo=tz),
            "pm_card_visa",
            f"bnpl:plan:{plan.pk}:installment:{n}",
            DebitRequestStatus.SCHEDULED,
        )
        for n, day in ((1, date(2026, 2, 28)), (2, date(2026, 3, 31)), (3, date(2026, 4, 30)))
    ]
    assert receivable_balance(plan) == 100_000
    assert balance(system(Purpose.MERCHANT, "EUR")) == 100_000
    assert JournalEntry.objects.filter(kind="bnpl.plan_funded").count() == 1
    assert approved == [plan.pk]


def test_percent_down_payment_line_has_no_debit_request(customer):
    product = make_product(down_payment="percent", down_payment_percent=Decimal(25))
    plan = make_plan(customer=customer, product=product, amount="1000.00")

    assert list(plan.installments.values_list("number", "principal")) == [
        (0, 25_000),
        (1, 25_000),
        (2, 25_000),
        (3, 25_000),
    ]
    assert plan.down_payment == 25_000
    assert sorted(plan.debit_requests.values_list("installment__number", flat=True)) == [1, 2, 3]
    # The whole principal is owed until the down payment is charged.
    assert receivable_balance(plan) == 100_000


def test_down_payment_charge_pays_line_zero_through_the_settlement_handler(
    customer, card_processor
):
    product = make_product(down_payment="percent", down_payment_percent=Decimal(25))
    plan = make_plan(customer=customer, product=product, amount="1000.00")
    down = plan.installments.get(number=0)

    result = installment_checkout_charge(installment_id=down.pk)
    again = installment_checkout_charge(installment_id=down.pk)  # same key: charged once

    assert result.decision == Decision.APPROVED
    assert again.decision == Decision.APPROVED
    down.refresh_from_db()
    assert (down.status, down.paid_principal) == (InstallmentStatus.PAID, 25_000)
    assert receivable_balance(plan) == 75_000
    assert balance(system(Purpose.GATEWAY_CLEARING, "EUR")) == 25_000
    # An installment is not a sale: the merchant was credited once, at funding.
    assert balance(system(Purpose.MERCHANT, "EUR")) == 100_000
    assert JournalEntry.objects.filter(kind="bnpl.installment_paid").count() == 1


def test_declined_down_payment_leaves_the_line_unpaid(customer, card_processor):
    product = make_product(down_payment="first_installment")
    plan = make_plan(customer=customer, product=product, payment_method="pm_decline")
    first = plan.installments.get(number=1)

    result = installment_checkout_charge(installment_id=first.pk)

    assert result.decision == Decision.DECLINED
    first.refresh_from_db()
    assert (first.status, first.paid) == (InstallmentStatus.SCHEDULED, 0)
    assert receivable_balance(plan) == 100_000


def test_a_down_payment_on_another_customers_card_is_declined_without_a_charge(
    customer, card_processor, sandbox
):
    saved_card(make_customer(), "pm_theirs")
    product = make_product(down_payment="first_installment")
    plan = make_plan(customer=customer, product=product)
    Plan.objects.filter(pk=plan.pk).update(payment_method="pm_theirs")  # an unchecked switch
    first = plan.installments.get(number=1)

    result = installment_checkout_charge(installment_id=first.pk)

    assert (result.decision, result.decline_code) == (Decision.DECLINED, "payment_method_unknown")
    assert requests.get(f"{sandbox}/sandbox/charges", timeout=5).json()["data"] == []
    first.refresh_from_db()
    assert (first.status, first.paid) == (InstallmentStatus.SCHEDULED, 0)


def test_a_plan_is_created_only_on_the_customers_own_card(customer):
    saved_card(make_customer(), "pm_theirs")
    with pytest.raises(PaymentMethodUnknown):
        make_plan(customer=customer, payment_method="pm_theirs")
    assert not Plan.objects.exists()


def test_payment_pays_late_fee_then_fee_then_interest_then_principal(customer):
    plan = make_plan(
        customer=customer, amount="1200.00", interest_method="declining", apr=Decimal("19.99"),
        installment_fee=100,
    )  # fmt: skip
    with transaction.atomic():
        plan, first = locked_plan_installment(plan.installments.get(number=1).pk)
        first.late_fee = 500
        first.save(update_fields=["late_fee"])
        split = installment_apply_payment(
            plan=plan,
            installment=first,
            amount=Money(500 + 100 + first.interest + 1, "EUR"),
            source=system(Purpose.CASH_CLEARING, "EUR"),
            kind="bnpl.installment_paid",
            reference_type="test",
            reference_id="1",
        )
    assert (split.late_fee, split.fee, split.interest, split.principal, split.excess) == (
        500,
        100,
        first.interest,
        1,
        0,
    )
    assert balance(system(Purpose.FEE_INCOME, "EUR")) == 600
    assert balance(system(Purpose.INTEREST_INCOME, "EUR")) == first.interest
    assert receivable_balance(plan) == 120_000 - 1
    assert first.status == InstallmentStatus.SCHEDULED


def test_paying_every_installment_completes_the_plan(customer, django_capture_on_commit_callbacks):
    plan = make_plan(customer=customer, amount="100.00")
    paid, completed = [], []
    signals.installment_paid.connect(
        lambda sender, installment, amount, **kw: paid.append(installment.number), weak=False
    )
    signals.plan_completed.connect(lambda sender, plan, **kw: completed.append(plan.pk), weak=False)
    for installment in plan.installments.order_by("number"):
        with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
            locked, row = locked_plan_installment(installment.pk)
            installment_apply_payment(
                plan=locked,
                installment=row,
                amount=Money(row.outstanding, "EUR"),
                source=system(Purpose.CASH_CLEARING, "EUR"),
                kind="bnpl.installment_paid",
                reference_type="test",
                reference_id=str(row.pk),
            )
    plan = Plan.objects.get(pk=plan.pk)
    assert plan.status == PlanStatus.COMPLETED
    assert receivable_balance(plan) == 0
    assert set(plan.debit_requests.values_list("status", flat=True)) == {DebitRequestStatus.SETTLED}
    assert paid == [1, 2, 3]
    assert completed == [plan.pk]


def test_excess_goes_back_to_the_wallet(customer):
    plan = make_plan(customer=customer, amount="30.00")
    with after_commit_tasks(), transaction.atomic():
        locked, row = locked_plan_installment(plan.installments.get(number=1).pk)
        split = installment_apply_payment(
            plan=locked,
            installment=row,
            amount=Money(row.outstanding + 250, "EUR"),
            source=system(Purpose.CASH_CLEARING, "EUR"),
            kind="bnpl.installment_paid",
            reference_type="test",
            reference_id="x",
        )
    assert split.excess == 250
    assert receivable_balance(plan) == 3_000 - 1_000
    assert balance(f"wallet:{customer.pk}:EUR") == 50_000 + 250


def test_money_for_a_written_off_plan_is_a_recovery(customer):
    plan = make_plan(customer=customer, amount="30.00")
    plan_write_off(plan_id=plan.pk, actor=None, note="uncollectable")  # 30.00 to the expense
    with transaction.atomic():
        locked, row = locked_plan_installment(plan.installments.get(number=1).pk)
        installment_apply_payment(
            plan=locked,
            installment=row,
            amount=Money(700, "EUR"),
            source=system(Purpose.CASH_CLEARING, "EUR"),
            kind="bnpl.installment_paid",
            reference_type="test",
            reference_id="r",
        )
    plan = Plan.objects.get(pk=plan.pk)
    assert plan.recovered_amount == 700
    assert balance(system(Purpose.WRITE_OFF_EXPENSE, "EUR")) == 3_000 - 700


def test_lines_owing_nothing_are_paid_from_the_start_and_never_debited(customer):
    # 0.02 EUR over 3 installments: the third line owes nothing.
    plan = make_plan(customer=customer, amount="0.02", min_amount=1)

    assert list(plan.installments.values_list("number", "principal", "status")) == [
        (1, 1, InstallmentStatus.SCHEDULED),
        (2, 1, InstallmentStatus.SCHEDULED),
        (3, 0, InstallmentStatus.PAID),
    ]
    assert sorted(plan.debit_requests.values_list("installment__number", flat=True)) == [1, 2]


def test_money_beyond_the_write_off_goes_back_to_the_wallet(customer):
    plan = make_plan(customer=customer, amount="30.00")
    plan_write_off(plan_id=plan.pk, actor=None, note="uncollectable")  # 30.00 to the expense
    with after_commit_tasks(), transaction.atomic():
        locked, row = locked_plan_installment(plan.installments.get(number=1).pk)
        installment_apply_payment(
            plan=locked,
            installment=row,
            amount=Money(3_200, "EUR"),
            source=system(Purpose.CASH_CLEARING, "EUR"),
            kind="bnpl.installment_paid",
            reference_type="test",
            reference_id="r2",
        )
    plan = Plan.objects.get(pk=plan.pk)
    assert plan.recovered_amount == 3_000
    assert balance(system(Purpose.WRITE_OFF_EXPENSE, "EUR")) == 0
    assert receivable_balance(plan) == 0
    assert balance(f"wallet:{customer.pk}:EUR") == 50_000 + 200  # the excess goes back
