"""The lending partner adapter: a partner that takes the credit decision on an installment
plan and funds the merchant, over its HTTP API (the shape the payment sandbox emulates,
documented in ``payments/sandbox/partner.py``).

- Money crosses as integer minor units with the ISO 4217 code beside them (``"amount":
  12345, "currency": "EUR"``), as lenders' APIs commonly take it (no decimal parsing, no
  rounding on either side). Rates (APR) cross as decimal strings (``"19.99"``, percent
  per year), never floats.
- Every write carries ``Authorization: Bearer <api key>`` and the caller's
  ``Idempotency-Key``: the same key answers the first answer again and never opens a
  second application.
- ``submit_application`` answers ``approved`` (with the partner's terms, its reference and
  the amount it funds), ``declined`` (with reasons), ``referred`` (the decision comes later
  by signed webhook) or ``unknown``: the request went out and no answer came in time. An
  unknown outcome is read back (``get_application`` by reference or by idempotency key),
  never resubmitted as a new application.
- 5xx, refused connections, 401/403/429 raise ``GatewayTechnicalError``: the caller retries
  through ``payments.reliability`` with the same key, which is safe.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import quote

import requests

from core.errors import InvalidInput
from core.money import Money
from payments.gateway import GatewayTechnicalError

# Connect, read seconds. A credit decision takes longer than a card auth; past the read
# timeout the outcome is unknown and is read back. The sandbox's slow answer
# (``payments.sandbox.partner.SLOW_SECONDS``) outlasts it.
TIMEOUT = (2.0, 2.5)


class InvalidPartnerApplication(InvalidInput):
    code = "payments.invalid_partner_application"
    default_message = "The application to the lending partner is incomplete."


class PartnerDecisionKind(enum.StrEnum):
    APPROVED = "approved"  # the partner finances the plan and funds the merchant
    DECLINED = "declined"  # a credit refusal (reasons say why); never retried automatically
    REFERRED = "referred"  # the partner decides later and notifies by signed webhook
    UNKNOWN = "unknown"  # no answer in time: read back, never resubmit
    FAILED = "failed"  # never reached the partner: nothing was decided
    CANCELLED = "cancelled"  # cancelled at our request: nothing stands funded

    @property
    def final(self) -> bool:
        return self in (self.APPROVED, self.DECLINED, self.FAILED)


# --- what is sent -----------------------------------------------------------------------


@dataclass(frozen=True)
class PartnerCustomer:
    id: str
    email: str
    tier: str = ""
    kyc: str = ""  # the customer's KYC status, e.g. "verified"


@dataclass(frozen=True)
class PartnerLine:
    sku: str
    name: str
    quantity: int
    unit_price: Money
    total: Money
    merchant_category: str = ""


@dataclass(frozen=True)
class RequestedProduct:
    code: str
    installment_count: int
    frequency: str  # "weekly" | "biweekly" | "monthly"


@dataclass(frozen=True)
class PartnerApplication:
    """What the partner is asked to finance. The merchant reference and the idempotency key
    travel beside it (``submit_application``), so one application has one of each."""

    amount: Money
    customer: PartnerCustomer
    lines: tuple[PartnerLine, ...]
    product: RequestedProduct

    def __post_init__(self) -> None:
        problems: dict[str, list[str]] = {}
        if not self.amount.is_positive():
            problems["amount"] = ["Must be positive."]
        if not self.lines:
            problems["lines"] = ["At least one line is needed."]
        for line in self.lines:
            if {line.unit_price.currency, line.total.currency} != {self.amount.currency}:
                problems.setdefault("lines", []).append(
                    f"{line.sku} is not in {self.amount.currency}."
                )
            if line.quantity < 1:
                problems.setdefault("lines", []).append(f"{line.sku} needs a quantity of 1+.")
        if self.product.installment_count < 1:
            problems["product"] = ["At least one installment."]
        if problems:
            raise InvalidPartnerApplication(fields=problems)

    @property
    def currency(self) -> str:
        return self.amount.currency

    def to_wire(self, *, reference: str) -> dict[str, Any]:
        """The partner's request body: minor units, the currency once at the top."""
        return {
            "merchant_reference": reference,
            "amount": self.amount.minor,
            "currency": self.amount.currency,
            "customer": {
                "id": self.customer.id,
                "email": self.customer.email,
                "tier": self.customer.tier,
                "kyc_status": self.customer.kyc,
            },
            "items": [
                {
                    "sku": line.sku,
                    "name": line.name,
                    "quantity": line.quantity,
                    "unit_price": line.unit_price.minor,
                    "total_amount": line.total.minor,
                    "merchant_category": line.merchant_category,
                }
                for line in self.lines
            ],
            "product": {
                "code": self.product.code,
                "installment_count": self.product.installment_count,
                "frequency": self.product.frequency,
            },
        }


