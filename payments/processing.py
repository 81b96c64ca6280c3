"""Calling providers: never inside a transaction that holds row locks.

1. A short transaction records the ``requested`` event (held to the derived amounts) and
   commits: the idempotency key sent to the provider is on record before the call.
2. The adapter is called outside any transaction, through the provider's circuit breaker,
   retrying technical failures with the same key.
3. A second short transaction records what the provider decided. ``PENDING`` waits for
   the provider's notification; ``UNKNOWN`` (a timeout) is resolved by
   ``payment_reconcile``, which asks the provider before anything is tried again.

``payment_authorize`` does all three. An owner that must check its own rows under lock
before charging (no second charge while one is in flight) runs step 1 itself, inside the
short transaction holding those locks (``payment_open``), then ``payment_send``.

Batches: ``payment_open_many`` and ``payment_send_many`` do the same for many off-session
charges at once (the debit run's chunk): one statement per table to open them, one request
to the provider (``charge_off_session_many``), and one short transaction recording every
answer, with the captures booked by their owners in one go
(``services.payment_events_record_many``).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

import requests
from django.db import transaction
from django.utils.dateparse import parse_datetime

from core import clock
from core.db import insert_rows, update_rows
from core.errors import ApplicationError
from core.money import Money
from payments import crypto
from payments.adapters.afterpay import AfterpayGateway
from payments.adapters.card import CardGateway
from payments.adapters.klarna import KlarnaGateway, klarna_base_url
from payments.gateway import (
    Decision,
    Gateway,
    GatewayResult,
    GatewayTechnicalError,
    OffSessionCharge,
)
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
from payments.reliability import CircuitOpen, breaker_for, with_retries
from payments.selectors import payment_amounts
from payments.services import (
    Fact,
    facts_insert,
    payment_event_record,
    payment_events_record_many,
)


class ProviderNotSupported(ApplicationError):
    code = "payments.provider_not_supported"
    default_message = "No adapter exists for this provider yet."


_local = threading.local()


def _session(base_url: str) -> requests.Session:
    """One HTTP session per provider URL and thread: connections are reused (keep-alive)."""
    sessions = _local.__dict__.setdefault("sessions", {})
    if base_url not in sessions:
        sessions[base_url] = requests.Session()
    return sessions[base_url]


def gateway_for(account: ProviderAccount) -> Gateway:
    credentials = crypto.decrypt(account.credentials_encrypted) or {}
    if account.provider == Provider.KLARNA:
        base_url = account.base_url or klarna_base_url(account.region, account.mode)
        return KlarnaGateway(
            base_url=base_url,
            username=credentials.get("id", ""),
            password=credentials.get("secret", ""),
            session=_session(base_url),
        )
    if account.provider == Provider.AFTERPAY:
        return AfterpayGateway(
            base_url=account.base_url,
            merchant_id=credentials.get("id", ""),
            secret_key=credentials.get("secret", ""),
            session=_session(account.base_url),
        )
    if account.provider == Provider.CARD:
        return CardGateway(
            base_url=account.base_url,
            secret=credentials.get("secret", ""),
            session=_session(account.base_url),
        )
    raise ProviderNotSupported(f"No adapter for {account.get_provider_display()} yet.")


def _call(account: ProviderAccount, fn: Callable[[], GatewayResult]) -> GatewayResult:
    return breaker_for(account.provider).call(lambda: with_retries(fn))


@dataclass(frozen=True)
class _Answer:
    """A provider's answer to one of our requests, to record (``_record_answers``)."""

    txn_id: int
    kind: EventKind
    key: str
    amount: Money
    result: GatewayResult
    off_session: bool = False  # an approved off-session charge is captured too


def _record_result(
    *, txn_id: int, kind: EventKind, key: str, amount: Money, result: GatewayResult
) -> None:
    _record_answers([_Answer(txn_id, kind, key, amount, result)])


