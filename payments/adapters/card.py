"""The card processor adapter: real HTTP against the API shape documented in
``payments/sandbox/server.py`` (minor-unit amounts, Bearer auth, ``Idempotency-Key`` on
every write). Card numbers pass through ``tokenize_card`` to the processor and are
never stored or logged here: only the returned token is.

``charge_off_session_many`` sends up to a chunk of off-session charges in one
``POST /v1/charges/batch``; each item carries its own idempotency key, so the whole request
is as safe to retry as a single charge, and its read timeout grows with its size
(``batch_timeout``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import requests

from core.money import Money
from payments.errors import CardRejected
from payments.gateway import Decision, GatewayResult, GatewayTechnicalError, OffSessionCharge

TIMEOUT = (2.0, 2.5)  # connect, read seconds
BATCH_SECONDS_PER_ITEM = 0.005  # read time a batch gets per charge, on top of TIMEOUT[1]


def batch_timeout(n: int) -> tuple[float, float]:
    """(connect, read) seconds for a batch of ``n`` charges: how long a caller may wait."""
    return TIMEOUT[0], TIMEOUT[1] + BATCH_SECONDS_PER_ITEM * n


@dataclass(frozen=True)
class CardToken:
    """What the processor returns for a tokenized card: never the number."""

    token: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int
    fingerprint: str


_DECISIONS = {
    "authorized": Decision.APPROVED,
    "captured": Decision.APPROVED,
    "partially_captured": Decision.APPROVED,
    "voided": Decision.APPROVED,
    "declined": Decision.DECLINED,
    "pending_review": Decision.PENDING,
}


class CardGateway:
    provider = "card"

    def __init__(self, *, base_url: str, secret: str, session: requests.Session | None = None):
        self.base = base_url.rstrip("/")
        self.secret = secret
        self.http = session or requests.Session()

    # --- plumbing -------------------------------------------------------------------
    def _request(
        self,
        method: str,
        path: str,
        *,
        key: str | None = None,
        json: dict[str, Any] | None = None,
        timeout: tuple[float, float] | None = None,
    ) -> dict[str, Any] | None:
        headers = {"Authorization": f"Bearer {self.secret}"}
        if key:
            headers["Idempotency-Key"] = key
        try:
            response = self.http.request(
                method,
                f"{self.base}{path}",
                json=json,
                headers=headers,
                timeout=timeout or TIMEOUT,
            )
        except requests.ConnectTimeout as exc:  # never sent: safe to retry
            raise GatewayTechnicalError(f"card processor took no connection: {exc}") from exc
        except requests.Timeout:
            return None  # sent, but no answer in time: the outcome is unknown
        except requests.ConnectionError as exc:
            raise GatewayTechnicalError(f"card processor unreachable: {exc}") from exc
        # Our credentials refused or a rate limit: the processor's problem or ours, never
        # the customer's; retried, and counted by the circuit breaker.
        if response.status_code >= 500 or response.status_code in (401, 403, 429):
            raise GatewayTechnicalError(f"card processor answered {response.status_code}")
        if response.status_code == 404:
            return {}
        try:
            return response.json()
        except ValueError:
            raise GatewayTechnicalError(
                f"card processor answered {response.status_code} without JSON"
            ) from None

    @staticmethod
    def _result(body: dict[str, Any] | None) -> GatewayResult:
        if body is None:
            return GatewayResult(Decision.UNKNOWN)
        if not body:  # 404: the charge is not there
            return GatewayResult(Decision.DECLINED, decline_code="not_found")
        if "error" in body:
            return GatewayResult(Decision.DECLINED, decline_code=str(body["error"]), raw=body)
        currency = body["currency"]
        return GatewayResult(
            decision=_DECISIONS.get(body["status"], Decision.DECLINED),
            provider_reference=body["id"],
            authorized=Money(int(body["amount"]), currency)
            if body["status"] not in ("declined", "pending_review")
            else Money.zero(currency),
            captured=Money(int(body["amount_captured"]), currency),
            refunded=Money(int(body["amount_refunded"]), currency),
            status=body["status"],
            decline_code=body.get("decline_code") or "",
            raw=body,
        )

    def _charge(
        self,
        amount: Money,
        reference: str,
        payment_method: str,
        key: str,
        *,
        capture: bool,
        off_session: bool,
    ) -> GatewayResult:
        return self._result(
            self._request(
                "POST",
                "/v1/charges",
                key=key,
                json={
                    "amount": amount.minor,
                    "currency": amount.currency,
                    "reference": reference,
                    "payment_method": payment_method,
                    "capture": capture,
                    "off_session": off_session,
                },
            )
        )

    # --- the protocol ---------------------------------------------------------------
    def authorize(
        self, *, amount: Money, reference: str, payment_method: str, idempotency_key: str
    ) -> GatewayResult:
        return self._charge(
            amount, reference, payment_method, idempotency_key, capture=False, off_session=False
        )

    def charge_off_session(
        self, *, amount: Money, reference: str, payment_method: str, idempotency_key: str
    ) -> GatewayResult:
        return self._charge(
            amount, reference, payment_method, idempotency_key, capture=True, off_session=True
        )

    def charge_off_session_many(self, charges: Sequence[OffSessionCharge]) -> list[GatewayResult]:
        """Charge each of ``charges`` off-session in one request: one result each, in order.

        As ``charge_off_session`` per item, by its own key: a key already used (single or
        batch) gets its first answer and no second charge. The whole request failing raises
        ``GatewayTechnicalError`` (safe to resend: every item has its key); no answer in
        time makes every item ``UNKNOWN``. An item the processor failed on (5xx) is
        ``UNKNOWN`` with ``status="provider_error"``: resend it with the same key.
        """
        if not charges:
            return []
        body = self._request(
            "POST",
            "/v1/charges/batch",
            json={
                "charges": [
                    {
                        "idempotency_key": charge.idempotency_key,
                        "amount": charge.amount.minor,
                        "currency": charge.amount.currency,
                        "reference": charge.reference,
                        "payment_method": charge.payment_method,
                        "capture": True,
                        "off_session": True,
                    }
                    for charge in charges
                ]
            },
            timeout=batch_timeout(len(charges)),
        )
        if body is None:  # sent, but no answer in time: every outcome is unknown
            return [GatewayResult(Decision.UNKNOWN) for _ in charges]
        items = body.get("data")
        if (
            not isinstance(items, list)
            or len(items) != len(charges)
            or any(
                not isinstance(item, dict) or item.get("idempotency_key") != charge.idempotency_key
                for item, charge in zip(items, charges, strict=True)
            )
        ):
            raise GatewayTechnicalError(
                "card processor's batch answer does not match the charges sent"
                + (f": {body['error']}" if "error" in body else "")
            )
        return [self._batch_item_result(item) for item in items]

    def _batch_item_result(self, item: dict[str, Any]) -> GatewayResult:
        if isinstance(item.get("charge"), dict):
            return self._result(item["charge"])
        status_code = item.get("status_code")
        if not isinstance(status_code, int) or status_code < 400:
            raise GatewayTechnicalError(f"card processor's batch item is malformed: {item}")
        if status_code >= 500 or status_code in (401, 403, 429):
            # Failed there or refused us (credentials, rate limit), nothing decided about the
            # card: resent with the same key, as ``_request`` treats a whole request.
            return GatewayResult(Decision.UNKNOWN, status="provider_error", raw=item)
        return GatewayResult(Decision.DECLINED, decline_code=str(item.get("error")), raw=item)

    def capture(
        self, *, provider_reference: str, amount: Money, idempotency_key: str
    ) -> GatewayResult:
        return self._result(
            self._request(
                "POST",
                f"/v1/charges/{provider_reference}/capture",
                key=idempotency_key,
                json={"amount": amount.minor},
            )
        )

    def refund(
        self, *, provider_reference: str, amount: Money, idempotency_key: str
    ) -> GatewayResult:
        return self._result(
            self._request(
                "POST",
                f"/v1/charges/{provider_reference}/refunds",
                key=idempotency_key,
                json={"amount": amount.minor},
            )
        )

    def void(self, *, provider_reference: str, idempotency_key: str) -> GatewayResult:
        return self._result(
            self._request(
                "POST", f"/v1/charges/{provider_reference}/void", key=idempotency_key, json={}
            )
        )

    def tokenize_card(
        self, *, card_number: str, exp_month: int, exp_year: int, idempotency_key: str
    ) -> CardToken:
        """Hand the card details to the processor; only its token and labels come back.

        Refused details raise ``payments.card_rejected``; no answer in time raises
        ``GatewayTechnicalError`` (resending with the same key returns the same token).
        """
        body = self._request(
            "POST",
            "/v1/payment_methods",
            key=idempotency_key,
            json={"card_number": card_number, "exp_month": exp_month, "exp_year": exp_year},
        )
        if body is None:
            raise GatewayTechnicalError("the card processor did not answer in time")
        if "error" in body:
            raise CardRejected(
                fields={"card": [f"Refused by the card processor ({body['error']})."]},
                extra={"decline_code": str(body["error"])},
            )
        if not body.get("id"):
            raise GatewayTechnicalError("the card processor did not return a token")
        return CardToken(
            token=str(body["id"]),
            brand=str(body.get("brand") or ""),
            last4=str(body.get("last4") or "")[-4:],
            exp_month=body.get("exp_month") or exp_month,
            exp_year=body.get("exp_year") or exp_year,
            fingerprint=str(body.get("fingerprint") or ""),
        )

    def save_payment_method(
        self, *, card_number: str, exp_month: int, exp_year: int, idempotency_key: str
    ) -> str:
        """The token only (``tokenize_card`` also returns brand, last4 and fingerprint)."""
        return self.tokenize_card(
            card_number=card_number,
            exp_month=exp_month,
            exp_year=exp_year,
            idempotency_key=idempotency_key,
        ).token

    def sync(
        self, *, provider_reference: str | None = None, idempotency_key: str | None = None
    ) -> GatewayResult | None:
        """Read a charge back, by its id or by the key of the request that made it."""
        if provider_reference:
            body = self._request("GET", f"/v1/charges/{provider_reference}")
        else:
            found = self._request("GET", f"/v1/charges?idempotency_key={idempotency_key}")
            if found is None:  # no answer in time: still unknown
                return GatewayResult(Decision.UNKNOWN)
            rows = found.get("data") or []
            body = rows[0] if rows else None
        if not body:
            return None
        return self._result(body)

    def health(self) -> bool:
        try:
            return (self._request("GET", "/v1/health") or {}).get("status") == "ok"
        except GatewayTechnicalError:
            return False
