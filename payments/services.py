"""Every write to payment records: events, webhooks, provider secrets.

Lock order (ARCHITECTURE.md): … → payment transaction → ledger accounts.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction

from core import clock
from core.audit import audit_record
from core.errors import InvalidInput
from core.money import Money
from ledger.models import Purpose
from ledger.services import credit, debit, ledger_post, system
from payments import crypto, events
from payments.errors import CaptureExceedsAuthorized, RefundExceedsCaptured
from payments.models import (
    EventKind,
    Outcome,
    PaymentEvent,
    PaymentTransaction,
    Provider,
    ProviderAccount,
    Source,
    WebhookEvent,
)
from payments.selectors import payment_amounts

# Notification types of the signed webhook format and the fact each one reports.
WEBHOOK_FACTS: dict[str, tuple[EventKind, Outcome]] = {
    "payment.authorized": (EventKind.AUTHORIZATION, Outcome.SUCCEEDED),
    "payment.authorization_failed": (EventKind.AUTHORIZATION, Outcome.FAILED),
    "payment.captured": (EventKind.CAPTURE, Outcome.SUCCEEDED),
    "payment.capture_failed": (EventKind.CAPTURE, Outcome.FAILED),
    "payment.refunded": (EventKind.REFUND, Outcome.SUCCEEDED),
    "payment.refund_failed": (EventKind.REFUND, Outcome.FAILED),
    "payment.cancelled": (EventKind.CANCEL, Outcome.SUCCEEDED),
}


def _flag(txn: PaymentTransaction, reason: str) -> None:
    txn.flagged = True
    txn.flag_reason = f"{txn.flag_reason}\n{reason}".strip()
    txn.save(update_fields=["flagged", "flag_reason"])


def payment_event_record(
    *,
    transaction_id: int,
    kind: EventKind,
    outcome: Outcome,
    amount: Money,
    idempotency_key: str,
    source: Source,
    detail: dict[str, Any] | None = None,
) -> PaymentEvent:
    """Append a fact to a transaction, in the caller's transaction; idempotent per key.

    What we ask of a provider (``source=api``, ``requested``) is held to the derived
    amounts: no capture beyond what is authorized and not cancelled, no refund beyond
    what was captured. What a provider reports is recorded as it comes, in any order
    (a capture may arrive before its authorization); an amount or currency that does
    not match ours flags the transaction for a person to look at.

    One fact has one key: a provider's report of the answer to one of our requests is
    recorded under ``"<request key>:result"``, whether it comes as the call's answer, a
    webhook or a read-back, so the second to arrive changes nothing (but is still checked
    against the first). The capture of an off-session charge (an authorization request
    sent with ``capture``) is likewise one fact, ``"<request key>:capture"``.
    """
    txn = (
        PaymentTransaction.objects.select_for_update(no_key=True, of=("self",))
        .select_related("account")
        .get(pk=transaction_id)
    )
    existing = PaymentEvent.objects.filter(transaction=txn, idempotency_key=idempotency_key).first()
    if existing is not None:
        if (existing.kind, existing.outcome, existing.amount, existing.currency) != (
            kind,
            outcome,
            amount.minor,
            amount.currency,
        ):
            _flag(
                txn,
                f"{kind} {outcome} {amount} reported again for {idempotency_key}, "
                f"recorded as {existing.kind} {existing.outcome} "
                f"{Money(existing.amount, existing.currency)}",
            )
        return existing
    if amount.currency != txn.currency and source == Source.API:
        raise InvalidInput(
            f"This payment is in {txn.currency}, not {amount.currency}.",
            code="payments.currency_mismatch",
            fields={"amount": [f"Must be in {txn.currency}."]},
        )
    if amount.currency != txn.currency:
        _flag(
            txn,
            f"{kind} {outcome} reported in {amount.currency}, transaction is in "
            f"{txn.currency} ({idempotency_key})",
        )
    elif source == Source.API and outcome == Outcome.REQUESTED:
        amounts = payment_amounts(txn)
        if kind == EventKind.CAPTURE and amount > amounts.capturable:
            raise CaptureExceedsAuthorized(
                f"{amounts.capturable} can still be captured; {amount} was asked."
            )
        if kind == EventKind.REFUND and amount > amounts.refundable:
            raise RefundExceedsCaptured(
                f"{amounts.refundable} can still be refunded; {amount} was asked."
            )
    request_key = (detail or {}).get("request_id")
    if source != Source.API and request_key:
        asked = PaymentEvent.objects.filter(
            transaction=txn, idempotency_key=request_key, outcome=Outcome.REQUESTED
        ).first()
        if asked is not None and (asked.amount, asked.currency) != (amount.minor, amount.currency):
            _flag(
                txn,
                f"{kind} reported as {amount} but {Money(asked.amount, asked.currency)}"
                f" was asked ({request_key})",
            )
    recorded = PaymentEvent.objects.create(
        transaction=txn,
        kind=kind,
        outcome=outcome,
        amount=amount.minor,
        currency=amount.currency,
        idempotency_key=idempotency_key,
        source=source,
        detail=detail or {},
        created_at=clock.now(),
    )
    _post_money_movement(txn=txn, event=recorded, amount=amount)
    if kind == EventKind.AUTHORIZATION and outcome in (Outcome.SUCCEEDED, Outcome.FAILED):
        events.authorization_settled(
            reference_type=txn.reference_type,
            reference_id=txn.reference_id,
            approved=outcome == Outcome.SUCCEEDED,
        )
    return recorded


def _post_money_movement(*, txn: PaymentTransaction, event: PaymentEvent, amount: Money) -> None:
    """A succeeded capture moves money (clearing → merchant); a refund moves it back.

    Authorizations and cancels hold or release a limit and move nothing. The entry is
    written in the transaction that records the fact, so the two cannot part.
    """
    if event.outcome != Outcome.SUCCEEDED or event.kind not in (
        EventKind.CAPTURE,
        EventKind.REFUND,
    ):
        return
    if amount.currency != txn.currency or not amount.is_positive():
        return  # flagged above; a person decides what the money was
    purpose = (
        Purpose.GATEWAY_CLEARING
        if txn.account.provider == Provider.CARD
        else Purpose.PROVIDER_CLEARING
    )
    clearing = system(purpose, amount.currency)
    settle = events.settlement_handler(txn.reference_type)
    if settle is not None:  # the owner books its own money (an installment, not a sale)
        settle(payment=txn, kind=event.kind, amount=amount, clearing=clearing)
        return
    merchant = system(Purpose.MERCHANT, amount.currency)
    legs = (
        [debit(clearing, amount), credit(merchant, amount)]
        if event.kind == EventKind.CAPTURE
        else [debit(merchant, amount), credit(clearing, amount)]
    )
    ledger_post(
        kind=f"payments.{event.kind}",
        legs=legs,
        reference_type="payments.transaction",
        reference_id=str(txn.pk),
        memo=f"{txn.account.provider} {event.idempotency_key}",
    )


# --- webhooks -------------------------------------------------------------------------


def webhook_event_store(*, provider: str, payload: dict[str, Any]) -> tuple[WebhookEvent, bool]:
    """Store a verified notification once per (provider, event id); True if it is new.

    Processing is enqueued after commit; a duplicate delivery changes nothing.
    """
    from payments.tasks import process_webhook_event

    with transaction.atomic(durable=True):
        try:
            with transaction.atomic():
                event = WebhookEvent.objects.create(
                    provider=provider,
                    event_id=str(payload["id"]),
                    event_type=str(payload["type"]),
                    payload=payload,
                    received_at=clock.now(),
                )
        except IntegrityError:
            return WebhookEvent.objects.get(provider=provider, event_id=str(payload["id"])), False
        transaction.on_commit(lambda: process_webhook_event.delay(event.pk))
    return event, True


@transaction.atomic(durable=True)
def webhook_event_process(*, event_id: int) -> WebhookEvent:
    """Apply a stored notification to its transaction. Running it again changes nothing."""
    event = WebhookEvent.objects.select_for_update(no_key=True).get(pk=event_id)
    if event.status == WebhookEvent.Status.PROCESSED:
        return event
    event.attempts += 1
    fact = WEBHOOK_FACTS.get(event.event_type)
    data = event.payload.get("data", {})
    payment_id = data.get("payment_id")
    txn = (
        PaymentTransaction.objects.filter(
            account__provider=event.provider, provider_reference=str(payment_id)
        ).first()
        if isinstance(payment_id, str) and payment_id
        else None
    )
    if fact is None or txn is None:
        event.status = WebhookEvent.Status.FAILED
        event.last_error = (
            "unknown event type" if fact is None else f"no transaction {data.get('payment_id')!r}"
        )
        event.save(update_fields=["status", "attempts", "last_error"])
        return event
    kind, outcome = fact
    amount = Money(int(data["amount"]), str(data["currency"]))
    request_id = data.get("request_id") if isinstance(data.get("request_id"), str) else None
    key = _fact_key(txn, kind, request_id, event.event_id)
    detail = {"webhook_event": event.pk, "request_id": request_id or ""}
    if request_id and key == f"{request_id}:capture" and outcome == Outcome.SUCCEEDED:
        # A captured off-session charge is also the answer to its authorization request,
        # recorded first, as ``payment_send`` does when the answer comes in time.
        payment_event_record(
            transaction_id=txn.pk,
            kind=EventKind.AUTHORIZATION,
            outcome=Outcome.SUCCEEDED,
            amount=amount,
            idempotency_key=f"{request_id}:result",
            source=Source.WEBHOOK,
            detail={**detail, "status": "captured"},
        )
    payment_event_record(
        transaction_id=txn.pk,
        kind=kind,
        outcome=outcome,
        amount=amount,
        idempotency_key=key,
        source=Source.WEBHOOK,
        detail=detail,
    )
    event.status = WebhookEvent.Status.PROCESSED
    event.processed_at = clock.now()
    event.last_error = ""
    event.save(update_fields=["status", "attempts", "processed_at", "last_error"])
    return event


def _fact_key(txn: PaymentTransaction, kind: str, request_id: str | None, event_id: str) -> str:
    """The key a reported fact is recorded under, so that one fact has one key, whatever
    route brings it (the call's answer, a webhook, a read-back).

    The answer to one of our requests of the same kind is ``"<request key>:result"``. The
    capture of an off-session charge (an authorization request sent with ``capture``) is
    ``"<request key>:capture"``, the key ``processing.payment_send`` and
    ``processing.payment_reconcile`` record it under. Anything else is the notification's
    own fact, ``"webhook:<event id>"``.
    """
    if not request_id:
        return f"webhook:{event_id}"
    asked = (
        PaymentEvent.objects.filter(
            transaction=txn, idempotency_key=request_id, outcome=Outcome.REQUESTED
        )
        .only("kind", "detail")
        .first()
    )
    if asked is None:
        return f"webhook:{event_id}"
    if asked.kind == kind:
        return f"{request_id}:result"
    if (
        kind == EventKind.CAPTURE
        and asked.kind == EventKind.AUTHORIZATION
        and asked.detail.get("capture") is True
    ):
        return f"{request_id}:capture"
    return f"webhook:{event_id}"


# --- provider secrets -----------------------------------------------------------------


@transaction.atomic
def provider_webhook_secret_rotate(
    *, account_id: int, actor: AbstractBaseUser | None = None
) -> str:
    """Issue a new webhook signing secret; the old one stays valid for the overlap.

    Returns the new secret, to register with the provider; it is stored encrypted.
    """
    account = ProviderAccount.objects.select_for_update(no_key=True).get(pk=account_id)
    new_secret = f"whsec_{secrets.token_urlsafe(32)}"
    now = clock.now()
    if account.webhook_secret_encrypted:
        account.previous_webhook_secret_encrypted = account.webhook_secret_encrypted
        account.previous_secret_valid_until = now + timedelta(hours=account.rotation_overlap_hours)
    account.webhook_secret_encrypted = crypto.encrypt(new_secret)
    account.updated_at = now
    account.save()
    audit_record(
        actor=actor,
        action="payments.webhook_secret_rotated",
        target=account,
        changes={"previous_valid_until": str(account.previous_secret_valid_until)},
    )
    return new_secret


def provider_health_record(*, account_id: int, ok: bool, detail: str = "") -> None:
    ProviderAccount.objects.filter(pk=account_id).update(
        health_ok=ok, health_checked_at=clock.now(), health_detail=detail[:255]
    )
