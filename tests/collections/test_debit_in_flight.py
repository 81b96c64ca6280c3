"""The debit run against everything else that may be charging the same installment: a slow
worker and the reconciler, servicing's card payments and payoffs, a charge approved without
its capture, one charge or attempt that fails in a way nobody planned for."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from bnpl.models import InstallmentStatus
from collections_ import debits, selectors
from collections_.models import AttemptStatus, DebitAttempt, FailureClass
from core import clock
from core.money import Money
from ledger.models import JournalEntry
from payments.processing import payment_send_many
from tests.bnpl.factories import make_plan
from tests.collections.debit_helpers import (
    charges_by_key,
    charges_by_reference,
    first_due,
    moment,
    sandbox_charges,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("customer_cards")]

START = date(2026, 3, 2)
DUE = date(2026, 4, 2)


def plans(customer, count=1, **kwargs):
    with clock.travel_to(moment(START)):
        return [make_plan(customer=customer, start_date=START, **kwargs) for _ in range(count)]


def claim(request, account):
    (charge,) = debits._claim(
        request_ids=[request.pk], cutoff=selectors.run_cutoff(DUE), run_id=None, account=account
    )
    return charge


# --- a worker that dies between claiming and recording ---------------------------------


def test_a_sent_attempt_is_asked_about_only_once_the_grace_has_passed_since_it_was_sent(
    customer, card_processor, sandbox
):
    """Claimed (its charge request on record) at 06:00 and sent at 06:04, its worker then
    dying before recording the answer: at 06:04 the provider's "never saw this key" could
    not be believed, so nobody asks; after the grace the reconciler reads it back by key."""
    (plan,) = plans(customer)
    installment = first_due(plan)
    with clock.travel_to(moment(DUE)):
        charge = claim(installment.debit_request, card_processor)
    with clock.travel_to(moment(DUE) + timedelta(minutes=4)):
        assert debits.debit_attempts_reconcile() == {}
        assert debits.debit_retries_process() == {}
        payment_send_many(
            account=card_processor, opened=[(charge.transaction_id, charge.request())]
        )
    with clock.travel_to(moment(DUE) + timedelta(minutes=6)):
        assert debits.debit_attempts_reconcile() == {AttemptStatus.SUCCEEDED: 1}
    attempt = DebitAttempt.objects.get()
    assert attempt.payment_transaction_id == charge.transaction_id
    assert charges_by_key(sandbox) == {attempt.idempotency_key: 1}
    installment.refresh_from_db()
    assert installment.status == InstallmentStatus.PAID


# --- servicing's card charges in flight -----------------------------------------------


def test_the_run_does_not_charge_an_installment_whose_card_payment_is_in_flight(
    customer, card_processor, sandbox, monkeypatch
):
    """The 06:00 run works its chunk while the customer's own card payment toward the same
    installment is on the wire: the installment is charged once."""
    from bnpl import servicing

    (plan,) = plans(customer, amount="300.00")
    installment = first_due(plan)
    real_send = servicing.payment_send
    during: dict[str, object] = {}

    def send_while_the_run_works(**kwargs):
        during["run"] = debits.debit_requests_charge(
            request_ids=[installment.debit_request.pk], cutoff=selectors.run_cutoff(DUE)
        )
        return real_send(**kwargs)

    monkeypatch.setattr(servicing, "payment_send", send_while_the_run_works)
    with clock.travel_to(moment(DUE)):
        servicing.installment_pay(
            plan_id=plan.pk,
            number=1,
            amount=Money(installment.outstanding, "EUR"),
            source="card",
        )
    assert during["run"] == {}
    assert not DebitAttempt.objects.exists()
    assert charges_by_reference(sandbox) == {f"bnpl.installment:{installment.pk}": 1}
    installment.refresh_from_db()
    assert installment.status == InstallmentStatus.PAID
    request = installment.debit_request
    assert request.status == "settled"
    assert JournalEntry.objects.filter(kind="bnpl.installment_paid").count() == 1


def test_the_run_waits_for_a_payoff_in_flight_then_finds_the_plan_paid_off(
    customer, card_processor, sandbox, monkeypatch
):
    from bnpl import servicing

    (plan,) = plans(customer, amount="300.00")
    installment = first_due(plan)
    request = installment.debit_request
    real_send = servicing.payment_send
    during: dict[str, object] = {}

    def send_while_the_run_works(**kwargs):
        during["run"] = debits.debit_requests_charge(
            request_ids=[request.pk], cutoff=selectors.run_cutoff(DUE)
        )
        request.refresh_from_db()
        during["next"] = request.next_attempt_at
        return real_send(**kwargs)

    monkeypatch.setattr(servicing, "payment_send", send_while_the_run_works)
    with clock.travel_to(moment(DUE)):
        servicing.plan_pay_off(plan_id=plan.pk, source="card")
    assert during["run"] == {}
    # Looked at again at the first technical step.
    assert timedelta(minutes=5) <= during["next"] - moment(DUE) < timedelta(minutes=6)
    assert not DebitAttempt.objects.exists()
    assert list(charges_by_reference(sandbox)) == [f"bnpl.plan_payoff:{plan.pk}"]
    with clock.travel_to(moment(DUE) + timedelta(minutes=6)):
        assert debits.debit_retries_process() == {}
        run = debits.debit_requests_charge(
            request_ids=[request.pk], cutoff=selectors.run_cutoff(DUE + timedelta(days=1))
        )
    assert run == {}
    assert list(charges_by_reference(sandbox)) == [f"bnpl.plan_payoff:{plan.pk}"]


# --- failures nobody planned for ------------------------------------------------------


def test_a_send_that_breaks_leaves_its_attempts_unknown_then_found_unsent_and_retried(
    customer, card_processor, sandbox, monkeypatch
):
    """A failure nobody planned for while sending a batch (a bug, a lost connection): the
    chunk's attempts are recorded unknown, never guessed. The reconciler asks the
    provider by key, finds nothing was charged, and the retry charges each once."""
    first, second = plans(customer, 2)
    real_send = debits.payment_send_many

    def send(**kwargs):
        raise RuntimeError("a bug while sending")

    monkeypatch.setattr(debits, "payment_send_many", send)
    requests = [first_due(p).debit_request.pk for p in (first, second)]
    with clock.travel_to(moment(DUE)):
        counts = debits.debit_requests_charge(
            request_ids=requests, cutoff=selectors.run_cutoff(DUE)
        )
    assert counts == {AttemptStatus.UNKNOWN: 2}
    assert {a.decline_code for a in DebitAttempt.objects.all()} == {"error"}
    assert sandbox_charges(sandbox) == []
    monkeypatch.setattr(debits, "payment_send_many", real_send)
    stuck = DebitAttempt.objects.first()
    with clock.travel_to(stuck.next_retry_at + timedelta(seconds=1)):
        assert debits.debit_attempts_reconcile() == {AttemptStatus.FAILED: 2}
    stuck.refresh_from_db()
    assert (stuck.failure_class, stuck.decline_code) == (FailureClass.TECHNICAL, "not_found")
    with clock.travel_to(stuck.next_retry_at + timedelta(seconds=1)):
        assert debits.debit_retries_process() == {AttemptStatus.SUCCEEDED: 2}
    assert {first_due(p).status for p in (first, second)} == {InstallmentStatus.PAID}
    assert sorted(charges_by_reference(sandbox).values()) == [1, 1]


def test_one_attempt_that_breaks_the_reconciler_leaves_the_others_reconciled(
    customer, card_processor, sandbox, monkeypatch
):
    first, second = plans(customer, 2)
    with clock.travel_to(moment(DUE)):
        charges = [claim(first_due(p).debit_request, card_processor) for p in (first, second)]
        debits._send(charges, card_processor)  # sent; the worker died before recording
    real_reconcile = debits.debit_attempt_reconcile

    def reconcile(*, attempt_id):
        if attempt_id == charges[0].attempt_id:
            raise RuntimeError("a bug in one attempt")
        return real_reconcile(attempt_id=attempt_id)

    monkeypatch.setattr(debits, "debit_attempt_reconcile", reconcile)
    with clock.travel_to(moment(DUE) + timedelta(minutes=10)):
        assert debits.debit_attempts_reconcile() == {"error": 1, AttemptStatus.SUCCEEDED: 1}
    monkeypatch.setattr(debits, "debit_attempt_reconcile", real_reconcile)
    with clock.travel_to(moment(DUE) + timedelta(minutes=11)):
        assert debits.debit_attempts_reconcile() == {AttemptStatus.SUCCEEDED: 1}
    assert set(DebitAttempt.objects.values_list("status", flat=True)) == {AttemptStatus.SUCCEEDED}


# --- approved without its capture -----------------------------------------------------


def test_an_off_session_charge_approved_without_its_capture_is_captured_by_key(
    customer, card_processor, sandbox, monkeypatch
):
    """A processor that holds an off-session charge (review) and then only authorizes it:
    the reconciler captures it under ``<key>:capture``, once, and the installment is paid.
    Until then a payment toward the installment is refused (in flight), never taken twice."""
    from payments.adapters.card import CardGateway
    from payments.gateway import Decision, GatewayResult
    from payments.models import PaymentEvent
    from payments.selectors import pending_charge_exists

    (plan,) = plans(customer)
    installment = first_due(plan)

    def held_then_authorized_only(self, charges):
        answers = [
            self.authorize(
                amount=c.amount,
                reference=c.reference,
                payment_method=c.payment_method,
                idempotency_key=c.idempotency_key,
            )
            for c in charges
        ]
        return [
            GatewayResult(
                Decision.PENDING, provider_reference=a.provider_reference, status="processing"
            )
            for a in answers
        ]

    monkeypatch.setattr(CardGateway, "charge_off_session_many", held_then_authorized_only)
    with clock.travel_to(moment(DUE)):
        assert debits.debit_requests_charge(
            request_ids=[installment.debit_request.pk], cutoff=selectors.run_cutoff(DUE)
        ) == {AttemptStatus.UNKNOWN: 1}
    monkeypatch.undo()
    attempt = DebitAttempt.objects.get()
    references = {"bnpl.installment": [installment.pk]}
    assert pending_charge_exists(references=references)

    with clock.travel_to(attempt.next_retry_at + timedelta(seconds=1)):
        assert debits.debit_attempts_reconcile() == {AttemptStatus.SUCCEEDED: 1}
        assert debits.debit_attempts_reconcile() == {}
    attempt.refresh_from_db()
    installment.refresh_from_db()
    assert installment.status == InstallmentStatus.PAID
    assert not pending_charge_exists(references=references)
    (charge,) = [
        c for c in sandbox_charges(sandbox) if c["reference"].endswith(f":{installment.pk}")
    ]
    assert (charge["status"], charge["amount_captured"]) == ("captured", attempt.amount)
    assert set(
        PaymentEvent.objects.filter(transaction_id=attempt.payment_transaction_id).values_list(
            "idempotency_key", "outcome"
        )
    ) == {
        (attempt.idempotency_key, "requested"),
        (f"{attempt.idempotency_key}:result", "succeeded"),
        (f"{attempt.idempotency_key}:capture", "requested"),
        (f"{attempt.idempotency_key}:capture:result", "succeeded"),
    }
    assert JournalEntry.objects.filter(kind="bnpl.installment_paid").count() == 1
