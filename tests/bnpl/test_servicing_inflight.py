"""Servicing while a card charge for the plan is still with the processor: a payoff, a cancel,
an extra payment or a reschedule that would take the same money again is refused with
``bnpl.charge_in_flight`` until the charge has an outcome; then the money is taken once."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from django.db import transaction

from bnpl import servicing
from bnpl.models import (
    DebitRequest,
    DebitRequestStatus,
    Installment,
    InstallmentStatus,
    Plan,
    PlanStatus,
)
from bnpl.services import INSTALLMENT_REFERENCE, installment_checkout_charge, plan_receivable
from core import clock
from core.errors import ApplicationError
from core.money import Money
from payments.gateway import Decision
from payments.models import EventKind, Outcome, PaymentTransaction, Source
from payments.processing import payment_authorize
from payments.selectors import pending_charge_exists
from payments.services import payment_event_record
from tests.bnpl.factories import make_plan
from tests.concurrency.conftest import run_concurrently
from tests.factories import fund
from wallet.models import Wallet

EUR = "EUR"
JAN_10 = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
IN_FLIGHT = "bnpl.charge_in_flight"


pytestmark = pytest.mark.usefixtures("customer_cards")


def eur(amount: str) -> Money:
    return Money.parse(amount, EUR)


def receivable(plan: Plan) -> int:
    return plan_receivable(customer_id=plan.customer_id, currency=plan.currency).balance


def wallet_balance(customer) -> int:
    return Wallet.objects.select_related("account").get(customer=customer).account.balance


def refused(code: str, fn, **kwargs) -> ApplicationError:
    with pytest.raises(ApplicationError) as caught:
        fn(**kwargs)
    assert caught.value.code == code, caught.value
    return caught.value


@pytest.fixture
def jan_10():
    with clock.travel_to(JAN_10):
        yield date(2026, 1, 10)


def plan_300(customer, **overrides) -> Plan:
    """300.00 EUR in 3 monthly installments of 100.00 from 10 Jan: 10 Feb, 10 Mar, 10 Apr."""
    overrides.setdefault("reschedule_max_days", 14)
    overrides.setdefault("reschedule_max_count", 2)
    return make_plan(customer=customer, amount="300.00", start_date=date(2026, 1, 10), **overrides)


def debit_run_charge(card_processor, installment: Installment, payment_method: str):
    """The debit run's charge of an installment (collections_.debits._send)."""
    return payment_authorize(
        account=card_processor,
        reference_type=INSTALLMENT_REFERENCE,
        reference_id=str(installment.pk),
        amount=Money(installment.outstanding, EUR),
        payment_method=payment_method,
        idempotency_key=f"test:debit:{installment.pk}",
        capture=True,
    )


def processor_reports(payment: PaymentTransaction, kind: EventKind, outcome: Outcome) -> None:
    """The processor's notification of the charge's outcome, as the webhook records it."""
    with transaction.atomic(durable=True):
        payment_event_record(
            transaction_id=payment.pk,
            kind=kind,
            outcome=outcome,
            amount=Money(payment.amount, payment.currency),
            idempotency_key=f"webhook:{payment.pk}:{kind}",
            source=Source.WEBHOOK,
        )


@pytest.mark.django_db
def test_payoff_cancel_and_payments_wait_for_a_pending_installment_charge(
    customer, jan_10, card_processor, unchanged_db
):
    plan = plan_300(customer, payment_method="pm_review")
    first = plan.installments.get(number=1)
    payment, result = debit_run_charge(card_processor, first, "pm_review")
    assert result.decision == Decision.PENDING  # the processor is reviewing the charge

    check = unchanged_db()
    error = refused(IN_FLIGHT, servicing.plan_pay_off, plan_id=plan.pk, source="wallet")
    assert error.status_code == 409
    assert "try again once the pending payment is settled" in error.message
    refused(IN_FLIGHT, servicing.plan_pay_off, plan_id=plan.pk, source="manual")
    refused(
        IN_FLIGHT,
        servicing.installment_pay,
        plan_id=plan.pk,
        number=1,
        amount=eur("10.00"),
        source="wallet",
    )
    refused(IN_FLIGHT, servicing.plan_cancel, plan_id=plan.pk)
    check()
    # Card routes are refused before anything is sent to the processor.
    sent = PaymentTransaction.objects.count()
    refused(IN_FLIGHT, servicing.plan_pay_off, plan_id=plan.pk, source="card")
    refused(
        IN_FLIGHT,
        servicing.installment_pay,
        plan_id=plan.pk,
        number=1,
        amount=eur("10.00"),
        source="card",
    )
    assert PaymentTransaction.objects.count() == sent

    # Another installment's money is not in flight: paying toward it is fine.
    servicing.installment_pay(
        plan_id=plan.pk, number=2, amount=eur("10.00"), source="wallet", customer_id=customer.pk
    )

    # Authorized but the capture not reported yet: money may still be taken.
    processor_reports(payment, EventKind.AUTHORIZATION, Outcome.SUCCEEDED)
    refused(IN_FLIGHT, servicing.plan_pay_off, plan_id=plan.pk, source="wallet")

    # Captured: the settlement handler pays installment 1; the payoff takes the rest, once.
    processor_reports(payment, EventKind.CAPTURE, Outcome.SUCCEEDED)
    assert Installment.objects.get(pk=first.pk).status == InstallmentStatus.PAID
    payoff = servicing.plan_pay_off(plan_id=plan.pk, source="wallet", customer_id=customer.pk)

    assert payoff.quote.total == eur("190.00")  # 300.00 - 100.00 captured - 10.00 paid
    assert Plan.objects.get(pk=plan.pk).status == PlanStatus.COMPLETED
    assert receivable(plan) == 0  # no credit owed to the customer: nothing taken twice
    assert wallet_balance(customer) == 50_000 - 1_000 - 19_000


