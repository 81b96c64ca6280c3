"""Disputes of orders: opened and closed by providers' notifications and by staff.

While an order has an open dispute, the installment plan financing it takes no debits:
every change here sets the plan's pause from the order's open disputes
(``bnpl.debit_controls.plan_debits_hold``) in the same transaction, under the order's lock
(lock order: order → plan). A notification that closes a dispute not seen yet creates it
closed; the open that arrives after it changes nothing, nor does any repeat.

A lost dispute's money (``_book_chargeback``): a card sale's processor takes it back
(merchant → gateway clearing); a provider's BNPL (Klarna, Afterpay) is the provider's to
bear with its customer, nothing is posted; an installment debit charged back is recorded
as the outcome only, not booked (its installment would be owed again).
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import Sum

from bnpl.debit_controls import plan_debits_hold
from bnpl.models import Installment, Plan
from core import clock
from core.audit import audit_record
from core.errors import InvalidInput
from core.money import Money
from ledger.models import Purpose
from ledger.services import credit, debit, ledger_post, system
from oms.errors import DisputeAlreadyClosed, DisputeNotFound, OrderNotFound
from oms.models import Dispute, DisputeStatus, Order, PaymentMethod
from payments.events import DisputeNotice
from payments.models import PaymentTransaction, Provider
from payments.selectors import payment_amounts

ORDER_REFERENCE = "oms.order"
OUTCOMES = (DisputeStatus.WON, DisputeStatus.LOST, DisputeStatus.CLOSED)


def _user(actor: Any) -> Any:
    return actor if getattr(actor, "is_authenticated", False) else None


def _locked_order(order_id: int) -> Order:
    try:
        return Order.objects.select_for_update(no_key=True).get(pk=order_id)
    except Order.DoesNotExist:
        raise OrderNotFound() from None


def _hold_plan(order: Order, actor: Any) -> None:
    """Pause the financing plan's debits exactly while the order has an open dispute."""
    if order.payment_method != PaymentMethod.INSTALLMENTS:
        return
    plan_id = (
        Plan.objects.filter(reference_type=ORDER_REFERENCE, reference_id=str(order.pk))
        .values_list("pk", flat=True)
        .first()
    )
    if plan_id is None:
        return
    reasons = list(
        Dispute.objects.filter(order=order, status=DisputeStatus.OPEN)
        .order_by("opened_at", "pk")
        .values_list("reason", flat=True)
    )
    plan_debits_hold(plan_id=plan_id, reasons=reasons, actor=actor)


def _audit_open(dispute: Dispute, actor: Any) -> None:
    audit_record(
        actor=actor,
        actor_label=dispute.opened_via if _user(actor) is None else "",
        action="oms.dispute_opened",
        target=dispute,
        changes={
            "status": {"old": None, "new": DisputeStatus.OPEN},
            "order": {"old": None, "new": dispute.order_id},
            "amount": {"old": None, "new": str(dispute.amount_money)},
        },
        note=dispute.reason,
    )


def _book_chargeback(dispute: Dispute) -> None:
    """Post a lost card sale's chargeback: merchant → gateway clearing, the disputed amount
    but at most what the payment captured less its refunds and earlier chargebacks (the
    rest was given back already). Anything else lost posts nothing (module docstring)."""
    if dispute.status != DisputeStatus.LOST or dispute.payment_id is None:
        return
    payment = PaymentTransaction.objects.select_related("account").get(pk=dispute.payment_id)
    if payment.account.provider != Provider.CARD or payment.reference_type != ORDER_REFERENCE:
        return
    amounts = payment_amounts(payment)
    earlier = (
        Dispute.objects.filter(payment=payment)
        .exclude(pk=dispute.pk)
        .aggregate(total=Sum("charged_back", default=0))["total"]
    )
    kept = amounts.captured.minor - amounts.refunded.minor - earlier
    amount = Money(min(dispute.amount, max(kept, 0)), payment.currency)
    if not amount.is_positive():
        return
    ledger_post(
        kind="oms.chargeback",
        legs=[
            debit(system(Purpose.MERCHANT, amount.currency), amount),
            credit(system(Purpose.GATEWAY_CLEARING, amount.currency), amount),
        ],
        reference_type="oms.dispute",
        reference_id=str(dispute.pk),
        memo=f"card dispute {dispute.provider_dispute_id or dispute.pk} lost",
    )
    dispute.charged_back = amount.minor
    dispute.save(update_fields=["charged_back"])


def _close(dispute: Dispute, *, outcome: str, actor: Any, via: str, note: str) -> None:
    dispute.close(outcome=outcome, at=clock.now())
    dispute.closed_by = _user(actor)
    dispute.closed_via = via[:200]
    dispute.close_note = note[:255]
    dispute.save(update_fields=["status", "closed_at", "closed_by", "closed_via", "close_note"])
    _book_chargeback(dispute)
    changes = {"status": {"old": DisputeStatus.OPEN, "new": outcome}}
    if dispute.charged_back:
        changes["charged_back"] = {"old": 0, "new": dispute.charged_back}
    audit_record(
        actor=actor,
        actor_label=via if _user(actor) is None else "",
        action="oms.dispute_closed",
        target=dispute,
        changes=changes,
        note=note,
    )


# --- staff ------------------------------------------------------------------------------


