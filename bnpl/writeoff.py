"""Writing off a plan's remaining balance (staff), and money recovered afterwards.

Ledger (DESIGN.md): the receivable holds outstanding principal only, so a write-off moves the
principal still owed to the write-off expense (debit WRITE_OFF_EXPENSE, credit receivable).
Interest, fees and late fees are income when paid (cash basis): those still unpaid were
never booked, so they are simply not collected and only named in the audit row. A recovery
(money received after the write-off) reduces the expense: debit the account the money
arrived on, credit WRITE_OFF_EXPENSE, never more in total than was written off.

Lock order: plan → installments (by number) → debit requests → ledger accounts.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import F

from bnpl.errors import PlanNotActive, PlanNotFound, PlanNotWrittenOff, RecoveryExceedsWriteOff
from bnpl.models import (
    DebitRequest,
    DebitRequestStatus,
    Installment,
    InstallmentStatus,
    Plan,
    PlanRecovery,
    PlanStatus,
)
from bnpl.services import OPEN_INSTALLMENT, plan_receivable
from core import clock
from core.audit import audit_record
from core.money import Money
from ledger.models import Purpose
from ledger.services import credit, debit, ledger_post, system


def _locked_plan(plan_id: int) -> Plan:
    try:
        return Plan.objects.select_for_update(no_key=True).get(pk=plan_id)
    except Plan.DoesNotExist:
        raise PlanNotFound() from None


@transaction.atomic(durable=True)
def plan_write_off(*, plan_id: int, actor: Any, note: str = "") -> Plan:
    """Write off what is left of an active plan: audited, one ledger entry.

    Every open installment becomes WRITTEN_OFF, every debit request still waiting is
    cancelled (nothing is charged any more), the plan becomes WRITTEN_OFF with the principal
    it still owed in ``written_off_amount``.
    """
    plan = _locked_plan(plan_id)
    if plan.status != PlanStatus.ACTIVE:
        raise PlanNotActive(f"Plan #{plan.pk} is {plan.get_status_display().lower()}.")
    installments = list(
        Installment.objects.select_for_update(no_key=True)
        .filter(plan=plan, status__in=OPEN_INSTALLMENT)
        .order_by("number")
    )
    principal = sum(i.principal - i.paid_principal for i in installments)
    forgone = {
        "interest": sum(i.interest - i.paid_interest for i in installments),
        "fees": sum(i.fee - i.paid_fee for i in installments),
        "late_fees": sum(i.late_fee - i.paid_late_fee for i in installments),
    }
    amount = Money(principal, plan.currency)
    if principal:
        ledger_post(
            kind="bnpl.write_off",
            legs=[
                debit(system(Purpose.WRITE_OFF_EXPENSE, plan.currency), amount),
                credit(
                    plan_receivable(customer_id=plan.customer_id, currency=plan.currency), amount
                ),
            ],
            reference_type="bnpl.plan",
            reference_id=str(plan.pk),
            memo=note,
        )
    Installment.objects.filter(pk__in=[i.pk for i in installments]).update(
        status=InstallmentStatus.WRITTEN_OFF
    )
    cancelled = DebitRequest.objects.filter(
        plan=plan,
        status__in=[DebitRequestStatus.SCHEDULED, DebitRequestStatus.ACTION_REQUIRED],
    ).update(status=DebitRequestStatus.CANCELLED, next_attempt_at=None)
    plan.write_off(at=clock.now(), amount=principal)
    plan.save(update_fields=["status", "written_off_at", "written_off_amount"])
    audit_record(
        actor=actor,
        action="bnpl.plan_write_off",
        target=plan,
        changes={
            "written_off": str(amount),
            "installments": [i.number for i in installments],
            "debit_requests_cancelled": cancelled,
            **{k: str(Money(v, plan.currency)) for k, v in forgone.items()},
        },
        note=note,
    )
    return plan


def plan_recovery_apply(
    *,
    plan: Plan,
    amount: Money,
    source: str,
    key: str,
    note: str = "",
    actor: Any = None,
) -> tuple[PlanRecovery | None, Money]:
    """Book money received for a locked written-off plan, in the caller's transaction.

    Applies at most what is left of the write-off (``written_off_amount − recovered_amount``)
    and returns (the recovery, the part not applied) so that a caller holding money that
    already arrived (a late card charge) can decide where the rest goes. A ``key`` already
    recorded applies nothing again.
    """
    if plan.status != PlanStatus.WRITTEN_OFF:
        raise PlanNotWrittenOff(f"Plan #{plan.pk} is {plan.get_status_display().lower()}.")
    if amount.currency != plan.currency or not amount.is_positive():
        raise ValueError(f"cannot recover {amount} on a {plan.currency} plan")
    existing = PlanRecovery.objects.filter(key=key).first()
    if existing is not None:
        return existing, Money.zero(plan.currency)
    left = plan.written_off_amount - plan.recovered_amount
    applied = Money(min(amount.minor, left), plan.currency)
    if not applied.is_positive():
        return None, amount
    ledger_post(
        kind="bnpl.recovery",
        legs=[
            debit(source, applied),
            credit(system(Purpose.WRITE_OFF_EXPENSE, plan.currency), applied),
        ],
        reference_type="bnpl.plan",
        reference_id=str(plan.pk),
        memo=note or f"recovery {key}",
    )
    recovery = PlanRecovery.objects.create(
        plan=plan,
        key=key,
        currency=plan.currency,
        amount=applied.minor,
        source=source,
        note=note[:255],
        recorded_by=actor if getattr(actor, "is_authenticated", False) else None,
        created_at=clock.now(),
    )
    Plan.objects.filter(pk=plan.pk).update(recovered_amount=F("recovered_amount") + applied.minor)
    plan.refresh_from_db(fields=["recovered_amount"])
    audit_record(
        actor=actor,
        action="bnpl.plan_recovery",
        target=plan,
        changes={"recovered": str(applied), "source": source, "key": key},
        note=note,
    )
    return recovery, amount - applied


@transaction.atomic(durable=True)
def plan_recovery_record(
    *,
    plan_id: int,
    amount: Money,
    key: str,
    actor: Any,
    source: Purpose = Purpose.CASH_CLEARING,
    note: str = "",
) -> PlanRecovery:
    """Staff record money received outside the gateways (e.g. a bank transfer).

    Refuses more than is left of the write-off; the same ``key`` (a double-submitted form)
    records once.
    """
    plan = _locked_plan(plan_id)
    existing = PlanRecovery.objects.filter(key=key, plan=plan).first()
    if existing is not None:
        return existing
    if plan.status != PlanStatus.WRITTEN_OFF:
        raise PlanNotWrittenOff(f"Plan #{plan.pk} is {plan.get_status_display().lower()}.")
    left = Money(plan.written_off_amount - plan.recovered_amount, plan.currency)
    if amount.currency != plan.currency or not amount.is_positive() or amount > left:
        raise RecoveryExceedsWriteOff(
            f"Plan #{plan.pk} has {left} of its write-off left to recover.",
            fields={
                "amount": [f"A positive amount in {plan.currency}, at most {left.amount_str()}."]
            },
            extra={"left": left.as_dict()},
        )
    recovery, _ = plan_recovery_apply(
        plan=plan,
        amount=amount,
        source=system(source, plan.currency),
        key=key,
        note=note,
        actor=actor,
    )
    return recovery
