"""Saved payment methods: a customer's cards, tokenized at the card processor.

``payment_method_save`` sends the card details to the processor (outside any transaction)
and records only what comes back: the token, brand, last four digits, expiry and the
processor's fingerprint of the card. ``payment_method_record`` records a token obtained
otherwise (the demo seed, tests). ``payment_method_remove`` is soft: the row stays for the
history of what used it, and a card that an active plan still debits is not removed
(``payments.events.register_payment_method_user``). Whether a token may be charged for a
customer is ``payments.selectors.payment_method_owned``.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction

from core import clock
from core.audit import audit_record
from core.errors import Conflict
from payments import events, locks
from payments.adapters.card import CardGateway, CardToken
from payments.errors import (
    CardRejected,
    PaymentMethodInUse,
    PaymentMethodLimit,
    PaymentMethodNotFound,
    PaymentMethodRemoved,
)
from payments.gateway import GatewayTechnicalError
from payments.models import Provider, SavedPaymentMethod
from payments.processing import gateway_for
from payments.reliability import CircuitOpen, breaker_for, with_retries
from payments.selectors import enabled_account, payment_methods_for_customer


def payment_method_save(
    *,
    customer_id: int,
    card_number: str,
    exp_month: int,
    exp_year: int,
    request_key: str | None = None,
    actor: Any = None,
) -> tuple[SavedPaymentMethod, bool]:
    """Tokenize a card at the processor and save it for the customer: ``(method, created)``.

    The processor's key is derived from the caller's ``request_key`` (the request's
    Idempotency-Key), so a retry gets the same token back and no second row; the same key
    with another card is ``idempotency.key_reused``, with a card removed since
    ``payments.payment_method_removed`` (both 409).
    """
    if request_key is None:  # a repeat cannot be meant: refuse before asking the processor
        _within_limit(customer_id)
    account = enabled_account(Provider.CARD)
    if account is None:
        raise CircuitOpen("No card processor is available; try again later.")
    gateway = gateway_for(account)
    assert isinstance(gateway, CardGateway)
    key = f"customer:{customer_id}:payment-method:{request_key or uuid.uuid4().hex}"

    def tokenize() -> CardToken | CardRejected:
        # A refusal is an answer, not a failure: the circuit breaker sees it succeed.
        try:
            return gateway.tokenize_card(
                card_number=card_number,
                exp_month=exp_month,
                exp_year=exp_year,
                idempotency_key=key,
            )
        except CardRejected as refusal:
            return refusal

    try:
        card = breaker_for(account.provider).call(lambda: with_retries(tokenize))
    except GatewayTechnicalError:
        raise CircuitOpen("The card processor did not answer; try again.") from None
    if isinstance(card, CardRejected):
        raise card
    if (card.last4, card.exp_month, card.exp_year) != (card_number[-4:], exp_month, exp_year):
        # The processor replayed the answer of another card saved under the same key.
        raise Conflict(
            "This Idempotency-Key was used to save another card; use a new key.",
            code="idempotency.key_reused",
        )
    return _record(customer_id=customer_id, card=card, actor=actor)


def payment_method_record(
    *,
    customer_id: int,
    token: str,
    brand: str = "",
    last4: str = "",
    exp_month: int | None = None,
    exp_year: int | None = None,
    fingerprint: str = "",
    actor: Any = None,
) -> SavedPaymentMethod:
    """Save a token the processor issued for this customer's card (seed data, tests)."""
    card = CardToken(token, brand, last4, exp_month or 0, exp_year or 0, fingerprint)
    return _record(customer_id=customer_id, card=card, actor=actor)[0]


def _within_limit(customer_id: int) -> None:
    """``payments.payment_method_limit`` (422) once the customer has as many saved cards,
    not removed, as ``settings.PAYMENTS_MAX_SAVED_CARDS``."""
    limit = settings.PAYMENTS_MAX_SAVED_CARDS
    if payment_methods_for_customer(customer_id=customer_id).count() >= limit:
        raise PaymentMethodLimit(
            f"You have {limit} saved cards, as many as allowed: remove one first.",
            extra={"limit": limit},
        )


def _already_saved(known: SavedPaymentMethod, customer_id: int) -> SavedPaymentMethod:
    if known.customer_id != customer_id:  # a processor never issues one token twice
        raise Conflict("This token is another customer's.", code="payments.token_taken")
    if known.removed_at is not None:  # a repeat of a save whose card was removed since
        raise PaymentMethodRemoved()
    return known


@transaction.atomic(durable=True)
def _record(*, customer_id: int, card: CardToken, actor: Any) -> tuple[SavedPaymentMethod, bool]:
    known = SavedPaymentMethod.objects.filter(processor=Provider.CARD, token=card.token).first()
    if known is not None:
        return _already_saved(known, customer_id), False
    _within_limit(customer_id)
    try:
        with transaction.atomic():
            method = SavedPaymentMethod.objects.create(
                customer_id=customer_id,
                processor=Provider.CARD,
                token=card.token,
                brand=card.brand,
                last4=card.last4,
                exp_month=card.exp_month or None,
                exp_year=card.exp_year or None,
                fingerprint=card.fingerprint,
                created_at=clock.now(),
            )
    except IntegrityError:  # a concurrent retry of the same request saved it first
        known = SavedPaymentMethod.objects.get(processor=Provider.CARD, token=card.token)
        return _already_saved(known, customer_id), False
    audit_record(
        actor=actor,
        action="payments.payment_method_saved",
        target=method,
        changes={
            name: {"old": None, "new": getattr(method, name)}
            for name in ("token", "brand", "last4", "exp_month", "exp_year")
        },
    )
    return method, True


@transaction.atomic(durable=True)
def payment_method_remove(*, customer_id: int, method_id: int, actor: Any = None) -> None:
    """Remove one of the customer's saved cards: it is never accepted again.

    Refused (``payments.payment_method_in_use``) while an active plan or a pending credit
    application still debits it: the customer moves the plan to another card first.
    """
    method = locks.saved_payment_method_for_update(method_id=method_id)
    if method is None or method.customer_id != customer_id or method.removed_at is not None:
        raise PaymentMethodNotFound()
    users = events.payment_method_users(customer_id, method.token)
    if users:
        raise PaymentMethodInUse(
            f"Still debited by {', '.join(users)}: move it to another card first.",
            extra={"used_by": users},
        )
    method.removed_at = clock.now()
    method.save(update_fields=["removed_at"])
    audit_record(
        actor=actor,
        action="payments.payment_method_removed",
        target=method,
        changes={"removed_at": {"old": None, "new": method.removed_at.isoformat()}},
    )
