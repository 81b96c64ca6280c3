"""A chargeback on a financed order pauses its plan's debits: the debit run skips the plan
while the dispute is open and picks up what fell due once it closes.

Real commits, the card processor in the payment sandbox, its notifications over HTTP.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from bnpl.models import DebitRequest, InstallmentStatus
from core import clock
from oms.models import Dispute, DisputeStatus
from tests.collections.debit_helpers import charges_by_reference, run_day
from tests.oms.dispute_helpers import (
    close_at_processor,
    dispute_at_processor,
    down_payment_charge,
    place_financed_order,
    plan_of,
    wire_card_notifications,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def wired(sandbox, card_processor, live_server):
    yield from wire_card_notifications(sandbox, card_processor, live_server)


@pytest.fixture
def financed(customer, customer_api, stock, card_processor):
    return place_financed_order(customer, customer_api, stock)


def test_the_debit_run_skips_a_disputed_plan_and_collects_once_the_dispute_is_won(
    financed, wired, sandbox, django_capture_on_commit_callbacks
):
    plan = plan_of(financed)
    first = DebitRequest.objects.filter(plan=plan).order_by("next_attempt_at").first()
    due = first.next_attempt_at.astimezone(clock.business_tz()).date()
    reference = f"bnpl.installment:{first.installment_id}"

    opened = dispute_at_processor(
        sandbox, down_payment_charge(financed).provider_reference, reason="fraudulent"
    )
    assert plan_of(financed).debits_paused is True

    run = run_day(due, django_capture_on_commit_callbacks)
    assert run.due_count == 0
    assert reference not in charges_by_reference(sandbox)

    close_at_processor(sandbox, opened["id"], "won")
    assert Dispute.objects.get().status == DisputeStatus.WON
    assert plan_of(financed).debits_paused is False

    run = run_day(due + timedelta(days=3), django_capture_on_commit_callbacks)
    assert run.due_count == 1
    assert charges_by_reference(sandbox)[reference] == 1
    first.installment.refresh_from_db()
    assert first.installment.status == InstallmentStatus.PAID
