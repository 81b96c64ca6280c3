"""Handing payment outcomes up to the apps that own what was paid for.

A higher app (oms) registers a handler for its reference type at start-up
(``register("oms.order", handler)``), so this layer never imports it. When the outcome of
an authorization is recorded, whatever the route (the call's answer, a webhook, the
reconciler), the handler is called after the recording transaction commits with
``(reference_id, approved)``. Handlers must be idempotent: the same outcome may arrive
more than once.

Money that an owner books itself: by default a succeeded capture moves money from the
gateway's clearing account to the merchant, and a refund moves it back. An owner whose
payments are not sales (an installment paying down a receivable) registers a settlement
handler for its reference type (``register_settlement("bnpl.installment", handler)``);
payments then calls it *inside* the transaction that records the capture or refund, instead
of posting, so the owner's rows and the ledger entry commit with the payment fact. The
handler posts one balanced entry that debits (capture) or credits (refund) ``clearing`` by
``amount``. It runs after the payment transaction's row lock: it must not wait on a lock that
a holder of a payment-transaction lock could be waiting for. No service takes an existing
payment transaction's lock while holding an owner's row lock, because provider calls run
outside transactions; ``processing.payment_open`` creates a new transaction's row under the
owner's locks, which nobody else can be waiting for.

Lending partner decisions: an owner that delegates a credit decision to a lending partner
(``payments.lending.partner_application_submit``) registers
``register_partner_decision(reference_type, handler)``. When the partner's final decision
(approved, declined, or failed: never received) is recorded, whatever the route (the
submit's answer, a signed webhook for a referred application, the reconciler), the handler
is called after the recording transaction commits with ``(reference_id, decision)`` (a
``payments.adapters.lending_partner.PartnerDecision``): once, unless it raises, in which case
the partner reconciler calls it again later. It must be idempotent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from django.db import transaction

from core.money import Money

if TYPE_CHECKING:
    from payments.adapters.lending_partner import PartnerDecision
    from payments.models import PaymentTransaction

Handler = Callable[[str, bool], None]
_handlers: dict[str, Handler] = {}


class SettlementHandler(Protocol):
    def __call__(
        self, *, payment: PaymentTransaction, kind: str, amount: Money, clearing: str
    ) -> None: ...


@dataclass(frozen=True)
class Settlement:
    """One capture or refund for an owner's batch settlement handler to book."""

    payment_id: int
    reference_id: str
    kind: str  # EventKind.CAPTURE or EventKind.REFUND
    amount: Money
    clearing: str  # the clearing account's code


SettlementBatchHandler = Callable[[Sequence[Settlement]], None]

_settlements: dict[str, SettlementHandler] = {}
_batch_settlements: dict[str, SettlementBatchHandler] = {}


def register(reference_type: str, handler: Handler) -> None:
    _handlers[reference_type] = handler


def authorization_settled(*, reference_type: str, reference_id: str, approved: bool) -> None:
    """Call the owner's handler once the current transaction commits."""
    handler = _handlers.get(reference_type)
    if handler is not None:
        transaction.on_commit(lambda: handler(reference_id, approved))


def register_settlement(
    reference_type: str,
    handler: SettlementHandler,
    *,
    many: SettlementBatchHandler | None = None,
) -> None:
    """``many`` (optional) books a batch of settlements in one go, with the rules of
    ``handler``; payments uses it when it records many captures at once (the debit run)."""
    _settlements[reference_type] = handler
    if many is not None:
        _batch_settlements[reference_type] = many


def settlement_handler(reference_type: str) -> SettlementHandler | None:
    return _settlements.get(reference_type)


def batch_settlement_handler(reference_type: str) -> SettlementBatchHandler | None:
    return _batch_settlements.get(reference_type)


PartnerDecisionHandler = Callable[[str, "PartnerDecision"], None]
_partner_decisions: dict[str, PartnerDecisionHandler] = {}


def register_partner_decision(reference_type: str, handler: PartnerDecisionHandler) -> None:
    _partner_decisions[reference_type] = handler


def partner_decision_handler(reference_type: str) -> PartnerDecisionHandler | None:
    return _partner_decisions.get(reference_type)


def partner_decision_reference_types() -> list[str]:
    return list(_partner_decisions)


# --- disputes -------------------------------------------------------------------------


@dataclass(frozen=True)
class DisputeNotice:
    """A provider's word on one dispute of a payment, read from its notification.

    ``status`` is ``open``, ``won``, ``lost`` or ``closed`` (withdrawn, or closed without
    a decision); ``via`` names the notification (``"webhook:<provider>:<event id>"``).
    """

    provider: str
    dispute_id: str
    payment_id: int  # the PaymentTransaction disputed
    reference_id: str  # what that payment pays for, of its reference type
    status: str
    reason: str
    amount: Money
    via: str


DisputeHandler = Callable[[DisputeNotice], None]
_disputes: dict[str, DisputeHandler] = {}


def register_dispute(reference_type: str, handler: DisputeHandler) -> None:
    """The owner of a payment's reference type records its disputes (oms: orders, and the
    installments of plans that finance orders). Called after the notification is stored,
    in no transaction; it owns its own and must be idempotent (redeliveries, retries)."""
    _disputes[reference_type] = handler


def dispute_handler(reference_type: str) -> DisputeHandler | None:
    return _disputes.get(reference_type)


# Saved payment methods: an owner that debits a saved card later (bnpl's plans) registers
# ``register_payment_method_user(check)``; ``check(customer_id, token)`` names what still
# uses the token (e.g. "plan 7"), or returns "". A card that something uses is not removed.
PaymentMethodUserCheck = Callable[[int, str], str]
_payment_method_users: list[PaymentMethodUserCheck] = []


def register_payment_method_user(check: PaymentMethodUserCheck) -> None:
    if check not in _payment_method_users:
        _payment_method_users.append(check)


def payment_method_users(customer_id: int, token: str) -> list[str]:
    """What still charges ``token`` of the customer's, as each registered owner names it."""
    return [used for check in _payment_method_users if (used := check(customer_id, token))]


# Chargebacks: a lost dispute on a payment whose owner booked the capture itself (a
# settlement handler, e.g. ``bnpl.installment``) is reversed by that owner too. The app
# recording the dispute (oms) calls ``chargeback_handler(reference_type)`` inside its own
# transaction, holding the locks above the owner's (order → plan); the handler locks the
# owner's rows, then the payment transaction, then posts one entry crediting clearing.


@dataclass(frozen=True)
class Chargeback:
    """A lost dispute's claim on one payment, for the payment's owner to book once."""

    payment_id: int
    reference_id: str  # what the payment pays for, of its reference type
    amount: Money  # what the dispute took back, in the payment's currency
    earlier: int  # minor units earlier disputes of the same payment charged back
    entry_reference_type: str  # the dispute's record, for the ledger entry
    entry_reference_id: str
    memo: str


ChargebackHandler = Callable[[Chargeback], Money]  # returns what it booked
_chargebacks: dict[str, ChargebackHandler] = {}


def register_chargeback(reference_type: str, handler: ChargebackHandler) -> None:
    """Called by the owner of ``reference_type`` in its ``AppConfig.ready``."""
    _chargebacks[reference_type] = handler


def chargeback_handler(reference_type: str) -> ChargebackHandler | None:
    return _chargebacks.get(reference_type)
