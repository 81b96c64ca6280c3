"""Shared pieces of the delinquency, reminder and write-off tests."""

from __future__ import annotations

from datetime import date, datetime, time

from django.db import transaction

from bnpl.models import Installment, Plan
from bnpl.services import installment_apply_payment, locked_plan_installment
from collections_ import delinquency, reminders
from core import clock
from core.money import Money
from ledger.models import Purpose
from ledger.services import system
from tests.bnpl.factories import make_plan


def moment(day: str | date, hour: int = 12) -> datetime:
    day = date.fromisoformat(day) if isinstance(day, str) else day
    return datetime.combine(day, time(hour), tzinfo=clock.business_tz())


def plan_from(customer, start: str = "2026-01-10", amount: str = "900.00", **product) -> Plan:
    """A 3-month plan started on ``start``: installments due on the 10th of the next months."""
    with clock.travel_to(moment(start)):
        return make_plan(
            customer=customer, amount=amount, start_date=date.fromisoformat(start), **product
        )


def run_delinquency(day: str) -> delinquency.DailyResult:
    with clock.travel_to(moment(day, hour=1)):
        return delinquency.delinquency_run(business_date=date.fromisoformat(day))


def run_reminders(day: str) -> dict[str, int]:
    with clock.travel_to(moment(day, hour=8)):
        return reminders.reminders_run(business_date=date.fromisoformat(day))


def pay_cash(installment: Installment, amount: str | None = None) -> None:
    """Pay an installment (in full by default) as money received at the cash desk."""
    with transaction.atomic():
        plan, inst = locked_plan_installment(installment.pk)
        money = (
            Money.parse(amount, plan.currency) if amount else Money(inst.outstanding, plan.currency)
        )
        installment_apply_payment(
            plan=plan,
            installment=inst,
            amount=money,
            source=system(Purpose.CASH_CLEARING, plan.currency),
            kind="bnpl.installment_paid",
            reference_type="test.cash",
            reference_id=str(inst.pk),
        )


def installments(plan: Plan) -> list[Installment]:
    return list(plan.installments.order_by("number"))


def fresh(plan: Plan) -> Plan:
    """The plan as stored now (its FSM status cannot be refreshed in place)."""
    return Plan.objects.get(pk=plan.pk)
