"""Providers' dispute notifications: read, matched to the disputed payment, handed up.

The card processor's signed notifications (``payments.sandbox.server``) are
``{"id", "type": "dispute.opened" | "dispute.closed", "data": {"dispute_id",
"payment_id", "amount", "currency", "reason", "status"}}``, amounts in minor units,
``status`` ``open`` | ``won`` | ``lost`` | ``closed``; Klarna's: ``klarna_facts``;
Afterpay's (read back from Afterpay, outside any transaction): ``afterpay_facts``. The
notice goes to the handler the payment's owner registered (``events.register_dispute``);
the event is marked processed once the handler returns, so a crash in between only
repeats an idempotent call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.db import transaction

from core import clock
from core.errors import ApplicationError
from core.money import MAX_MINOR, Money, MoneyError
from payments import events
from payments.gateway import GatewayTechnicalError
from payments.models import PaymentTransaction, Provider, WebhookEvent

log = logging.getLogger(__name__)

OPEN, WON, LOST, CLOSED = "open", "won", "lost", "closed"
STATUSES = (OPEN, WON, LOST, CLOSED)
CARD_EVENT_TYPES = ("dispute.opened", "dispute.closed")


class Unreadable(Exception):
    """The notification does not say which dispute, payment, amount or state."""


class NotYet(Exception):
    """The notification cannot be read or matched now, but may be later (a provider that
    did not answer, a payment not recorded yet): it is tried again (``RETRY_MINUTES``)."""


# Minutes between the tries of a dispute notification that failed for a passing reason;
# after the last one it stays failed for a person (the webhook events admin).
RETRY_MINUTES = (1, 5, 15, 60, 180, 720, 1440)


class Facts:
    """What a notification says about a dispute, before it is matched to a payment."""

    def __init__(
        self, *, dispute_id: str, payment_reference: str, status: str, reason: str, amount: Money
    ) -> None:
        self.dispute_id = dispute_id
        self.payment_reference = payment_reference
        self.status = status
        self.reason = reason
        self.amount = amount


def _text(data: dict[str, Any], name: str, limit: int) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise Unreadable(f"{name} must be a non-empty string of at most {limit} characters")
    return value.strip()


def _minor(data: dict[str, Any], name: str, currency: str) -> Money:
    value = data.get(name)
    if type(value) is not int or value <= 0:
        raise Unreadable(f"{name} must be a positive integer of minor units")
    if value > MAX_MINOR:
        raise Unreadable(f"{name} is too large")
    try:
        return Money(value, currency)
    except MoneyError as exc:  # an unknown currency
        raise Unreadable(f"{name}: {exc.message}") from None


def card_facts(event: WebhookEvent) -> Facts:
    """The card processor's ``dispute.*`` notification (our own documented format)."""
    data = event.payload.get("data")
    if not isinstance(data, dict):
        raise Unreadable("data must be an object")
    status = data.get("status")
    if status not in STATUSES:
        raise Unreadable(f"status must be one of {', '.join(STATUSES)}")
    if (event.event_type == "dispute.opened") != (status == OPEN):
        raise Unreadable(f"a {event.event_type} notification cannot say {status}")
    return Facts(
        dispute_id=_text(data, "dispute_id", 128),
        payment_reference=_text(data, "payment_id", 128),
        status=status,
        reason=_text(data, "reason", 255),
        amount=_minor(data, "amount", _text(data, "currency", 3).upper()),
    )


KLARNA_OPEN_STATES = (
    "INITIATED",
    "REPRESENTMENT",
    "PRE_ARBITRATION",
    "ARBITRATION",
    "ARBITRATION_PENDING",
    "MERCHANT_EVIDENCE_PENDING",
)
KLARNA_EVENT_PREFIX = "payment.dispute.state-change."


