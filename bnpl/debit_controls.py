"""What stops, restarts or redirects a plan's scheduled debits (collections executes them).

- ``plan_dispute_open`` / ``plan_dispute_close``: while a dispute is open on the order the
  plan's debits are paused (the debit run skips paused plans); closing it lets them run
  again, and anything that fell due meanwhile is picked up by the next run.
- ``debit_request_update_payment_method``: the customer's new saved card for a plan; requests
  waiting for one (a hard decline) or out of retries are scheduled again at once.

Each locks the plan (then its requests, in the lock order of ARCHITECTURE.md) and writes an
audit row in the same transaction.
"""

from __future__ import annotations

import re
from typing import Any

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


@transaction.atomic(durable=True)
def plan_dispute_open(*, plan_id: int, reason: str, actor: Any = None) -> Plan:
    """Pause the plan's debits while a dispute is open on its order. Idempotent."""
    reason = reason.strip()
    if not reason:
        raise InvalidInput(
            "Say what the dispute is about.",
            code="bnpl.dispute_reason_required",
            fields={"reason": ["This field may not be blank."]},
        )
    plan = _locked_plan(plan_id)
    if plan.debits_paused:
        return plan
    plan.debits_paused = True
    plan.paused_reason = reason[:255]
    plan.save(update_fields=["debits_paused", "paused_reason"])
    audit_record(actor=actor, action="bnpl.dispute_opened", target=plan, changes={"reason": reason})
    return plan


@transaction.atomic(durable=True)
def plan_dispute_close(*, plan_id: int, note: str = "", actor: Any = None) -> Plan:
    """Resume the plan's debits. Idempotent."""
    plan = _locked_plan(plan_id)
    if not plan.debits_paused:
        return plan
    was = plan.paused_reason
    plan.debits_paused = False
    plan.paused_reason = ""
    plan.save(update_fields=["debits_paused", "paused_reason"])
    audit_record(
        actor=actor,
        action="bnpl.dispute_closed",
        target=plan,
        changes={"reason": was},
        note=note,
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