@pytest.mark.django_db
def test_a_declined_charge_is_no_longer_in_flight(customer, jan_10, card_processor):
    plan = plan_300(customer, payment_method="pm_review")
    payment, _ = debit_run_charge(card_processor, plan.installments.get(number=1), "pm_review")
    refused(IN_FLIGHT, servicing.plan_pay_off, plan_id=plan.pk, source="wallet")

    processor_reports(payment, EventKind.AUTHORIZATION, Outcome.FAILED)

    servicing.plan_pay_off(plan_id=plan.pk, source="wallet")
    assert Plan.objects.get(pk=plan.pk).status == PlanStatus.COMPLETED
    assert receivable(plan) == 0


@pytest.mark.django_db
def test_a_claimed_debit_blocks_payoff_until_its_outcome_is_recorded(
    customer, jan_10, unchanged_db
):
    plan = plan_300(customer)
    fund(customer, "300.00")
    requests = plan.debit_requests.filter(installment__number=1)
    # The debit run has claimed installment 1 (committed before its charge is sent).
    requests.update(attempts_made=1, next_attempt_at=None)
    check = unchanged_db()
    refused(IN_FLIGHT, servicing.plan_pay_off, plan_id=plan.pk, source="wallet")
    check()

    # The attempt's outcome is recorded (a soft decline, retry tomorrow): nothing in flight.
    requests.update(next_attempt_at=clock.now() + timedelta(days=1))
    servicing.plan_pay_off(plan_id=plan.pk, source="wallet")
    assert Plan.objects.get(pk=plan.pk).status == PlanStatus.COMPLETED
    assert not plan.debit_requests.exclude(
        status__in=(DebitRequestStatus.SETTLED, DebitRequestStatus.CANCELLED)
    ).exists()


@pytest.mark.django_db
def test_payoff_stops_a_request_waiting_for_a_new_card(customer, jan_10):
    plan = plan_300(customer)
    plan.debit_requests.filter(installment__number=1).update(
        attempts_made=1, status=DebitRequestStatus.ACTION_REQUIRED, next_attempt_at=None
    )

    servicing.plan_pay_off(plan_id=plan.pk, source="wallet")

    assert set(plan.debit_requests.values_list("status", flat=True)) == {DebitRequestStatus.SETTLED}


@pytest.mark.django_db
def test_cancel_waits_for_a_pending_down_payment(customer, jan_10, card_processor, unchanged_db):
    plan = plan_300(customer, payment_method="pm_review", down_payment="first_installment")
    down = plan.installments.get(number=1)
    assert not DebitRequest.objects.filter(installment=down).exists()  # charged at checkout
    assert installment_checkout_charge(installment_id=down.pk).decision == Decision.PENDING

    check = unchanged_db()
    refused(IN_FLIGHT, servicing.plan_cancel, plan_id=plan.pk)
    check()

    payment = PaymentTransaction.objects.get(reference_id=str(down.pk))
    processor_reports(payment, EventKind.AUTHORIZATION, Outcome.SUCCEEDED)
    processor_reports(payment, EventKind.CAPTURE, Outcome.SUCCEEDED)
    servicing.plan_cancel(plan_id=plan.pk)

    # The captured down payment is returned to the wallet; nothing stays on the receivable.
    assert Plan.objects.get(pk=plan.pk).status == PlanStatus.CANCELLED
    assert receivable(plan) == 0
    assert wallet_balance(customer) == 50_000 + 10_000