def _record_answers(answers: Sequence[_Answer]) -> None:
    """One short transaction: the provider's references, and what it decided, if it did.

    The reference is kept even while the decision is pending: the provider's notification
    is matched to the transaction by it. An approved off-session charge is also its capture
    (``"<key>:capture"``), recorded with the answer.
    """
    references = [
        (a.txn_id, a.result.provider_reference) for a in answers if a.result.provider_reference
    ]
    expiries = []
    facts = []
    for a in answers:
        raw = a.result.raw
        expiry = raw.get("expires_at") or raw.get("expires")
        expires = parse_datetime(str(expiry)) if expiry else None
        if expires is not None:
            expiries.append((a.txn_id, expires))
        if a.result.decision in (Decision.PENDING, Decision.UNKNOWN):
            continue
        approved = a.result.decision == Decision.APPROVED
        facts.append(
            Fact(
                transaction_id=a.txn_id,
                kind=a.kind,
                outcome=Outcome.SUCCEEDED if approved else Outcome.FAILED,
                amount=a.amount,
                idempotency_key=f"{a.key}:result",
                source=Source.API,
                detail={
                    "request_id": a.key,
                    "status": a.result.status,
                    "decline_code": a.result.decline_code,
                },
            )
        )
        if a.off_session and approved:
            facts.append(
                Fact(
                    transaction_id=a.txn_id,
                    kind=EventKind.CAPTURE,
                    outcome=Outcome.SUCCEEDED,
                    amount=a.amount,
                    idempotency_key=f"{a.key}:capture",
                    source=Source.API,
                )
            )
    if not (references or expiries or facts):
        return
    with transaction.atomic(durable=True):
        update_rows(
            PaymentTransaction,
            ["provider_reference"],
            references,
            only_if={"provider_reference": None},
        )
        update_rows(PaymentTransaction, ["authorization_expires_at"], expiries)
        payment_events_record_many(facts)


def _request(
    txn: PaymentTransaction, kind: EventKind, amount: Money, key: str, detail: dict | None = None
) -> None:
    """First short transaction: what is asked, under the key the provider will see."""
    with transaction.atomic(durable=True):
        payment_event_record(
            transaction_id=txn.pk,
            kind=kind,
            outcome=Outcome.REQUESTED,
            amount=amount,
            idempotency_key=key,
            source=Source.API,
            detail=detail,
        )


@dataclass(frozen=True)
class ChargeRequest:
    """One charge to open and send (``payment_open_many``, ``payment_send_many``)."""

    reference_type: str
    reference_id: str
    amount: Money
    payment_method: str
    idempotency_key: str

    @property
    def reference(self) -> str:
        return f"{self.reference_type}:{self.reference_id}"


def payment_open(
    *,
    account: ProviderAccount,
    reference_type: str,
    reference_id: str,
    amount: Money,
    payment_method: str,
    idempotency_key: str,
    capture: bool = False,
) -> PaymentTransaction:
    """Open a transaction and record its authorization request, in the caller's transaction.

    For an owner that checks its own rows under lock before charging: the request commits
    with the check, so a concurrent check sees it (``pending_charge_exists``). Only new rows
    are written here, which nobody else can see, let alone wait for, before the caller
    commits; it then calls ``payment_send`` outside any transaction.
    """
    charge = ChargeRequest(
        reference_type, str(reference_id), amount, payment_method, idempotency_key
    )
    ((txn_id, created_at),) = _open([charge], account=account, capture=capture)
    return PaymentTransaction(
        pk=txn_id,
        account=account,
        reference_type=charge.reference_type,
        reference_id=charge.reference_id,
        currency=amount.currency,
        amount=amount.minor,
        created_at=created_at,
    )


def payment_open_many(
    *, account: ProviderAccount, charges: Sequence[ChargeRequest], capture: bool = False
) -> list[int]:
    """``payment_open`` for many charges at once (one statement per table); the new
    transactions' ids, in order."""
    return [txn_id for txn_id, _ in _open(charges, account=account, capture=capture)]


def _open(
    charges: Sequence[ChargeRequest], *, account: ProviderAccount, capture: bool
) -> list[tuple[int, datetime]]:
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("payment_open runs inside the caller's transaction")
    if not charges:
        return []
    now = clock.now()
    txn_ids = insert_rows(
        PaymentTransaction,
        ["account_id", "reference_type", "reference_id", "currency", "amount", "created_at"],
        [
            (account.pk, c.reference_type, c.reference_id, c.amount.currency, c.amount.minor, now)
            for c in charges
        ],
    )
    # The request, on a transaction nobody else has seen yet: nothing to check it against
    # (``payment_event_record``'s rules hold trivially). The payment method is a provider
    # token (never a card number): kept so that reconciliation can replay the request
    # under the same key.
    facts_insert(
        [
            Fact(
                transaction_id=txn_id,
                kind=EventKind.AUTHORIZATION,
                outcome=Outcome.REQUESTED,
                amount=c.amount,
                idempotency_key=c.idempotency_key,
                source=Source.API,
                detail={"payment_method": c.payment_method, "capture": capture},
            )
            for txn_id, c in zip(txn_ids, charges, strict=True)
        ],
        new_transactions=True,
    )
    return [(txn_id, now) for txn_id in txn_ids]


