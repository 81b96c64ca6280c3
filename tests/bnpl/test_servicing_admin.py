"""Staff service plans from the admin: every action goes through a servicing service."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from django.urls import reverse

from bnpl.models import Installment, Plan, PlanStatus
from core import clock
from core.models import AuditEntry
from tests.bnpl.factories import make_plan

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:bnpl_plan_changelist"


@pytest.fixture
def jan_10():
    with clock.travel_to(datetime(2026, 1, 10, 12, tzinfo=UTC)):
        yield date(2026, 1, 10)


def plan_300(customer) -> Plan:
    return make_plan(
        customer=customer,
        amount="300.00",
        start_date=date(2026, 1, 10),
        reschedule_max_days=14,
        reschedule_max_count=2,
    )


def act(client, plan: Plan, action: str, **fields):
    return client.post(
        reverse(CHANGELIST),
        {"action": action, "_selected_action": [plan.pk], **fields},
        follow=True,
    )


def test_plan_page_shows_the_installments(admin_client, customer, jan_10):
    plan = plan_300(customer)
    assert "300.00 EUR" in admin_client.get(reverse(CHANGELIST)).content.decode()
    page = admin_client.get(reverse("admin:bnpl_plan_change", args=[plan.pk])).content.decode()
    assert "2026-02-10" in page or "Feb. 10, 2026" in page


def test_reschedule_action(admin_client, admin_user, customer, jan_10):
    plan = plan_300(customer)

    act(admin_client, plan, "reschedule", number=2, new_date="2026-03-17", note="")

    assert Installment.objects.get(plan=plan, number=2).due_date == date(2026, 3, 17)
    assert AuditEntry.objects.get(action="bnpl.plan_rescheduled").actor == admin_user


def test_refused_action_reports_the_reason_and_changes_nothing(admin_client, customer, jan_10):
    plan = plan_300(customer)

    response = act(admin_client, plan, "reschedule", number=2, new_date="2026-05-01")

    assert "At most 14 days" in response.content.decode()
    assert Installment.objects.get(plan=plan, number=2).due_date == date(2026, 3, 10)


def test_pay_off_received_action(admin_client, customer, jan_10):
    plan = plan_300(customer)

    act(admin_client, plan, "pay_off_received", note="bank transfer 123")

    assert Plan.objects.get(pk=plan.pk).status == PlanStatus.COMPLETED
    assert AuditEntry.objects.get(action="bnpl.plan_paid_off").note == "bank transfer 123"


def test_cancel_action(admin_client, customer, jan_10):
    plan = plan_300(customer)
    act(admin_client, plan, "cancel_plans", note="order cancelled")
    assert Plan.objects.get(pk=plan.pk).status == PlanStatus.CANCELLED


def test_refund_action(admin_client, customer, jan_10):
    plan = plan_300(customer)
    act(admin_client, plan, "refund", amount="120.00")
    plan = Plan.objects.get(pk=plan.pk)
    assert plan.refunded_amount == 12_000
    assert list(plan.installments.order_by("number").values_list("principal", flat=True)) == [
        10_000,
        8_000,
        0,
    ]
