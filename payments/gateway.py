"""The one protocol every payment adapter implements.

Amounts cross it as ``Money``; each adapter converts to what its provider wants. Results
say what the provider decided; a provider that never answered in time is ``UNKNOWN``:
the caller does not retry, it reconciles (asks the provider) first.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Protocol

from core.money import Money


class Decision(enum.StrEnum):
    APPROVED = "approved"  # authorized / captured / refunded / voided as asked
    DECLINED = "declined"  # a business refusal: never retried automatically
    PENDING = "pending"  # the provider is reviewing (fraud check); a notification follows
    UNKNOWN = "unknown"  # no answer in time: reconcile before doing anything else


@dataclass(frozen=True)
class GatewayResult:
    decision: Decision
    provider_reference: str | None = None
    # What the provider says it holds for the payment, read from its answer.
    authorized: Money | None = None
    captured: Money | None = None
    refunded: Money | None = None
    status: str = ""
    decline_code: str = ""
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OffSessionCharge:
    amount: Money
    reference: str
    payment_method: str
    idempotency_key: str


class GatewayTechnicalError(Exception):
    """The provider failed (5xx, connection refused): safe to retry with the same key."""


class Gateway(Protocol):
    provider: str

    def authorize(
        self, *, amount: Money, reference: str, payment_method: str, idempotency_key: str
    ) -> GatewayResult: ...

    def charge_off_session(
        self, *, amount: Money, reference: str, payment_method: str, idempotency_key: str
    ) -> GatewayResult: ...

    def capture(
        self, *, provider_reference: str, amount: Money, idempotency_key: str
    ) -> GatewayResult: ...

    def refund(
        self, *, provider_reference: str, amount: Money, idempotency_key: str
    ) -> GatewayResult: ...

    def void(self, *, provider_reference: str, idempotency_key: str) -> GatewayResult: ...

    def save_payment_method(
        self, *, card_number: str, exp_month: int, exp_year: int, idempotency_key: str
    ) -> str: ...

    def sync(
        self, *, provider_reference: str | None = None, idempotency_key: str | None = None
    ) -> GatewayResult | None: ...

    def health(self) -> bool: ...
