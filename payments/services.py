"""Every write to payment records: events, webhooks, provider secrets.

Lock order (ARCHITECTURE.md): … → payment transaction → ledger accounts.
"""

from __future__ import annotations

import secrets
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction

from core import clock
from core.audit import audit_record
from core.db import insert_rows
from core.errors import InvalidInput
from core.money import Money
from ledger.models import Purpose
from ledger.services import EntryDraft, credit, debit, ledger_post_many, system
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


@dataclass(frozen=True)
class _Movement:
    """A succeeded capture or refund to book: what ``_post_money_movements`` needs."""

    reference_type: str
    provider: str
    key: str
    settlement: events.Settlement


def _movement(txn: Any, provider: str, event_kind: str, amount: Money, key: str) -> _Movement:
    """``txn``: a payment transaction, or a row with its ``pk``, ``reference_type`` and
    ``reference_id``; ``provider``: its account's provider."""
    purpose = Purpose.GATEWAY_CLEARING if provider == Provider.CARD else Purpose.PROVIDER_CLEARING
    return _Movement(
        reference_type=txn.reference_type,
        provider=provider,
        key=key,
        settlement=events.Settlement(
            payment_id=txn.pk,
            reference_id=txn.reference_id,
            kind=event_kind,
            amount=amount,
            clearing=system(purpose, amount.currency),
        ),
    )


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
    settle = events.settlement_handler(txn.reference_type)
    movement = _movement(txn, txn.account.provider, event.kind, amount, event.idempotency_key)
    if settle is not None:  # the owner books its own money (an installment, not a sale)
        s = movement.settlement
        settle(payment=txn, kind=s.kind, amount=s.amount, clearing=s.clearing)
        return
    _post_sales([movement])


def _post_sales(movements: Sequence[_Movement]) -> None:
    """Captures and refunds of sales: clearing → merchant, and back, one entry each."""
    drafts = []
    for movement in movements:
        s = movement.settlement
        merchant = system(Purpose.MERCHANT, s.amount.currency)
        legs = (
            [debit(s.clearing, s.amount), credit(merchant, s.amount)]
            if s.kind == EventKind.CAPTURE
            else [debit(merchant, s.amount), credit(s.clearing, s.amount)]
        )
        drafts.append(
            EntryDraft(
                kind=f"payments.{s.kind}",
                legs=legs,
                reference_type="payments.transaction",
                reference_id=str(s.payment_id),
                memo=f"{movement.provider} {movement.key}",
            )
        )
    ledger_post_many(drafts)


@dataclass(frozen=True)
class Fact:
    """One fact for ``payment_events_record_many``; the arguments of
    ``payment_event_record``."""

    transaction_id: int
    kind: EventKind
    outcome: Outcome
    amount: Money
    idempotency_key: str
    source: Source
    detail: dict[str, Any] | None = None


def facts_insert(facts: Sequence[Fact], *, new_transactions: bool = False) -> set[tuple[int, str]]:
    """Insert facts that follow every rule, in one statement; nothing is booked. A fact
    whose (transaction, key) is already recorded is left out. Returns the (transaction,
    key) pairs inserted. For ``payment_events_record_many`` and for the requests of
    transactions just opened (``processing.payment_open_many``): with
    ``new_transactions``, the transactions were opened by the caller's own database
    transaction, so nothing can be on record yet and a plain insert does (a duplicate in
    ``facts`` then raises ``IntegrityError``)."""
    now = clock.now()
    inserted = insert_rows(
        PaymentEvent,
        [
            "transaction_id",
            "kind",
            "outcome",
            "amount",
            "currency",
            "idempotency_key",
            "source",
            "detail",
            "created_at",
        ],
        [
            (
                f.transaction_id,
                f.kind,
                f.outcome,
                f.amount.minor,
                f.amount.currency,
                f.idempotency_key,
                f.source,
                f.detail or {},
                now,
            )
            for f in facts
        ],
        returning=("transaction_id", "idempotency_key"),
        skip_conflicts=not new_transactions,
    )
    return set(inserted)


def payment_events_record_many(facts: Sequence[Fact]) -> None:
    """``payment_event_record`` for many facts at once, in the caller's transaction.

    The same rules, set-based for the usual case (a fact new to its transaction, in its
    currency, that no amount rule or request check applies to): the transactions are
    locked in id order, the facts inserted in one statement, and the captures booked per
    owner in one go (its batch settlement handler, or one sales entry each). Any other fact
    (a repeat, a currency mismatch, a request held to the derived amounts, a report checked
    against its request) goes through ``payment_event_record`` itself, afterwards.
    """
    if not facts:
        return
    txn_ids = sorted({f.transaction_id for f in facts})
    txns = {  # rows, not instances: a batch may hold a thousand
        txn.pk: txn
        for txn in PaymentTransaction.objects.select_for_update(no_key=True, of=("self",))
        .filter(pk__any=txn_ids)
        .order_by("pk")
        .values_list(
            "pk", "currency", "reference_type", "reference_id", "account__provider", named=True
        )
    }
    candidates: list[Fact] = []
    others: list[Fact] = []
    for fact in facts:
        txn = txns[fact.transaction_id]
        checked = (fact.source == Source.API and fact.outcome == Outcome.REQUESTED) or (
            fact.source != Source.API and (fact.detail or {}).get("request_id")
        )
        if fact.amount.currency != txn.currency or checked:
            others.append(fact)
        else:
            candidates.append(fact)
    # A fact already on record (a repeat, or twice in this batch) is not inserted again:
    # it goes through payment_event_record, which checks it against the first. The
    # transactions' locks keep anyone else from recording one meanwhile.
    inserted = facts_insert(candidates)
    simple: list[Fact] = []
    for fact in candidates:
        pair = (fact.transaction_id, fact.idempotency_key)
        if pair in inserted:
            inserted.discard(pair)
            simple.append(fact)
        else:
            others.append(fact)
    movements: dict[str, list[_Movement]] = defaultdict(list)
    for f in simple:
        txn = txns[f.transaction_id]
        if (
            f.outcome == Outcome.SUCCEEDED
            and f.kind in (EventKind.CAPTURE, EventKind.REFUND)
            and f.amount.is_positive()
        ):
            movements[txn.reference_type].append(
                _movement(txn, txn.account__provider, f.kind, f.amount, f.idempotency_key)
            )
        if f.kind == EventKind.AUTHORIZATION and f.outcome in (Outcome.SUCCEEDED, Outcome.FAILED):
            events.authorization_settled(
                reference_type=txn.reference_type,
                reference_id=txn.reference_id,
                approved=f.outcome == Outcome.SUCCEEDED,
            )
    for reference_type, batch in movements.items():
        many = events.batch_settlement_handler(reference_type)
        single = events.settlement_handler(reference_type)
        if many is not None:
            many([m.settlement for m in batch])
        elif single is not None:
            for m in batch:
                s = m.settlement
                single(
                    payment=PaymentTransaction.objects.select_related("account").get(
                        pk=s.payment_id
                    ),
                    kind=s.kind,
                    amount=s.amount,
                    clearing=s.clearing,
                )
        else:
            _post_sales(batch)
    for f in others:
        payment_event_record(
            transaction_id=f.transaction_id,
            kind=f.kind,
            outcome=f.outcome,
            amount=f.amount,
            idempotency_key=f.idempotency_key,
            source=f.source,
            detail=f.detail,
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
