"""The Afterpay / Clearpay adapter: real HTTP against the Online API v2 (deferred flow).

The storefront creates a checkout (``create_checkout``), the customer approves it at
Afterpay, and the checkout token comes back as the ``payment_method`` of ``authorize``.
Amounts travel as Money objects with decimal strings (``{"amount": "10.00", "currency":
"EUR"}``); every write carries the caller's idempotency key as ``requestId``, which makes
Afterpay answer a repeat with the first answer. Credentials go as HTTP Basic
(``merchant_id:secret_key``). The shapes are documented in ``payments/sandbox/afterpay.py``.

An auth expires 13 days after approval (then Afterpay voids it): the ``AUTH_APPROVED``
event's ``expires`` is copied to ``GatewayResult.raw["expires"]``.

Afterpay has no off-session charge and no card vault in this API: ``charge_off_session``
answers ``DECLINED`` with ``decline_code="not_supported"`` (the caller's normal decline
path records it), and ``save_payment_method``, which must return a token, raises
``AfterpayOperationNotSupported``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import requests

from core.errors import ApplicationError
from core.money import Money
from payments.gateway import Decision, GatewayResult, GatewayTechnicalError

# Connect, read seconds. Afterpay documents 10 s / 70 s for writes (20 s for reads); a
# shorter read keeps web and worker processes from waiting on one call, at the price of
# more auths ending in a reversal (the customer checks out again). The sandbox's slow
# auth (``SLOW_SECONDS``) outlasts this read timeout.
TIMEOUT = (2.0, 2.5)
USER_AGENT = "oms-payments/1.0 (Python; Merchant/{merchant_id})"

_APPROVED_STATES = {"AUTH_APPROVED", "PARTIALLY_CAPTURED", "CAPTURED", "VOIDED"}


class AfterpayOperationNotSupported(ApplicationError):
    code = "payments.afterpay_not_supported"
    status_code = 422
    default_message = "Afterpay does not offer this operation."


def _wire(amount: Money) -> dict[str, str]:
    """Afterpay's Money object: a decimal string, never a float or minor units."""
    return {"amount": amount.amount_str(), "currency": amount.currency}


def _money(wire: dict[str, Any]) -> Money:
    return Money.parse(str(wire["amount"]), str(wire["currency"]))


def _total(items: list[dict[str, Any]], currency: str) -> Money:
    total = Money.zero(currency)
    for item in items:
        total = total + _money(item["amount"])
    return total