@transaction.atomic(durable=True)
def dispute_open(
    *, order_id: int, reason: str, amount: Money | None = None, actor: Any = None
) -> Dispute:
    """Open a dispute on an order (staff: the customer disputed it with us); ``amount``
    defaults to the order's total and may not exceed it."""
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput(
            "Say what the dispute is about.",
            code="oms.dispute_reason_required",
            fields={"reason": ["This field may not be blank."]},
        )
    order = _locked_order(order_id)
    amount = amount or order.total_money
    if amount.currency != order.currency or not 0 < amount.minor <= order.total:
        raise InvalidInput(
            f"The disputed amount must be above zero and at most {order.total_money}.",
            code="oms.invalid_dispute_amount",
            fields={"amount": [f"Between 0 and {order.total_money}, in {order.currency}."]},
        )
    dispute = Dispute.objects.create(
        order=order,
        reason=reason[:255],
        amount=amount.minor,
        currency=amount.currency,
        opened_at=clock.now(),
        opened_by=_user(actor),
        opened_via="staff",
    )
    _audit_open(dispute, actor)
    _hold_plan(order, actor)
    return dispute


@transaction.atomic(durable=True)
def dispute_close(*, dispute_id: int, outcome: str, note: str = "", actor: Any = None) -> Dispute:
    """Close an open dispute with its outcome: ``won``, ``lost`` or ``closed`` (withdrawn).
    The plan's debits resume when it was the order's last open dispute."""
    if outcome not in OUTCOMES:
        raise InvalidInput(
            "The outcome is won, lost or closed.",
            code="oms.invalid_dispute_outcome",
            fields={"outcome": [f"One of {', '.join(OUTCOMES)}."]},
        )
    order_id = Dispute.objects.filter(pk=dispute_id).values_list("order_id", flat=True).first()
    if order_id is None:
        raise DisputeNotFound()
    order = _locked_order(order_id)
    dispute = Dispute.objects.select_for_update(no_key=True).get(pk=dispute_id)
    if dispute.status != DisputeStatus.OPEN:
        raise DisputeAlreadyClosed()
    _close(dispute, outcome=outcome, actor=actor, via="staff", note=note)
    _hold_plan(order, actor)
    return dispute


@transaction.atomic(durable=True)
def order_disputes_close(
    *, order_id: int, outcome: str = DisputeStatus.CLOSED, note: str = "", actor: Any = None
) -> int:
    """Close every open dispute of an order (the plan admin's "dispute closed"); how many."""
    order = _locked_order(order_id)
    open_disputes = list(
        Dispute.objects.select_for_update(no_key=True)
        .filter(order=order, status=DisputeStatus.OPEN)
        .order_by("pk")
    )
    for dispute in open_disputes:
        _close(dispute, outcome=outcome, actor=actor, via="staff", note=note)
    _hold_plan(order, actor)
    return len(open_disputes)


class PlanDisputes:
    """The plan admin's dispute actions, registered with bnpl for plans of orders."""

    def open(self, *, reference_id: str, reason: str, actor: Any) -> None:
        dispute_open(order_id=int(reference_id), reason=reason, actor=actor)

    def close(self, *, reference_id: str, note: str, actor: Any) -> None:
        order_disputes_close(order_id=int(reference_id), note=note, actor=actor)


# --- providers' notifications -------------------------------------------------------------


@transaction.atomic(durable=True)
def dispute_notice_apply(*, order_id: int, notice: DisputeNotice) -> Dispute:
    """Record a provider's word on a dispute of ``order_id``; idempotent.

    New: created open, or already closed when the close comes first. Open: closed when
    the notice says so. Closed: left as it is (a late open, a repeat).
    """
    order = _locked_order(order_id)
    dispute = (
        Dispute.objects.select_for_update(no_key=True)
        .filter(provider=notice.provider, provider_dispute_id=notice.dispute_id)
        .first()
    )
    now = clock.now()
    if dispute is None:
        dispute = Dispute.objects.create(
            order=order,
            payment_id=notice.payment_id,
            provider=notice.provider,
            provider_dispute_id=notice.dispute_id,
            reason=notice.reason[:255],
            amount=notice.amount.minor,
            currency=notice.amount.currency,
            opened_at=now,
            opened_via=notice.via[:200],
        )
        _audit_open(dispute, None)
    if dispute.status == DisputeStatus.OPEN and notice.status != DisputeStatus.OPEN:
        _close(dispute, outcome=notice.status, actor=None, via=notice.via, note="")
    _hold_plan(order, None)
    return dispute


def dispute_notice_for_order(notice: DisputeNotice) -> None:
    """``payments.events`` hand-up for payments of ``oms.order``."""
    dispute_notice_apply(order_id=int(notice.reference_id), notice=notice)


def dispute_notice_for_installment(notice: DisputeNotice) -> None:
    """``payments.events`` hand-up for an installment's debit (or down payment): the
    dispute is on the order the installment's plan finances."""
    plan = (
        Installment.objects.filter(pk=int(notice.reference_id))
        .values_list("plan__reference_type", "plan__reference_id")
        .first()
    )
    if plan is None or plan[0] != ORDER_REFERENCE:
        raise OrderNotFound(f"Installment {notice.reference_id} finances no order.")
    dispute_notice_apply(order_id=int(plan[1]), notice=notice)
