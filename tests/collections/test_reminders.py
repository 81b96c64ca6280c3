from datetime import date

import pytest

from bnpl.models import DebitRequest, DebitRequestStatus, Plan
from collections_ import debits, selectors
from collections_.models import AttemptStatus, CollectionsSettings, DebitAttempt, FailureClass
from collections_.tasks import reminders_run
from core import clock
from core.models import OutboundEmail
from tests.collections.delinquency_helpers import (
    installments,
    moment,
    pay_cash,
    plan_from,
    run_delinquency,
    run_reminders,
)
from tests.factories import make_customer

pytestmark = pytest.mark.django_db


@pytest.fixture
def customer(web_channel):
    return make_customer()


def keys(prefix: str) -> list[str]:
    return sorted(
        OutboundEmail.objects.filter(dedupe_key__startswith=prefix).values_list(
            "dedupe_key", flat=True
        )
    )


def charge_due(day: date) -> None:
    """The debit run's charging step for ``day`` (synchronously, through the sandbox)."""
    with clock.travel_to(moment(day, hour=6)):
        cutoff = selectors.run_cutoff(day)
        ids = list(selectors.due_requests(cutoff=cutoff).values_list("pk", flat=True))
        debits.debit_requests_charge(request_ids=ids, cutoff=cutoff)


# --- before a debit -------------------------------------------------------------------


def test_a_reminder_three_days_before_each_debit_once(customer):
    plan = plan_from(customer)
    first, _second, _ = installments(plan)
    run_reminders("2026-02-06")
    assert keys("collections.debit_upcoming") == []
    run_reminders("2026-02-07")
    run_reminders("2026-02-07")
    run_reminders("2026-02-08")
    assert keys("collections.debit_upcoming") == [
        f"collections.debit_upcoming:{first.pk}:2026-02-10"
    ]
    email = OutboundEmail.objects.get(dedupe_key__startswith="collections.debit_upcoming")
    assert email.to == customer.user.email
    assert "300.00 EUR" in email.subject
    assert "10 February 2026" in email.body_text
    assert f"/api/v1/bnpl/plans/{plan.pk}/payment-method" in email.body_html
    run_reminders("2026-03-07")
    assert len(keys("collections.debit_upcoming")) == 2


def test_the_days_before_come_from_the_settings(customer):
    CollectionsSettings.objects.update_or_create(pk=1, defaults={"reminder_days_before": 5})
    plan_from(customer)
    run_reminders("2026-02-04")
    assert keys("collections.debit_upcoming") == []
    run_reminders("2026-02-05")
    assert len(keys("collections.debit_upcoming")) == 1


def test_no_upcoming_reminder_for_a_paid_installment_or_a_paused_plan(customer):
    paid = plan_from(customer)
    pay_cash(installments(paid)[0])
    paused = plan_from(customer)
    Plan.objects.filter(pk=paused.pk).update(debits_paused=True)
    run_reminders("2026-02-08")
    assert keys("collections.debit_upcoming") == []


# --- overdue --------------------------------------------------------------------------


def test_overdue_installments_are_reminded_at_most_once_a_week(customer):
    plan = plan_from(customer)
    first = installments(plan)[0]
    for day in ("2026-02-11", "2026-02-12", "2026-02-17"):
        run_delinquency(day)
        run_reminders(day)
    assert keys("collections.installment_overdue") == [
        f"collections.installment_overdue:{first.pk}:week-0"
    ]
    run_delinquency("2026-02-18")
    run_reminders("2026-02-18")
    run_reminders("2026-02-18")
    assert keys("collections.installment_overdue") == [
        f"collections.installment_overdue:{first.pk}:week-0",
        f"collections.installment_overdue:{first.pk}:week-1",
    ]
    latest = OutboundEmail.objects.get(dedupe_key__endswith="week-1")
    assert "8 days overdue" in latest.body_text


def test_a_paid_installment_gets_no_more_overdue_reminders(customer):
    plan = plan_from(customer)
    run_delinquency("2026-02-11")
    run_reminders("2026-02-11")
    pay_cash(installments(plan)[0])
    run_reminders("2026-02-18")
    assert len(keys("collections.installment_overdue")) == 1


def test_the_reminder_task_run_twice_queues_nothing_more(customer):
    plan_from(customer)
    run_delinquency("2026-03-13")
    with clock.travel_to(moment("2026-03-13")):
        first = reminders_run("2026-03-13")
        again = reminders_run("2026-03-13")
    assert first == {"debit_failed": 0, "upcoming": 0, "overdue": 2}
    assert again == {"debit_failed": 0, "upcoming": 0, "overdue": 0}


# --- failed debits --------------------------------------------------------------------


def test_a_soft_declined_debit_is_emailed_once_with_the_link_to_update_the_card(
    customer, card_processor, sandbox
):
    plan = plan_from(customer, payment_method="pm_decline")
    charge_due(date(2026, 2, 10))
    attempt = DebitAttempt.objects.get()
    assert (attempt.status, attempt.failure_class) == (AttemptStatus.FAILED, FailureClass.SOFT)
    run_reminders("2026-02-10")
    run_reminders("2026-02-10")
    assert keys("collections.debit_failed") == [f"collections.debit_failed:{attempt.pk}"]
    email = OutboundEmail.objects.get(dedupe_key__startswith="collections.debit_failed")
    link = f"http://127.0.0.1:8000/api/v1/bnpl/plans/{plan.pk}/payment-method"
    assert link in email.body_text
    assert f'href="{link}"' in email.body_html
    assert "We will try again on 11 February 2026" in email.body_text


def test_a_hard_decline_is_left_to_the_debit_runs_own_email(customer, card_processor, sandbox):
    plan_from(customer, payment_method="pm_lost")
    charge_due(date(2026, 2, 10))
    assert DebitRequest.objects.get(installment__number=1).status == (
        DebitRequestStatus.ACTION_REQUIRED
    )
    run_reminders("2026-02-10")
    assert keys("collections.debit_failed") == []
    assert len(keys("collections.payment_method_required")) == 1
