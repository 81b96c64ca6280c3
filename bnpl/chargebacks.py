"""A lost dispute on an installment's charge: the installment is owed again.

Registered with ``payments.events.register_chargeback`` for ``bnpl.installment``. The
processor took the money back, so the capture's entry is reversed (debit the receivable,
interest and fee income for what it paid of each, credit gateway clearing), at most what
the payment captured less its refunds and earlier chargebacks. The installment's counters
go back (principal first, the reverse of ``allocate_payment``), it is scheduled or overdue
again and its debit request is scheduled again (collections picks it up when the plan's
debits resume); a completed plan is active again. A cancelled or written-off plan owes
nothing more: the merchant bears it. Runs in the caller's transaction, which holds the
order and plan locks; here: installment → debit request → payment transaction → ledger.
"""

from __future__ import annotations

from datetime import timedelta

from django.db import transaction

from bnpl.models import (
    DebitRequest,
    DebitRequestStatus,
    Installment,
    InstallmentStatus,
    Plan,
    PlanStatus,
)
from bnpl.services import due_moment, plan_receivable
from core import clock
from core.audit import audit_record
from core.money import Money
from ledger.models import Purpose
from ledger.services import credit, debit, ledger_post, system
from payments.events import Chargeback
from payments.models import PaymentTransaction
from payments.selectors import payment_amounts


def installment_charge_back(chargeback: Chargeback) -> Money:
    """Book ``chargeback`` on its installment once; what was booked (zero when the payment
    kept nothing more, or the amount is not in the payment's currency)."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("installment_charge_back runs inside the dispute's transaction")
    plan_id = Installment.objects.values_list("plan_id", flat=True).get(
        pk=int(chargeback.reference_id)
    )
    plan = Plan.objects.select_for_update(no_key=True).get(pk=plan_id)
    installment = Installment.objects.select_for_update(no_key=True).get(
        pk=int(chargeback.reference_id)
    )
    request = (
        DebitRequest.objects.select_for_update(no_key=True).filter(installment=installment).first()
    )
    payment = PaymentTransaction.objects.select_for_update(no_key=True).get(
        pk=chargeback.payment_id
    )
    currency = payment.currency
    if chargeback.amount.currency != currency or currency != plan.currency:
        return Money(0, currency)
    amounts = payment_amounts(payment)
    kept = amounts.captured.minor - amounts.refunded.minor - chargeback.earlier
    amount = min(chargeback.amount.minor, max(kept, 0))
    if amount <= 0:
        return Money(0, currency)

    # What the charge paid of each part comes back, principal first.
    back = {"principal": 0, "interest": 0, "fee": 0, "late_fee": 0}
    if plan.status in (PlanStatus.ACTIVE, PlanStatus.COMPLETED):
        rest = amount
        for part in back:
            taken = min(rest, getattr(installment, f"paid_{part}"))
            back[part], rest = taken, rest - taken
    merchant = amount - sum(back.values())  # beyond what the installment holds: a loss
    receivable = plan_receivable(customer_id=plan.customer_id, currency=currency)
    legs = [
        debit(receivable, Money(back["principal"], currency)),
        debit(system(Purpose.INTEREST_INCOME, currency), Money(back["interest"], currency)),
        debit(
            system(Purpose.FEE_INCOME, currency), Money(back["fee"] + back["late_fee"], currency)
        ),
        debit(system(Purpose.MERCHANT, currency), Money(merchant, currency)),
        credit(system(Purpose.GATEWAY_CLEARING, currency), Money(amount, currency)),
    ]
    ledger_post(
        kind="bnpl.installment_charged_back",
        legs=[leg for leg in legs if leg.amount.minor],
        reference_type=chargeback.entry_reference_type,
        reference_id=chargeback.entry_reference_id,
        memo=chargeback.memo,
    )
    changes: dict[str, object] = {"charged_back": str(Money(amount, currency))}
    if merchant < amount:
        _owed_again(plan, installment, request, back, changes)
    audit_record(
        action="bnpl.installment_charged_back",
        target=installment,
        changes=changes,
        note=chargeback.memo,
    )
    return Money(amount, currency)


def _owed_again(
    plan: Plan,
    installment: Installment,
    request: DebitRequest | None,
    back: dict[str, int],
    changes: dict[str, object],
) -> None:
    for part, taken in back.items():
        setattr(installment, f"paid_{part}", getattr(installment, f"paid_{part}") - taken)
    fields = ["paid_principal", "paid_interest", "paid_fee", "paid_late_fee"]
    if installment.status == InstallmentStatus.PAID:
        overdue = installment.due_date < clock.business_date()
        status = InstallmentStatus.OVERDUE if overdue else InstallmentStatus.SCHEDULED
        changes["status"] = {"old": installment.status, "new": status}
        installment.status, installment.paid_at = status, None
        if overdue and installment.overdue_since is None:
            installment.overdue_since = installment.due_date + timedelta(days=1)
        fields += ["status", "paid_at", "overdue_since"]
    installment.save(update_fields=fields)
    if request is not None and request.status == DebitRequestStatus.SETTLED:
        request.status = DebitRequestStatus.SCHEDULED
        request.next_attempt_at = max(due_moment(installment.due_date), clock.now())
        request.save(update_fields=["status", "next_attempt_at"])
        changes["debit_request"] = {"old": DebitRequestStatus.SETTLED, "new": request.status}
    if plan.status == PlanStatus.COMPLETED:
        plan.reopen()
        plan.save(update_fields=["status", "completed_at"])
        changes["plan"] = {"old": PlanStatus.COMPLETED, "new": plan.status}
