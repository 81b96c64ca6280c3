"""What stops, restarts or redirects a plan's scheduled debits (collections executes them).

- ``plan_debits_hold``: while a dispute is open on the order the plan's debits are paused
  (the debit run skips paused plans); when the last one closes they run again, and anything
  that fell due meanwhile is picked up by the next run. The disputes are the order owner's
  records (``oms.Dispute``); ``plan_dispute_open`` / ``plan_dispute_close`` (the plan
  admin's actions) go through that owner, registered with ``register_dispute_owner``.
- ``debit_request_update_payment_method``: the customer's new saved card for a plan; requests
  waiting for one (a hard decline) or out of retries are scheduled again at once.

Each locks the plan (then its requests, in the lock order of ARCHITECTURE.md) and writes an
audit row in the same transaction.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Protocol

from django.db import transaction

from bnpl.models import DebitRequest, DebitRequestStatus, Plan, PlanStatus
from core import clock
from core.audit import audit_record
from core.errors import Conflict, InvalidInput
from payments.selectors import payment_method_owned

PAYMENT_METHOD_TOKEN = re.compile(r"^pm_[A-Za-z0-9_]{1,60}$")
RESTARTED = (DebitRequestStatus.ACTION_REQUIRED, DebitRequestStatus.EXHAUSTED)


def _locked_plan(plan_id: int) -> Plan:
    return Plan.objects.select_for_update(no_key=True).get(pk=plan_id)


class DisputeOwner(Protocol):
    """What the app owning a plan's reference (oms: ``"oms.order"``) does for the plan
    admin's dispute actions: open a dispute on the order, close the open ones."""

    def open(self, *, reference_id: str, reason: str, actor: Any) -> None: ...

    def close(self, *, reference_id: str, note: str, actor: Any) -> None: ...


_dispute_owners: dict[str, DisputeOwner] = {}


def register_dispute_owner(reference_type: str, owner: DisputeOwner) -> None:
    """Called by the owning app in its ``AppConfig.ready`` (imports point down)."""
    _dispute_owners[reference_type] = owner


def _dispute_owner(plan_id: int) -> tuple[Plan, DisputeOwner]:
    plan = Plan.objects.only("reference_type", "reference_id").get(pk=plan_id)
    owner = _dispute_owners.get(plan.reference_type)
    if owner is None:
        raise Conflict(
            "Disputes are opened on orders; this plan finances none.",
            code="bnpl.dispute_without_order",
        )
    return plan, owner


def plan_dispute_open(*, plan_id: int, reason: str, actor: Any = None) -> Plan:
    """Open a dispute on the plan's order through the order's owner (a dispute record);
    the open dispute is what pauses the plan's debits (``plan_debits_hold``)."""
    reason = reason.strip()
    if not reason:
        raise InvalidInput(
            "Say what the dispute is about.",
            code="bnpl.dispute_reason_required",
            fields={"reason": ["This field may not be blank."]},
        )
    plan, owner = _dispute_owner(plan_id)
    owner.open(reference_id=plan.reference_id, reason=reason, actor=actor)
    return Plan.objects.get(pk=plan_id)


def plan_dispute_close(*, plan_id: int, note: str = "", actor: Any = None) -> Plan:
    """Close the open disputes of the plan's order through its owner; the debits resume
    when none is left open."""
    plan, owner = _dispute_owner(plan_id)
    owner.close(reference_id=plan.reference_id, note=note, actor=actor)
    return Plan.objects.get(pk=plan_id)


def plan_debits_hold(*, plan_id: int, reasons: Sequence[str], actor: Any = None) -> Plan:
    """Pause the plan's debits while ``reasons`` (its order's open disputes) is not empty,
    resume them when it is: the one writer of ``debits_paused``. Runs in the caller's
    transaction, which holds the order's lock (lock order: order → plan)."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("plan_debits_hold runs inside the dispute's transaction")
    plan = _locked_plan(plan_id)
    paused = bool(reasons)
    reason = "; ".join(reasons)[:255] if paused else ""
    if (plan.debits_paused, plan.paused_reason) == (paused, reason):
        return plan
    before = {"debits_paused": plan.debits_paused, "paused_reason": plan.paused_reason}
    plan.debits_paused, plan.paused_reason = paused, reason
    plan.save(update_fields=["debits_paused", "paused_reason"])
    if before["debits_paused"] != paused:
        audit_record(
            actor=actor,
            action="bnpl.debits_paused" if paused else "bnpl.debits_resumed",
            target=plan,
            changes={
                field: {"old": old, "new": getattr(plan, field)} for field, old in before.items()
            },
        )
    return plan


@transaction.atomic(durable=True)
def debit_request_update_payment_method(
    *, plan_id: int, payment_method: str, actor: Any = None
) -> Plan:
    """Charge the plan's open debit requests to ``payment_method``: a token of one of the
    plan customer's saved cards (``payments.payment_method_unknown`` otherwise).

    Requests that were waiting for a new method (hard decline) or had used up their retries
    are scheduled again now; a request with an attempt in flight keeps that attempt and
    uses the new method from its next one.
    """
    if not PAYMENT_METHOD_TOKEN.fullmatch(payment_method or ""):
        raise InvalidInput(
            "Not a saved payment method.",
            code="bnpl.invalid_payment_method",
            fields={"payment_method": ["Must be a saved payment method token (pm_…)."]},
        )
    plan = _locked_plan(plan_id)
    if plan.status != PlanStatus.ACTIVE:
        raise Conflict(
            "Only an active plan's payment method can change.", code="bnpl.plan_not_active"
        )
    # The plan's customer's own saved card, locked so it is not removed meanwhile.
    payment_method_owned(
        customer_id=plan.customer_id, token=payment_method, field="payment_method", lock=True
    )
    before = plan.payment_method
    plan.payment_method = payment_method
    plan.save(update_fields=["payment_method"])
    open_requests = DebitRequest.objects.select_for_update(no_key=True).filter(
        plan=plan,
        status__in=(DebitRequestStatus.SCHEDULED, *RESTARTED),
    )
    ids = list(open_requests.order_by("pk").values_list("pk", flat=True))
    DebitRequest.objects.filter(pk__in=ids).update(payment_method=payment_method)
    restarted = DebitRequest.objects.filter(pk__in=ids, status__in=RESTARTED).update(
        status=DebitRequestStatus.SCHEDULED, next_attempt_at=clock.now()
    )
    audit_record(
        actor=actor,
        action="bnpl.payment_method_updated",
        target=plan,
        changes={
            "payment_method": [before, payment_method],
            "requests": len(ids),
            "restarted": restarted,
        },
    )
    return plan