class AfterpayGateway:
    provider = "afterpay"

    def __init__(
        self,
        *,
        base_url: str,
        merchant_id: str,
        secret_key: str,
        session: requests.Session | None = None,
        timeout: tuple[float, float] = TIMEOUT,
    ):
        self.base = base_url.rstrip("/")
        self.auth = (merchant_id, secret_key)
        self.user_agent = USER_AGENT.format(merchant_id=merchant_id)
        self.http = session or requests.Session()
        self.timeout = timeout

    # --- plumbing -------------------------------------------------------------------
    def _request(
        self, method: str, path: str, json: dict[str, Any] | None = None
    ) -> tuple[int, Any] | None:
        """``(status, body)``; ``None`` when the request went out and no answer came in time."""
        try:
            response = self.http.request(
                method,
                f"{self.base}{path}",
                json=json,
                auth=self.auth,
                headers={"User-Agent": self.user_agent, "Accept": "application/json"},
                timeout=self.timeout,
            )
        except requests.ConnectTimeout as exc:  # never sent: safe to retry
            raise GatewayTechnicalError(f"Afterpay took no connection: {exc}") from exc
        except requests.Timeout:
            return None  # sent, but no answer in time: the outcome is unknown
        except requests.ConnectionError as exc:
            raise GatewayTechnicalError(f"Afterpay unreachable: {exc}") from exc
        if response.status_code >= 500:
            raise GatewayTechnicalError(f"Afterpay answered {response.status_code}")
        try:
            body = response.json() if response.content else {}
        except ValueError:
            body = {}
        return response.status_code, body

    @staticmethod
    def _error(status: int, body: Any) -> GatewayResult:
        body = body if isinstance(body, dict) else {}
        return GatewayResult(
            Decision.DECLINED,
            status=str(body.get("httpStatusCode") or status),
            decline_code=str(body.get("errorCode") or f"http_{status}"),
            raw=body,
        )

    def _payment(self, answer: tuple[int, Any] | None) -> GatewayResult:
        """A Payment object (auth, capture, void, get) as a result."""
        if answer is None:
            return GatewayResult(Decision.UNKNOWN)
        status, body = answer
        if not isinstance(body, dict) or "paymentState" not in body:
            return self._error(status, body)
        currency = body["originalAmount"]["currency"]
        state = body["paymentState"]
        approved = body.get("status") == "APPROVED" and state in _APPROVED_STATES
        events = body.get("events") or []
        auth = next((e for e in events if e.get("type") == "AUTH_APPROVED"), {})
        return GatewayResult(
            decision=Decision.APPROVED if approved else Decision.DECLINED,
            provider_reference=str(body["id"]),
            authorized=_money(body["originalAmount"]) if approved else Money.zero(currency),
            captured=_total([e for e in events if e.get("type") == "CAPTURED"], currency),
            refunded=_total(body.get("refunds") or [], currency),
            status=state,
            decline_code="" if approved else state.lower(),
            raw={**body, "expires": auth.get("expires")},
        )

    def _reverse(self, token: str) -> bool:
        """Reverse the auth made (or still to be made) with ``token``; True if it is."""
        try:
            answer = self._request("POST", f"/v2/payments/token:{quote(token, safe='')}/reversal")
        except GatewayTechnicalError:
            return False
        if answer is None:
            return False
        status, body = answer
        if status == 204:
            return True
        message = str(body.get("message", "")) if isinstance(body, dict) else ""
        return status == 412 and "previously processed" in message.lower()

    # --- Afterpay specifics ---------------------------------------------------------
    def order_limits(self) -> tuple[Money, Money]:
        """The merchant's (minimum, maximum) order amounts, from ``GET /v2/configuration``.

        Afterpay asks for this to be read on a schedule (once a day) and stored; a missing
        ``minimumAmount`` means no minimum.
        """
        answer = self._request("GET", "/v2/configuration")
        if answer is None or answer[0] != 200:
            raise GatewayTechnicalError("Afterpay did not return its configuration")
        body = answer[1]
        if isinstance(body, list):  # the v1 shape: one entry per payment type
            body = next((c for c in body if c.get("type") == "PAY_BY_INSTALLMENT"), {})
        high = _money(body["maximumAmount"])
        low = _money(body["minimumAmount"]) if body.get("minimumAmount") else None
        return low or Money.zero(high.currency), high

    def create_checkout(
        self,
        *,
        amount: Money,
        reference: str,
        confirm_url: str,
        cancel_url: str,
        consumer: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Open a checkout: ``{token, expires, redirectCheckoutUrl}``; the customer approves
        it at ``redirectCheckoutUrl`` and the token is then authorized."""
        answer = self._request(
            "POST",
            "/v2/checkouts",
            json={
                "amount": _wire(amount),
                "merchantReference": reference,
                "consumer": consumer or {},
                "merchant": {"redirectConfirmUrl": confirm_url, "redirectCancelUrl": cancel_url},
            },
        )
        if answer is None:
            raise GatewayTechnicalError("Afterpay did not answer the checkout in time")
        status, body = answer
        if status != 201:
            raise AfterpayOperationNotSupported(
                str(body.get("message") or "Afterpay refused the checkout."),
                code="payments.afterpay_checkout_refused",
                extra={"errorCode": body.get("errorCode")},
            )
        return body

    # --- the protocol ---------------------------------------------------------------
    def authorize(
        self, *, amount: Money, reference: str, payment_method: str, idempotency_key: str
    ) -> GatewayResult:
        """Authorize the approved checkout ``payment_method`` (its token); deferred flow.

        When the auth goes out but no answer comes in time, Afterpay's documented remedy is
        the token reversal: it cancels the auth if it was made, and one that is still on
        its way as soon as it is made, so no money is left held. A reversal Afterpay
        accepted is a definite outcome, no authorization, reported as ``DECLINED`` with
        ``decline_code="timeout_reversed"`` (the customer checks out again). Only a
        reversal that failed leaves the outcome ``UNKNOWN``: reconcile it by token,
        ``sync(provider_reference="token:<token>")``.
        """
        answer = self._request(
            "POST",
            "/v2/payments/auth",
            json={
                "requestId": idempotency_key,
                "token": payment_method,
                "merchantReference": reference,
                # Optional in the deferred flow: Afterpay refuses the auth if it differs
                # from the checkout's amount, so the order total is checked once more.
                "amount": _wire(amount),
            },
        )
        if answer is None:
            reversed_ = self._reverse(payment_method)
            raw = {"reversed": reversed_, "token": payment_method, "requestId": idempotency_key}
            if reversed_:
                return GatewayResult(
                    Decision.DECLINED, status="reversed", decline_code="timeout_reversed", raw=raw
                )
            return GatewayResult(Decision.UNKNOWN, status="unknown", raw=raw)
        return self._payment(answer)

    def charge_off_session(
        self, *, amount: Money, reference: str, payment_method: str, idempotency_key: str
    ) -> GatewayResult:
        """Not offered: every Afterpay payment starts with a checkout the customer approves."""
        return GatewayResult(Decision.DECLINED, decline_code="not_supported")

    def capture(
        self, *, provider_reference: str, amount: Money, idempotency_key: str
    ) -> GatewayResult:
        """Capture part or all of ``openToCaptureAmount``."""
        return self._payment(
            self._request(
                "POST",
                f"/v2/payments/{provider_reference}/capture",
                json={"requestId": idempotency_key, "amount": _wire(amount)},
            )
        )

    def refund(
        self, *, provider_reference: str, amount: Money, idempotency_key: str
    ) -> GatewayResult:
        """Refund captured money. Afterpay answers a Refund object, not the Payment, so the
        result carries no totals; ``raw`` holds ``refundId``."""
        answer = self._request(
            "POST",
            f"/v2/payments/{provider_reference}/refund",
            # Afterpay makes refunds idempotent only with both requestId and the
            # merchant's refund reference, so the key is sent as both.
            json={
                "requestId": idempotency_key,
                "merchantReference": idempotency_key,
                "amount": _wire(amount),
            },
        )
        if answer is None:
            return GatewayResult(Decision.UNKNOWN)
        status, body = answer
        if status != 201 or not isinstance(body, dict) or "refundId" not in body:
            return self._error(status, body)
        return GatewayResult(
            Decision.APPROVED,
            provider_reference=provider_reference,
            status="REFUNDED",
            raw=body,
        )

    def void(self, *, provider_reference: str, idempotency_key: str) -> GatewayResult:
        """Void what is still open to capture (no amount: Afterpay voids all of it)."""
        return self._payment(
            self._request(
                "POST",
                f"/v2/payments/{provider_reference}/void",
                json={"requestId": idempotency_key},
            )
        )

    def save_payment_method(
        self, *, card_number: str, exp_month: int, exp_year: int, idempotency_key: str
    ) -> str:
        raise AfterpayOperationNotSupported("Afterpay keeps no card on file for merchants.")

    def sync(
        self, *, provider_reference: str | None = None, idempotency_key: str | None = None
    ) -> GatewayResult | None:
        """Read a payment back by its order id, or by checkout token as ``token:<token>``.

        Afterpay cannot look a payment up by ``requestId``: asked with only an
        ``idempotency_key``, the answer is ``UNKNOWN`` (nothing is recorded), never a
        guess that the auth does not exist.
        """
        if not provider_reference:
            return GatewayResult(
                Decision.UNKNOWN, raw={"reason": "afterpay_has_no_lookup_by_request_id"}
            )
        if provider_reference.startswith("token:"):
            path = f"/v2/payments/token:{quote(provider_reference[6:], safe='')}"
        else:
            path = f"/v2/payments/{quote(provider_reference, safe='')}"
        answer = self._request("GET", path)
        if answer is None:
            return GatewayResult(Decision.UNKNOWN)
        if answer[0] == 404:
            return None
        return self._payment(answer)

    def dispute(self, dispute_id: str) -> dict[str, Any] | None:
        """``GET /v2/disputes/{id}``: the dispute, or None when there is no such dispute or
        no answer came in time (``GatewayTechnicalError`` when Afterpay is unreachable)."""
        answer = self._request("GET", f"/v2/disputes/{quote(dispute_id, safe='')}")
        if answer is None or answer[0] != 200 or not isinstance(answer[1], dict):
            return None
        return answer[1]

    def health(self) -> bool:
        try:
            answer = self._request("GET", "/v2/configuration")
        except GatewayTechnicalError:
            return False
        return answer is not None and answer[0] == 200