def payment_send(
    *,
    txn: PaymentTransaction,
    amount: Money,
    payment_method: str,
    idempotency_key: str,
    capture: bool = False,
) -> GatewayResult:
    """Send the authorization (or off-session charge) ``payment_open`` recorded, outside any
    transaction, and record the answer in short transactions of its own."""
    account = txn.account
    reference = f"{txn.reference_type}:{txn.reference_id}"
    gateway = gateway_for(account)
    if capture:
        result = _call(
            account,
            lambda: gateway.charge_off_session(
                amount=amount,
                reference=reference,
                payment_method=payment_method,
                idempotency_key=idempotency_key,
            ),
        )
    else:
        result = _call(
            account,
            lambda: gateway.authorize(
                amount=amount,
                reference=reference,
                payment_method=payment_method,
                idempotency_key=idempotency_key,
            ),
        )
    _record_answers(
        [_Answer(txn.pk, EventKind.AUTHORIZATION, idempotency_key, amount, result, capture)]
    )
    txn.refresh_from_db()
    return result


# Items of a batch the provider answered with a server error are sent again, under the
# same keys, this many times in all (as ``with_retries`` does for a whole request).
ITEM_TRIES = 3


def payment_send_many(
    *, account: ProviderAccount, opened: Sequence[tuple[int, ChargeRequest]]
) -> list[GatewayResult]:
    """Send the off-session charges ``payment_open_many(capture=True)`` recorded as one
    batch, outside any transaction, and record the answers in one short transaction.

    Returns one result per charge, in order. Raises ``CircuitOpen`` (nothing was sent) or
    ``GatewayTechnicalError`` (the batch may or may not have been made: every charge is
    unknown, to be read back by its key) as ``payment_send`` does. Charges the provider
    answered with an error of its own are sent again under the same keys; those still
    without an answer come back ``UNKNOWN``.
    """
    gateway = gateway_for(account)
    results: list[GatewayResult | None] = [None] * len(opened)
    waiting = list(range(len(opened)))
    for attempt in range(1, ITEM_TRIES + 1):
        batch = [
            OffSessionCharge(
                amount=opened[i][1].amount,
                reference=opened[i][1].reference,
                payment_method=opened[i][1].payment_method,
                idempotency_key=opened[i][1].idempotency_key,
            )
            for i in waiting
        ]
        try:
            answers = _call(account, lambda batch=batch: gateway.charge_off_session_many(batch))
        except (GatewayTechnicalError, CircuitOpen):
            if attempt == 1:
                raise
            break  # the rest were answered with errors before: still unknown
        again = []
        for i, answer in zip(waiting, answers, strict=True):
            results[i] = answer
            if answer.decision == Decision.UNKNOWN and answer.status == "provider_error":
                again.append(i)
        waiting = again
        if not waiting:
            break
        time.sleep(random.uniform(0, min(2.0, 0.1 * 2 ** (attempt - 1))))
    final = [r if r is not None else GatewayResult(Decision.UNKNOWN) for r in results]
    _record_answers(
        [
            _Answer(txn_id, EventKind.AUTHORIZATION, c.idempotency_key, c.amount, result, True)
            for (txn_id, c), result in zip(opened, final, strict=True)
        ]
    )
    return final


def payment_send_refused(*, opened: Sequence[tuple[int, ChargeRequest]], reason: str) -> None:
    """Record that requests ``payment_open_many`` recorded never reached the provider
    (``payment_send_many`` raised ``CircuitOpen``): failed, for a new attempt to follow."""
    _record_answers(
        [
            _Answer(
                txn_id,
                EventKind.AUTHORIZATION,
                c.idempotency_key,
                c.amount,
                GatewayResult(Decision.DECLINED, decline_code=reason),
            )
            for txn_id, c in opened
        ]
    )