def klarna_facts(event: WebhookEvent) -> Facts:
    """Klarna's ``payment.dispute.state-change.*`` webhook, as its disputes integration
    documents it (docs.klarna.com, "Disputes integration with API"): the payload is the
    dispute; ``CLOSED`` carries ``state_context.outcome`` (``WON`` | ``LOST``; anything
    else is closed without a decision). The Klarna order is the last part of
    ``payment_transaction_id`` (``krn:payment:eu1:authorization:<order id>``)."""
    data = event.payload.get("data")
    if not isinstance(data, dict):
        raise Unreadable("payload must be an object")
    state = data.get("state")
    details = data.get("dispute_details")
    if not isinstance(details, dict):
        raise Unreadable("dispute_details must be an object")
    if state == "CLOSED":
        context = data.get("state_context")
        outcome = context.get("outcome") if isinstance(context, dict) else None
        status = {"WON": WON, "LOST": LOST}.get(outcome, CLOSED)
    elif state in KLARNA_OPEN_STATES:
        status = OPEN
    else:
        raise Unreadable(f"unknown dispute state {state!r}")
    transaction_id = _text(data, "payment_transaction_id", 200)
    return Facts(
        dispute_id=_text(data, "payment_dispute_id", 128),
        payment_reference=transaction_id.rsplit(":", 1)[-1],
        status=status,
        reason=_text(data, "dispute_reason", 255),
        amount=_minor(details, "dispute_amount", _text(details, "currency", 3).upper()),
    )


AFTERPAY_EVENT_TYPES = ("dispute.created", "dispute.updated")


def afterpay_facts(event: WebhookEvent) -> Facts:
    """Afterpay's notification names a dispute only; the dispute is read back from
    Afterpay (``GET /v2/disputes/{id}``, developers.afterpay.com "Integrate with the
    Disputes API"): ``order`` is the payment, ``amount`` a decimal string in the payment's
    currency, ``open`` while undecided, then ``status`` ``won`` | ``lost``."""
    from payments.processing import gateway_for
    from payments.selectors import enabled_account

    dispute_id = _text(event.payload.get("data") or {}, "dispute_id", 128)
    account = enabled_account(Provider.AFTERPAY)
    if account is None:
        raise Unreadable("no enabled Afterpay account to read the dispute from")
    try:
        dispute = gateway_for(account).dispute(dispute_id)
    except GatewayTechnicalError as exc:
        raise NotYet(f"Afterpay did not answer: {exc}") from None
    if dispute is None:
        raise Unreadable(f"Afterpay has no dispute {dispute_id!r}")
    order = str(dispute.get("order") or "")
    currency = (
        PaymentTransaction.objects.filter(
            account__provider=Provider.AFTERPAY, provider_reference=order
        )
        .values_list("currency", flat=True)
        .first()
    )
    if currency is None:
        raise NotYet(f"no transaction {order!r}")
    try:
        amount = Money.parse(str(dispute.get("amount")), currency)
    except MoneyError as exc:
        raise Unreadable(f"amount: {exc.message}") from None
    if not amount.is_positive():
        raise Unreadable("amount must be above zero")
    if dispute.get("open") is True:
        status = OPEN
    else:
        status = {"won": WON, "lost": LOST}.get(dispute.get("status"), CLOSED)
    return Facts(
        dispute_id=_text(dispute, "id", 128),
        payment_reference=order,
        status=status,
        reason=_text(dispute, "reason", 255),
        amount=amount,
    )


READERS: dict[str, tuple[tuple[str, ...], Callable[[WebhookEvent], Facts]]] = {
    Provider.CARD: (CARD_EVENT_TYPES, card_facts),
    Provider.KLARNA: ((KLARNA_EVENT_PREFIX,), klarna_facts),
    Provider.AFTERPAY: (AFTERPAY_EVENT_TYPES, afterpay_facts),
}


def is_dispute_event(provider: str, event_type: str) -> bool:
    reader = READERS.get(provider)
    if reader is None:
        return False
    if provider == Provider.KLARNA:
        return event_type.startswith(KLARNA_EVENT_PREFIX)
    return event_type in reader[0]