# --- what comes back --------------------------------------------------------------------


@dataclass(frozen=True)
class PartnerReason:
    code: str
    message: str = ""

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True)
class PartnerTerms:
    """The plan terms as the partner states them (it prices the plan, not us)."""

    installment_count: int
    frequency: str
    apr: Decimal  # percent per year
    origination_fee: Money
    installment_fee: Money  # per installment
    total_repayable: Money | None = None
    first_due_date: date | None = None

    def to_json(self) -> dict[str, Any]:
        """Minor units and decimal strings, as stored on ``PartnerApplication.terms``."""
        return {
            "currency": self.origination_fee.currency,
            "installment_count": self.installment_count,
            "frequency": self.frequency,
            "apr": str(self.apr),
            "origination_fee": self.origination_fee.minor,
            "installment_fee": self.installment_fee.minor,
            "total_repayable": self.total_repayable.minor if self.total_repayable else None,
            "first_due_date": self.first_due_date.isoformat() if self.first_due_date else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PartnerTerms:
        currency = str(data["currency"])
        total = data.get("total_repayable")
        due = data.get("first_due_date")
        return cls(
            installment_count=int(data["installment_count"]),
            frequency=str(data["frequency"]),
            apr=Decimal(str(data["apr"])),
            origination_fee=Money(int(data["origination_fee"]), currency),
            installment_fee=Money(int(data["installment_fee"]), currency),
            total_repayable=Money(int(total), currency) if total is not None else None,
            first_due_date=date.fromisoformat(due) if due else None,
        )


@dataclass(frozen=True)
class PartnerDecision:
    decision: PartnerDecisionKind
    partner_reference: str | None = None
    reasons: tuple[PartnerReason, ...] = ()
    terms: PartnerTerms | None = None  # with ``approved`` only
    funded_amount: Money | None = None  # what the partner pays the merchant (approved)
    status: str = ""  # the partner's own status word
    idempotency_key: str = ""  # as the partner echoes it
    raw: dict[str, Any] = field(default_factory=dict)


def _reasons(items: Any) -> tuple[PartnerReason, ...]:
    if not isinstance(items, list):
        return ()
    return tuple(
        PartnerReason(code=str(r.get("code", "")), message=str(r.get("message", "")))
        for r in items
        if isinstance(r, dict)
    )


def _terms(data: Any, currency: str) -> PartnerTerms | None:
    if not isinstance(data, dict):
        return None
    fees = data.get("fees") if isinstance(data.get("fees"), dict) else {}
    try:
        total = data.get("total_repayable")
        due = data.get("first_due_date")
        return PartnerTerms(
            installment_count=int(data["installment_count"]),
            frequency=str(data["frequency"]),
            apr=Decimal(str(data["apr"])),
            origination_fee=Money(int(fees.get("origination", 0)), currency),
            installment_fee=Money(int(fees.get("per_installment", 0)), currency),
            total_repayable=Money(int(total), currency) if total is not None else None,
            first_due_date=date.fromisoformat(due) if due else None,
        )
    except (KeyError, TypeError, ValueError, InvalidOperation):
        return None


_STATUSES = {
    "approved": PartnerDecisionKind.APPROVED,
    "declined": PartnerDecisionKind.DECLINED,
    "referred": PartnerDecisionKind.REFERRED,
    "cancelled": PartnerDecisionKind.CANCELLED,
}


def decision_from_application(body: dict[str, Any]) -> PartnerDecision:
    """The partner's application object (an answer, a read-back or a webhook's data) as a
    decision. An approval without readable terms is not trusted as one: it stays
    ``unknown`` and is read back."""
    status = str(body.get("status", ""))
    kind = _STATUSES.get(status, PartnerDecisionKind.UNKNOWN)
    currency = str(body.get("currency", ""))
    terms = None
    funded = None
    if kind == PartnerDecisionKind.APPROVED:
        terms = _terms(body.get("terms"), currency)
        funding = body.get("funding") if isinstance(body.get("funding"), dict) else {}
        try:
            funded = Money(int(funding["amount"]), currency)
        except (KeyError, TypeError, ValueError):
            funded = None
        if terms is None or funded is None:
            kind = PartnerDecisionKind.UNKNOWN
    return PartnerDecision(
        decision=kind,
        partner_reference=str(body["id"]) if body.get("id") else None,
        reasons=_reasons(body.get("reasons")),
        terms=terms,
        funded_amount=funded,
        status=status,
        idempotency_key=str(body.get("idempotency_key") or ""),
        raw=body,
    )


class CancelOutcome(enum.StrEnum):
    CANCELLED = "cancelled"  # the partner cancelled it (or had declined it): nothing funded
    REFUSED = "refused"  # the partner will not cancel it (``code`` says why, e.g. funded)
    NOT_FOUND = "not_found"  # the partner has no application with this id
    UNKNOWN = "unknown"  # no answer in time: ask again with the same key


@dataclass(frozen=True)
class PartnerCancellation:
    outcome: CancelOutcome
    code: str = ""
    message: str = ""
    application: PartnerDecision | None = None  # the application as the partner states it


class LendingPartnerClient:
    provider = "lending_partner"

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        session: requests.Session | None = None,
        timeout: tuple[float, float] = TIMEOUT,
    ):
        self.base = base_url.rstrip("/")
        self.api_key = api_key
        self.http = session or requests.Session()
        self.timeout = timeout

    def _request(
        self, method: str, path: str, *, key: str | None = None, json: dict[str, Any] | None = None
    ) -> tuple[int, Any] | None:
        """``(status, body)``; ``None`` when the request went out and no answer came in time."""
        headers = {"Authorization": f"Bearer {self.api_key}", "Accept": "application/json"}
        if key:
            headers["Idempotency-Key"] = key
        try:
            response = self.http.request(
                method, f"{self.base}{path}", json=json, headers=headers, timeout=self.timeout
            )
        except requests.ConnectTimeout as exc:  # never sent: safe to retry
            raise GatewayTechnicalError(f"lending partner took no connection: {exc}") from exc
        except requests.Timeout:
            return None  # sent, but no answer in time: the outcome is unknown
        except requests.ConnectionError as exc:
            raise GatewayTechnicalError(f"lending partner unreachable: {exc}") from exc
        # Our credentials refused or a rate limit: never the customer's fault; retried.
        if response.status_code >= 500 or response.status_code in (401, 403, 429):
            raise GatewayTechnicalError(f"lending partner answered {response.status_code}")
        try:
            body = response.json() if response.content else {}
        except ValueError:
            raise GatewayTechnicalError(
                f"lending partner answered {response.status_code} without JSON"
            ) from None
        return response.status_code, body

    def submit_application(
        self, *, application: PartnerApplication, reference: str, idempotency_key: str
    ) -> PartnerDecision:
        """Ask for a decision on ``application``, known to the partner as ``reference``.

        A request the partner refuses as invalid (4xx) is a decline with its error code as
        the reason (``invalid_request:<code>``): the partner decided nothing and will not.
        """
        answer = self._request(
            "POST",
            "/v1/applications",
            key=idempotency_key,
            json=application.to_wire(reference=reference),
        )
        if answer is None:
            return PartnerDecision(PartnerDecisionKind.UNKNOWN, idempotency_key=idempotency_key)
        status, body = answer
        body = body if isinstance(body, dict) else {}
        if status in (200, 201) and "status" in body:
            return decision_from_application(body)
        error = body.get("error") if isinstance(body.get("error"), dict) else {}
        return PartnerDecision(
            PartnerDecisionKind.DECLINED,
            reasons=(
                PartnerReason(
                    code=f"invalid_request:{error.get('code') or f'http_{status}'}",
                    message=str(error.get("message", "")),
                ),
            ),
            status=f"http_{status}",
            idempotency_key=idempotency_key,
            raw=body,
        )

    def get_application(
        self, *, partner_reference: str | None = None, idempotency_key: str | None = None
    ) -> PartnerDecision | None:
        """Read an application back by the partner's id, or by the key it was sent with.

        ``None``: the partner has no such application (it never received it).
        ``UNKNOWN``: the partner did not answer in time.
        """
        if partner_reference:
            path = f"/v1/applications/{quote(partner_reference, safe='')}"
        elif idempotency_key:
            path = f"/v1/applications?idempotency_key={quote(idempotency_key, safe='')}"
        else:
            raise ValueError("get_application needs a partner_reference or an idempotency_key")
        answer = self._request("GET", path)
        if answer is None:
            return PartnerDecision(PartnerDecisionKind.UNKNOWN)
        status, body = answer
        if status == 404:
            return None
        if status != 200 or not isinstance(body, dict):
            raise GatewayTechnicalError(f"lending partner answered {status} to a read")
        if not partner_reference:
            rows = body.get("data") or []
            if not rows:
                return None
            body = rows[0]
        return decision_from_application(body)

    def cancel_application(
        self, *, partner_reference: str, reason: str, idempotency_key: str
    ) -> PartnerCancellation:
        """Ask the partner to cancel an application (the order behind it is gone).

        A declined application answers as cancelled (nothing is funded). A refusal (409,
        e.g. ``already_funded``) carries the application as the partner states it.
        """
        answer = self._request(
            "POST",
            f"/v1/applications/{quote(partner_reference, safe='')}/cancel",
            key=idempotency_key,
            json={"reason": reason},
        )
        if answer is None:
            return PartnerCancellation(CancelOutcome.UNKNOWN)
        status, body = answer
        body = body if isinstance(body, dict) else {}
        if status == 404:
            return PartnerCancellation(CancelOutcome.NOT_FOUND, code="not_found")
        if status == 200 and "status" in body:
            application = decision_from_application(body)
            if application.decision in (
                PartnerDecisionKind.CANCELLED,
                PartnerDecisionKind.DECLINED,
            ):
                return PartnerCancellation(CancelOutcome.CANCELLED, application=application)
            return PartnerCancellation(
                CancelOutcome.REFUSED, code=f"still_{application.status}", application=application
            )
        error = body.get("error") if isinstance(body.get("error"), dict) else {}
        if status == 409:
            app = body.get("application")
            return PartnerCancellation(
                CancelOutcome.REFUSED,
                code=str(error.get("code") or "refused"),
                message=str(error.get("message", "")),
                application=decision_from_application(app) if isinstance(app, dict) else None,
            )
        raise GatewayTechnicalError(f"lending partner answered {status} to a cancel")

    def health(self) -> bool:
        try:
            answer = self._request("GET", "/v1/health")
        except GatewayTechnicalError:
            return False
        return answer is not None and answer[0] == 200 and answer[1].get("status") == "ok"