@pytest.mark.django_db
def test_reschedule_waits_for_a_card_payment_on_the_installments_it_changes(
    customer, jan_10, card_processor, unchanged_db
):
    plan = plan_300(customer, payment_method="pm_review")
    pending = servicing.installment_pay(
        plan_id=plan.pk, number=2, amount=eur("20.00"), source="card"
    )
    assert pending.status == "pending"

    check = unchanged_db()
    for number in (1, 2):  # installment 1's move changes installment 2's interest
        refused(
            IN_FLIGHT,
            servicing.plan_reschedule,
            plan_id=plan.pk,
            number=number,
            new_date=date(2026, 2, 12) if number == 1 else date(2026, 3, 12),
        )
    refused(
        IN_FLIGHT,
        servicing.plan_reschedule_preview,
        plan_id=plan.pk,
        number=1,
        new_date=date(2026, 2, 12),
    )
    check()
    # Installment 3's move changes only installment 3.
    servicing.plan_reschedule(plan_id=plan.pk, number=3, new_date=date(2026, 4, 12))


@pytest.mark.django_db
def test_pending_charge_exists_reads_only_the_references_asked_about(
    customer, jan_10, card_processor
):
    plan = plan_300(customer, payment_method="pm_review")
    first, second = plan.installments.filter(number__in=(1, 2)).order_by("number")
    payment, _ = debit_run_charge(card_processor, first, "pm_review")

    assert pending_charge_exists(references={INSTALLMENT_REFERENCE: [first.pk, second.pk]})
    assert not pending_charge_exists(references={INSTALLMENT_REFERENCE: [second.pk]})
    assert not pending_charge_exists(references={"oms.order": [str(first.pk)]})
    assert not pending_charge_exists(references={INSTALLMENT_REFERENCE: []})
    processor_reports(payment, EventKind.CANCEL, Outcome.SUCCEEDED)
    assert not pending_charge_exists(references={INSTALLMENT_REFERENCE: [first.pk]})


@pytest.mark.django_db(transaction=True)
def test_card_payment_racing_a_wallet_payoff_takes_the_money_once(customer, card_processor):
    plan = make_plan(customer=customer, amount="300.00", payment_method="pm_review")
    fund(customer, "300.00")

    def act(i: int) -> str:
        try:
            if i == 0:
                servicing.plan_pay_off(plan_id=plan.pk, source="wallet")
            else:
                servicing.installment_pay(
                    plan_id=plan.pk, number=1, amount=eur("100.00"), source="card"
                )
        except ApplicationError as error:
            return error.code
        return "ok"

    results = run_concurrently(3, act)

    # Either the payoff came first (the card payments find the plan complete) or one card
    # charge did (everything else finds it in flight); never both.
    assert results.count("ok") == 1, results
    assert set(results) - {"ok"} <= {IN_FLIGHT, "bnpl.plan_not_active"}, results
    first = plan.installments.get(number=1)
    card_won = results[0] != "ok"
    assert pending_charge_exists(references={INSTALLMENT_REFERENCE: [first.pk]}) == card_won
    assert Plan.objects.get(pk=plan.pk).status == (
        PlanStatus.ACTIVE if card_won else PlanStatus.COMPLETED
    )
    assert PaymentTransaction.objects.filter(reference_id=str(first.pk)).count() == card_won


@pytest.mark.django_db
def test_a_refund_waits_for_a_debit_the_run_has_claimed(customer, unchanged_db):
    plan = make_plan(customer=customer, amount="300.00")
    # The debit run claimed installment 1: an attempt is made, the request has no next time.
    plan.debit_requests.filter(installment__number=1).update(attempts_made=1, next_attempt_at=None)
    check = unchanged_db()

    with pytest.raises(ApplicationError) as refused:
        servicing.plan_refund(plan_id=plan.pk, amount=eur("300.00"))

    assert (refused.value.code, refused.value.status_code) == ("bnpl.charge_in_flight", 409)
    check()


@pytest.mark.django_db
def test_a_refund_waits_for_a_charge_under_review(customer, card_processor, unchanged_db):
    plan = make_plan(customer=customer, amount="300.00")
    first = plan.installments.get(number=1)
    debit_run_charge(card_processor, first, "pm_review")  # sent; the processor reviews it
    check = unchanged_db()

    with pytest.raises(ApplicationError) as refused:
        servicing.plan_refund(plan_id=plan.pk, amount=eur("100.00"))

    assert refused.value.code == "bnpl.charge_in_flight"
    check()
