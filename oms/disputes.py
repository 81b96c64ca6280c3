"""Disputes of orders: opened and closed by providers' notifications and by staff.

While an order has an open dispute, the installment plan financing it takes no debits:
every change here sets the plan's pause from the order's open disputes
(``bnpl.debit_controls.plan_debits_hold``) in the same transaction, under the order's lock
(lock order: order → plan). A notification that closes a dispute not seen yet creates it
closed; the open that arrives after it changes nothing, nor does any repeat.

A lost dispute's money (``_book_chargeback``), once per dispute, at most what the payment
captured less its refunds and earlier chargebacks: a card sale's processor takes it back
(merchant → gateway clearing); an installment's charge is handed to its owner
(``payments.events.register_chargeback``: bnpl makes the installment owed again); a
provider's BNPL (Klarna, Afterpay) is the provider's to bear with its customer, nothing is
posted. A notice in another currency than its payment's is refused by payments.

Staff may close a provider's dispute (the plan's debits resume); the provider's final word
still counts: a ``lost`` arriving on a dispute staff closed otherwise turns it lost and
books the chargeback (audited ``oms.dispute_outcome_from_provider``).

Locks: order → plan → (the owner's rows) → payment transaction → ledger accounts.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import Sum

from bnpl.debit_controls import plan_debits_hold
from bnpl.models import Installment, Plan
from core import clock
from core.audit import audit_record
from core.errors import Conflict, InvalidInput
from core.money import Money
from ledger.models import Purpose
from ledger.services import credit, debit, ledger_post, system
from oms.errors import DisputeAlreadyClosed, DisputeNotFound, OrderNotFound
from oms.models import Dispute, DisputeStatus, Order, PaymentMethod
from payments import events
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


def _locked_plan_id(order: Order) -> int | None:
    """Lock the plan financing the locked order, if any (lock order: order → plan)."""
    if order.payment_method != PaymentMethod.INSTALLMENTS:
        return None
    return (
        Plan.objects.select_for_update(no_key=True)
        .filter(reference_type=ORDER_REFERENCE, reference_id=str(order.pk))
        .values_list("pk", flat=True)
        .first()
    )


def _hold_plan(order: Order, actor: Any) -> None:
    """Pause the financing plan's debits exactly while the order has an open dispute."""
    plan_id = _locked_plan_id(order)
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
    """Book a lost dispute's chargeback once (module docstring), recorded on the dispute
    as ``charged_back``."""
    if dispute.status != DisputeStatus.LOST or dispute.payment_id is None or dispute.charged_back:
        return
    payment = PaymentTransaction.objects.select_related("account").get(pk=dispute.payment_id)
    if dispute.currency != payment.currency:
        return  # payments refuses such notices; a staff dispute names no payment
    earlier = (
        Dispute.objects.filter(payment_id=payment.pk)
        .exclude(pk=dispute.pk)
        .aggregate(total=Sum("charged_back", default=0))["total"]
    )
    memo = f"{payment.account.provider} dispute {dispute.provider_dispute_id or dispute.pk} lost"
    owner = events.chargeback_handler(payment.reference_type)
    if owner is not None:
        booked = owner(
            events.Chargeback(
                payment_id=payment.pk,
                reference_id=payment.reference_id,
                amount=dispute.amount_money,
                earlier=earlier,
                entry_reference_type="oms.dispute",
                entry_reference_id=str(dispute.pk),
                memo=memo,
            )
        )
        amount = booked.minor
    elif payment.account.provider == Provider.CARD and payment.reference_type == ORDER_REFERENCE:
        payment = PaymentTransaction.objects.select_for_update(no_key=True).get(pk=payment.pk)
        amounts = payment_amounts(payment)
        kept = amounts.captured.minor - amounts.refunded.minor - earlier
        amount = min(dispute.amount, max(kept, 0))
        if amount > 0:
            money = Money(amount, payment.currency)
            ledger_post(
                kind="oms.chargeback",
                legs=[
                    debit(system(Purpose.MERCHANT, money.currency), money),
                    credit(system(Purpose.GATEWAY_CLEARING, money.currency), money),
                ],
                reference_type="oms.dispute",
                reference_id=str(dispute.pk),
                memo=memo,
            )
    else:
        return
    if amount > 0:
        dispute.charged_back = amount
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


def _lost_after_staff_closed(dispute: Dispute, *, via: str) -> None:
    """The provider's final ``lost`` on a dispute staff closed otherwise: the processor
    took the money back whatever staff decided, so the dispute is lost and charged back."""
    before = dispute.status
    dispute.provider_lost()
    dispute.save(update_fields=["status"])
    _book_chargeback(dispute)
    audit_record(
        actor=None,
        actor_label=via,
        action="oms.dispute_outcome_from_provider",
        target=dispute,
        changes={
            "status": {"old": before, "new": dispute.status},
            "charged_back": {"old": 0, "new": dispute.charged_back},
        },
        note=f"closed by staff as {before}; the provider decided it lost",
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
    _locked_plan_id(order)
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
    _locked_plan_id(order)
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
    _locked_plan_id(order)
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
    _locked_plan_id(order)
    if notice.amount.currency != order.currency:
        raise InvalidInput(
            f"The dispute is in {notice.amount.currency}, the order in {order.currency}.",
            code="oms.dispute_currency_mismatch",
            fields={"currency": [f"Must be {order.currency}."]},
        )
    dispute = (
        Dispute.objects.select_for_update(no_key=True)
        .filter(order=order, provider=notice.provider, provider_dispute_id=notice.dispute_id)
        .first()
    )
    if dispute is None and (
        Dispute.objects.filter(provider=notice.provider, provider_dispute_id=notice.dispute_id)
        .exclude(order=order)
        .exists()
    ):
        raise Conflict(
            f"Dispute {notice.dispute_id} of {notice.provider} is on another order.",
            code="oms.dispute_on_another_order",
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
    elif (
        notice.status == DisputeStatus.LOST
        and dispute.status != DisputeStatus.LOST
        and dispute.closed_via == "staff"
    ):
        _lost_after_staff_closed(dispute, via=notice.via)
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