def payment_authorize(
    *,
    account: ProviderAccount,
    reference_type: str,
    reference_id: str,
    amount: Money,
    payment_method: str,
    idempotency_key: str,
    capture: bool = False,
) -> tuple[PaymentTransaction, GatewayResult]:
    """Open a transaction and authorize (or, ``capture=True``, charge off-session) it."""
    with transaction.atomic(durable=True):
        txn = payment_open(
            account=account,
            reference_type=reference_type,
            reference_id=reference_id,
            amount=amount,
            payment_method=payment_method,
            idempotency_key=idempotency_key,
            capture=capture,
        )
    result = payment_send(
        txn=txn,
        amount=amount,
        payment_method=payment_method,
        idempotency_key=idempotency_key,
        capture=capture,
    )
    return txn, result


def _follow_up(
    txn: PaymentTransaction,
    kind: EventKind,
    amount: Money,
    key: str,
    call: Callable[[Gateway, str], GatewayResult],
) -> GatewayResult:
    _request(txn, kind, amount, key)
    gateway = gateway_for(txn.account)
    result = _call(txn.account, lambda: call(gateway, txn.provider_reference))
    _record_result(txn_id=txn.pk, kind=kind, key=key, amount=amount, result=result)
    return result


def payment_capture(*, transaction_id: int, amount: Money, idempotency_key: str) -> GatewayResult:
    txn = PaymentTransaction.objects.select_related("account").get(pk=transaction_id)
    return _follow_up(
        txn,
        EventKind.CAPTURE,
        amount,
        idempotency_key,
        lambda gw, ref: gw.capture(
            provider_reference=ref, amount=amount, idempotency_key=idempotency_key
        ),
    )


def payment_refund(*, transaction_id: int, amount: Money, idempotency_key: str) -> GatewayResult:
    txn = PaymentTransaction.objects.select_related("account").get(pk=transaction_id)
    return _follow_up(
        txn,
        EventKind.REFUND,
        amount,
        idempotency_key,
        lambda gw, ref: gw.refund(
            provider_reference=ref, amount=amount, idempotency_key=idempotency_key
        ),
    )


def payment_void(*, transaction_id: int, idempotency_key: str) -> GatewayResult:
    """Cancel what is authorized and not captured."""
    txn = PaymentTransaction.objects.select_related("account").get(pk=transaction_id)
    remaining = payment_amounts(txn).capturable
    return _follow_up(
        txn,
        EventKind.CANCEL,
        remaining,
        idempotency_key,
        lambda gw, ref: gw.void(provider_reference=ref, idempotency_key=idempotency_key),
    )


def payment_reconcile(*, transaction_id: int) -> int:
    """Resolve authorization requests that never got an answer by asking the provider.

    A charge the provider has is recorded as it is; one it never saw is recorded as
    failed, after which a new attempt (with a new key) is safe. A provider that cannot be
    asked by key (Klarna, Afterpay) gets the same request again under the same key: it
    replays its first answer, or makes the authorization that never arrived. Returns how
    many open requests were looked at.
    """
    txn = PaymentTransaction.objects.select_related("account").get(pk=transaction_id)
    answered = set(
        PaymentEvent.objects.filter(
            transaction=txn, idempotency_key__endswith=":result"
        ).values_list("idempotency_key", flat=True)
    )
    open_requests = [
        e
        for e in PaymentEvent.objects.filter(
            transaction=txn, outcome=Outcome.REQUESTED, kind=EventKind.AUTHORIZATION
        )
        if f"{e.idempotency_key}:result" not in answered
    ]
    gateway = gateway_for(txn.account)
    for event in open_requests:
        amount = Money(event.amount, event.currency)
        found = _call(
            txn.account, lambda key=event.idempotency_key: gateway.sync(idempotency_key=key)
        )
        if found is None:
            found = GatewayResult(Decision.DECLINED, decline_code="not_found")
        elif found.decision == Decision.UNKNOWN and event.detail.get("payment_method"):
            replay = (
                gateway.charge_off_session if event.detail.get("capture") else gateway.authorize
            )
            found = _call(
                txn.account,
                lambda e=event, send=replay, money=amount: send(
                    amount=money,
                    reference=f"{txn.reference_type}:{txn.reference_id}",
                    payment_method=e.detail["payment_method"],
                    idempotency_key=e.idempotency_key,
                ),
            )
        _record_result(
            txn_id=txn.pk,
            kind=EventKind.AUTHORIZATION,
            key=event.idempotency_key,
            amount=amount,
            result=found,
        )
        if (
            event.detail.get("capture")
            and found.decision == Decision.APPROVED
            and found.captured is not None
            and found.captured.is_positive()
        ):
            # An off-session charge the provider captured: the same capture fact (and key)
            # that ``payment_authorize`` records when the answer arrives in time.
            with transaction.atomic(durable=True):
                payment_event_record(
                    transaction_id=txn.pk,
                    kind=EventKind.CAPTURE,
                    outcome=Outcome.SUCCEEDED,
                    amount=found.captured,
                    idempotency_key=f"{event.idempotency_key}:capture",
                    source=Source.RECONCILE,
                )
    return len(open_requests)