def _finish(event_id: int, *, error: str = "", again: bool = False) -> WebhookEvent:
    """Mark the event processed, or failed with ``error``; ``again``: a passing cause,
    tried again after ``RETRY_MINUTES`` until they are used up."""
    with transaction.atomic(durable=True):
        event = WebhookEvent.objects.select_for_update(no_key=True).get(pk=event_id)
        if event.status == WebhookEvent.Status.PROCESSED:
            return event
        event.attempts += 1
        event.last_error = error
        event.next_attempt_at = None
        if error:
            event.status = WebhookEvent.Status.FAILED
            if again and event.attempts <= len(RETRY_MINUTES):
                wait = timedelta(minutes=RETRY_MINUTES[event.attempts - 1])
                event.next_attempt_at = clock.now() + wait
        else:
            event.status = WebhookEvent.Status.PROCESSED
            event.processed_at = clock.now()
        event.save(
            update_fields=["status", "attempts", "processed_at", "last_error", "next_attempt_at"]
        )
    return event


def dispute_event_process(*, event_id: int) -> WebhookEvent:
    """Hand a stored dispute notification to the disputed payment's owner, once.

    Unreadable, unmatched or unowned notifications are marked failed with the reason.
    """
    event = WebhookEvent.objects.get(pk=event_id)
    if event.status == WebhookEvent.Status.PROCESSED:
        return event
    try:
        facts = READERS[event.provider][1](event)
    except Unreadable as exc:
        return _finish(event_id, error=f"unreadable dispute notification: {exc}")
    except NotYet as exc:
        return _finish(event_id, error=f"not yet: {exc}", again=True)
    payment = (
        PaymentTransaction.objects.filter(
            account__provider=event.provider, provider_reference=facts.payment_reference
        )
        .only("pk", "reference_type", "reference_id", "currency")
        .first()
    )
    if payment is None:  # perhaps not recorded yet (the answer of its call still on its way)
        return _finish(event_id, error=f"no transaction {facts.payment_reference!r}", again=True)
    if facts.amount.currency != payment.currency:
        # A fact in another currency is flagged for a person, never converted or added in.
        return _finish(
            event_id,
            error=f"payments.dispute_currency_mismatch: the dispute is in "
            f"{facts.amount.currency}, the payment in {payment.currency}",
        )
    handler = events.dispute_handler(payment.reference_type)
    if handler is None:
        return _finish(event_id, error=f"nobody records disputes of {payment.reference_type}")
    notice = events.DisputeNotice(
        provider=event.provider,
        dispute_id=facts.dispute_id,
        payment_id=payment.pk,
        reference_id=payment.reference_id,
        status=facts.status,
        reason=facts.reason,
        amount=facts.amount,
        via=f"webhook:{event.provider}:{event.event_id}",
    )
    try:
        handler(notice)
    except ApplicationError as exc:  # refused by the owner: failed, with its reason
        return _finish(event_id, error=f"not applied: {exc.code}: {exc.message}"[:1000])
    except Exception as exc:
        log.exception("dispute notification %s not applied", event.pk)
        _finish(event_id, error=f"not applied: {exc}"[:1000], again=True)
        raise
    return _finish(event_id)


def dispute_events_retry(*, limit: int = 500) -> dict[str, int]:
    """Process again the failed dispute notifications whose next try is due, oldest due
    first; how many ended in each status."""
    due = list(
        WebhookEvent.objects.filter(
            status=WebhookEvent.Status.FAILED, next_attempt_at__lte=clock.now()
        )
        .order_by("next_attempt_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )
    counts: dict[str, int] = {}
    for event_id in due:
        try:
            status = dispute_event_process(event_id=event_id).status
        except Exception:  # logged and marked by dispute_event_process; the next goes on
            status = WebhookEvent.Status.FAILED
        counts[status] = counts.get(status, 0) + 1
    return counts
