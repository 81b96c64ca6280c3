"""The delinquency run against itself: three runs of one day at once, on committed rows,
each thread with its own connection. Every action happens once."""

from __future__ import annotations

from datetime import date

import pytest

from bnpl.models import BorrowerProfile, Installment, InstallmentStatus
from collections_.delinquency import installments_mark_overdue, plans_delinquency_update
from collections_.models import DelinquencyTransition, LateFeeCharge
from core import clock
from core.models import AuditEntry, OutboundEmail
from tests.collections.delinquency_helpers import moment, plan_from
from tests.factories import ChannelFactory, make_customer

pytestmark = pytest.mark.django_db(transaction=True)

DAY = date(2026, 3, 15)  # installment 1: 33 days late (31-60), installment 2: 5 days (1-30)


def test_three_concurrent_runs_of_a_day_act_once(concurrently):
    ChannelFactory(code="web")
    customers = [make_customer() for _ in range(3)]
    plans = [
        plan_from(customers[i % 3], late_fee_amount=1000, late_fee_grace_days=3) for i in range(12)
    ]

    def run(i: int) -> None:
        with clock.travel_to(moment(DAY)):
            installments_mark_overdue(business_date=DAY, chunk=5)
            plans_delinquency_update(business_date=DAY, chunk=2)

    concurrently(3, run)

    late = Installment.objects.filter(plan__in=plans, number__in=[1, 2])
    assert set(late.values_list("status", flat=True)) == {InstallmentStatus.OVERDUE}
    assert set(late.values_list("late_fee", flat=True)) == {1000}
    assert LateFeeCharge.objects.count() == 24
    assert DelinquencyTransition.objects.count() == 12
    assert set(DelinquencyTransition.objects.values_list("to_bucket", flat=True)) == {"31-60"}
    assert (
        OutboundEmail.objects.filter(dedupe_key__startswith="collections.plan_bucket").count() == 12
    )
    assert BorrowerProfile.objects.filter(blocked_at__isnull=False).count() == 3
    assert AuditEntry.objects.filter(action="collections.bnpl_blocked").count() == 3