def _authorization_fact_key(txn: PaymentTransaction) -> str:
    """The key of the answer to the transaction's first authorization request."""
    first = (
        PaymentEvent.objects.filter(
            transaction=txn, kind=EventKind.AUTHORIZATION, outcome=Outcome.REQUESTED
        )
        .order_by("id")
        .values_list("idempotency_key", flat=True)
        .first()
    )
    return f"{first}:result" if first else f"readback:{txn.pk}:authorization"


def webhook_event_confirm(*, event_id: int) -> WebhookEvent:
    """Apply an unsigned notification by reading the order back from the provider.

    The notification only says "look at this order": the provider's own answer, read
    outside any lock, is what gets recorded (authorized, or refused). Running it again
    changes nothing.
    """
    event = WebhookEvent.objects.get(pk=event_id)
    if event.status == WebhookEvent.Status.PROCESSED:
        return event
    order_id = event.payload.get("data", {}).get("order_id")
    txn = (
        PaymentTransaction.objects.select_related("account")
        .filter(account__provider=event.provider, provider_reference=order_id)
        .first()
    )
    result = None
    if txn is not None:
        gateway = gateway_for(txn.account)
        result = _call(txn.account, lambda: gateway.sync(provider_reference=order_id))
    with transaction.atomic(durable=True):
        event = WebhookEvent.objects.select_for_update(no_key=True).get(pk=event_id)
        if event.status == WebhookEvent.Status.PROCESSED:
            return event
        event.attempts += 1
        if txn is None or result is None:
            event.status = WebhookEvent.Status.FAILED
            event.last_error = f"no readable order {order_id!r}"
        elif result.decision == Decision.APPROVED or result.raw.get("fraud_status") == "REJECTED":
            approved = result.decision == Decision.APPROVED
            payment_event_record(
                transaction_id=txn.pk,
                kind=EventKind.AUTHORIZATION,
                outcome=Outcome.SUCCEEDED if approved else Outcome.FAILED,
                amount=result.authorized
                if approved and result.authorized
                else Money(txn.amount, txn.currency),
                idempotency_key=_authorization_fact_key(txn),
                source=Source.RECONCILE,
                detail={"webhook_event": event.pk, "status": result.status},
            )
            event.status = WebhookEvent.Status.PROCESSED
            event.processed_at = clock.now()
            event.last_error = ""
        else:
            # Still pending at the provider, or its answer was an error: nothing is
            # recorded and the event stays pending; the next notification, or a redelivery
            # of this one, reads the order back again.
            event.last_error = f"provider says {result.status or result.decision}"
        event.save(update_fields=["status", "attempts", "processed_at", "last_error"])
    return event


def payment_request_failed(
    *, reference_type: str, reference_id: str, idempotency_key: str, reason: str
) -> None:
    """Record that a request never reached the provider (e.g. its circuit was open)."""
    txn = (
        PaymentTransaction.objects.filter(reference_type=reference_type, reference_id=reference_id)
        .order_by("-id")
        .first()
    )
    if txn is None:
        return
    _record_result(
        txn_id=txn.pk,
        kind=EventKind.AUTHORIZATION,
        key=idempotency_key,
        amount=Money(txn.amount, txn.currency),
        result=GatewayResult(Decision.DECLINED, decline_code=reason),
    )
