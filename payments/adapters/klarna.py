"""The Klarna adapter: Klarna Payments v1 and Order Management over real HTTP.

- Auth is HTTP Basic with the account's API username and password; every write carries
  ``Klarna-Idempotency-Key`` (the caller's key), so a retry is answered, not repeated.
- Amounts are integer minor units. ``authorize`` places the order for an authorization
  token the storefront obtained from Klarna's widget; the request validates against
  Klarna's published OpenAPI description (``payments/sandbox/specs``).
- ``fraud_status`` decides: ``ACCEPTED`` is approved, ``PENDING`` holds the order until
  Klarna's notification arrives (``sync`` reads the decision back), ``REJECTED`` (403
  ``REJECTED`` on order placement) is a decline.
- Klarna's authorization expires (``expires_at``); every result that read the order
  carries it in ``raw["expires_at"]``, and ``extend_authorization`` moves it on.
- ``void`` cancels an order with nothing captured and releases the remaining
  authorization of a partly captured one, as Klarna's Order Management requires.
- A wrong or missing API credential (401) is a ``GatewayTechnicalError``: the account is
  misconfigured, nobody declined anything, and the circuit breaker and health check show it.
- Klarna has no off-session charges and no card vault in this API:
  ``charge_off_session`` answers ``DECLINED`` with ``decline_code="not_supported"``,
  ``save_payment_method`` raises ``KlarnaNotSupported``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import requests

from core.errors import ApplicationError, BusinessRuleViolation
from core.money import Money
from payments.gateway import Decision, GatewayResult, GatewayTechnicalError

TIMEOUT = (2.0, 2.5)  # connect, read seconds
MAX_LINE_AMOUNT = 100_000_000  # Klarna's maximum order line total_amount, minor units

# Klarna's API hosts per region (docs.klarna.com, "API URLs"); playground is the test system.
_REGION_HOSTS = {"eu": "api", "na": "api-na", "oc": "api-oc"}

# Purchase country and locale Klarna expects for an order in each currency, unless the
# account says otherwise.
_MARKETS = {
    "AUD": ("AU", "en-AU"),
    "CAD": ("CA", "en-CA"),
    "CHF": ("CH", "de-CH"),
    "CZK": ("CZ", "cs-CZ"),
    "DKK": ("DK", "da-DK"),
    "EUR": ("DE", "de-DE"),
    "GBP": ("GB", "en-GB"),
    "HUF": ("HU", "hu-HU"),
    "NOK": ("NO", "nb-NO"),
    "NZD": ("NZ", "en-NZ"),
    "PLN": ("PL", "pl-PL"),
    "RON": ("RO", "ro-RO"),
    "SEK": ("SE", "sv-SE"),
    "USD": ("US", "en-US"),
}

_DECISIONS = {
    "ACCEPTED": Decision.APPROVED,
    "PENDING": Decision.PENDING,
    "REJECTED": Decision.DECLINED,
}


class KlarnaNotSupported(BusinessRuleViolation):
    code = "payments.klarna.not_supported"
    default_message = "Klarna does not offer this operation."


class KlarnaRefused(ApplicationError):
    code = "payments.klarna.refused"
    default_message = "Klarna refused the request."


def klarna_base_url(region: str = "eu", mode: str = "sandbox") -> str:
    """Klarna's API root for a region (``eu``, ``na``, ``oc``) and mode (``sandbox``, ``live``).

    A default only: an account's own ``base_url`` (or the payment sandbox) wins.
    """
    try:
        host = _REGION_HOSTS[region.lower()]
    except KeyError:
        raise ValueError(f"Klarna has no region {region!r}; use eu, na or oc.") from None
    playground = "" if mode == "live" else ".playground"
    return f"https://{host}{playground}.klarna.com"


class KlarnaGateway:
    provider = "klarna"

    def __init__(
        self,
        *,
        base_url: str,
        username: str,
        password: str,
        session: requests.Session | None = None,
        purchase_country: str | None = None,
        locale: str | None = None,
        notification_url: str = "",
    ):
        self.base = base_url.rstrip("/")
        self.auth = (username, password)
        self.http = session or requests.Session()
        self.purchase_country = purchase_country
        self.locale = locale
        self.notification_url = notification_url

    # --- plumbing -------------------------------------------------------------------
    def _request(
        self, method: str, path: str, *, key: str | None = None, json: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]] | None:
        """``(status, body)``; ``None`` when the answer did not come in time."""
        headers = {"Klarna-Idempotency-Key": key} if key else {}
        try:
            response = self.http.request(
                method,
                f"{self.base}{path}",
                json=json,
                headers=headers,
                auth=self.auth,
                timeout=TIMEOUT,
            )
        except requests.ConnectTimeout as exc:  # never sent: safe to retry
            raise GatewayTechnicalError(f"Klarna took no connection: {exc}") from exc
        except requests.Timeout:
            return None  # sent, but no answer in time: the outcome is unknown
        except requests.ConnectionError as exc:
            raise GatewayTechnicalError(f"Klarna unreachable: {exc}") from exc
        if response.status_code >= 500:
            raise GatewayTechnicalError(f"Klarna answered {response.status_code}")
        if response.status_code == 401:
            raise GatewayTechnicalError("Klarna refused the API credentials (401)")
        try:
            body = response.json() if response.content else {}
        except ValueError:
            body = {"error_code": f"HTTP_{response.status_code}"}
        return response.status_code, body

    @staticmethod
    def _refusal(status: int, body: dict[str, Any], reference: str | None = None):
        code = str(body.get("error_code") or f"http_{status}").lower()
        return GatewayResult(
            Decision.DECLINED, provider_reference=reference, decline_code=code, raw=body
        )

    def _order(self, order_id: str) -> dict[str, Any] | None:
        """The order as Order Management shows it; ``None`` if unknown or unreadable now."""
        try:
            answer = self._request("GET", f"/ordermanagement/v1/orders/{quote(order_id, safe='')}")
        except GatewayTechnicalError:
            return None
        if answer is None or answer[0] != 200:
            return None
        return answer[1]

    @staticmethod
    def _result(order: dict[str, Any]) -> GatewayResult:
        currency = order["purchase_currency"]
        decision = _DECISIONS.get(order.get("fraud_status", ""), Decision.DECLINED)
        return GatewayResult(
            decision=decision,
            provider_reference=order["order_id"],
            authorized=Money(int(order["order_amount"]), currency)
            if decision == Decision.APPROVED
            else Money.zero(currency),
            captured=Money(int(order["captured_amount"]), currency),
            refunded=Money(int(order["refunded_amount"]), currency),
            status=order["status"],
            raw=order,
        )

    def _order_change(
        self, order_id: str, action: str, key: str, json: dict[str, Any] | None = None
    ) -> GatewayResult:
        """POST an Order Management action, then read the order back for the amounts."""
        answer = self._request(
            "POST",
            f"/ordermanagement/v1/orders/{quote(order_id, safe='')}/{action}",
            key=key,
            json=json,
        )
        if answer is None:
            return GatewayResult(Decision.UNKNOWN, provider_reference=order_id)
        status, body = answer
        if status >= 400:
            return self._refusal(status, body, order_id)
        order = self._order(order_id)
        if order is None:  # done at Klarna; only the read-back failed
            return GatewayResult(Decision.APPROVED, provider_reference=order_id, status=action)
        return self._result(order)

    def _market(self, currency: str) -> tuple[str, str]:
        country, locale = _MARKETS.get(currency, ("US", "en-US"))
        return self.purchase_country or country, self.locale or locale

    def _purchase(self, amount: Money, reference: str) -> dict[str, Any]:
        """The order part shared by session and order requests (Klarna's minimum, valid)."""
        country, locale = self._market(amount.currency)
        name = (reference or "Order")[:255]
        lines, left = [], amount.minor
        while True:  # Klarna caps one line's total: a larger amount spans lines
            part = min(left, MAX_LINE_AMOUNT)
            lines.append(
                {
                    "type": "physical",
                    "reference": name[:256],
                    "name": name,
                    "quantity": 1,
                    "unit_price": part,
                    "tax_rate": 0,
                    "total_amount": part,
                    "total_discount_amount": 0,
                    "total_tax_amount": 0,
                }
            )
            left -= part
            if left <= 0:
                break
        body: dict[str, Any] = {
            "purchase_country": country,
            "purchase_currency": amount.currency,
            "locale": locale,
            "order_amount": amount.minor,
            "order_tax_amount": 0,
            "order_lines": lines,
            "merchant_reference1": reference[:255],
        }
        if self.notification_url:
            body["merchant_urls"] = {"notification": self.notification_url}
        return body

    # --- Klarna-specific ------------------------------------------------------------
    def create_session(self, *, amount: Money, reference: str, idempotency_key: str) -> dict:
        """Open a Klarna Payments session: ``{session_id, client_token, …}`` for the widget."""
        body = {**self._purchase(amount, reference), "intent": "buy"}
        answer = self._request("POST", "/payments/v1/sessions", key=idempotency_key, json=body)
        if answer is None:
            raise GatewayTechnicalError("Klarna did not answer the session request in time")
        status, payload = answer
        if status >= 400:
            raise KlarnaRefused(
                "; ".join(payload.get("error_messages") or []) or None,
                code=f"payments.klarna.{str(payload.get('error_code', 'refused')).lower()}",
            )
        return payload

    def release_authorization(self, *, authorization_token: str, idempotency_key: str) -> bool:
        """Release an authorization no order will be placed for; False if Klarna has none."""
        answer = self._request(
            "DELETE",
            f"/payments/v1/authorizations/{quote(authorization_token, safe='')}",
            key=idempotency_key,
        )
        return answer is not None and answer[0] == 204

    def extend_authorization(self, *, provider_reference: str, idempotency_key: str):
        """Move the order's authorization expiry on (``raw["expires_at"]`` is the new one)."""
        return self._order_change(provider_reference, "extend-authorization-time", idempotency_key)

    # --- the protocol ---------------------------------------------------------------
    def authorize(
        self, *, amount: Money, reference: str, payment_method: str, idempotency_key: str
    ) -> GatewayResult:
        """Place the order for the authorization token ``payment_method``."""
        answer = self._request(
            "POST",
            f"/payments/v1/authorizations/{quote(payment_method, safe='')}/order",
            key=idempotency_key,
            json=self._purchase(amount, reference),
        )
        if answer is None:
            return GatewayResult(Decision.UNKNOWN)
        status, body = answer
        if status >= 400:
            return self._refusal(status, body)
        order_id = str(body["order_id"])
        order = self._order(order_id) or {}
        decision = _DECISIONS.get(str(body.get("fraud_status")), Decision.DECLINED)
        zero = Money.zero(amount.currency)
        return GatewayResult(
            decision=decision,
            provider_reference=order_id,
            authorized=amount if decision == Decision.APPROVED else zero,
            captured=zero,
            refunded=zero,
            status=order.get("status", "AUTHORIZED"),
            raw={**body, "expires_at": order.get("expires_at")},
        )

    def charge_off_session(
        self, *, amount: Money, reference: str, payment_method: str, idempotency_key: str
    ) -> GatewayResult:
        """Klarna Payments has no merchant-initiated charge: declined, nothing is sent."""
        return GatewayResult(Decision.DECLINED, decline_code="not_supported")

    def capture(
        self, *, provider_reference: str, amount: Money, idempotency_key: str
    ) -> GatewayResult:
        return self._order_change(
            provider_reference, "captures", idempotency_key, {"captured_amount": amount.minor}
        )

    def refund(
        self, *, provider_reference: str, amount: Money, idempotency_key: str
    ) -> GatewayResult:
        return self._order_change(
            provider_reference, "refunds", idempotency_key, {"refunded_amount": amount.minor}
        )

    def void(self, *, provider_reference: str, idempotency_key: str) -> GatewayResult:
        """Cancel the order, or release what is left once something was captured."""
        answer = self._request(
            "GET", f"/ordermanagement/v1/orders/{quote(provider_reference, safe='')}"
        )
        if answer is None:  # nothing was written yet: safe to try again
            raise GatewayTechnicalError(f"Klarna order {provider_reference} could not be read")
        status, order = answer
        if status >= 400:
            return self._refusal(status, order, provider_reference)
        action = "release-remaining-authorization" if order["captured_amount"] else "cancel"
        return self._order_change(provider_reference, action, idempotency_key)

    def save_payment_method(
        self, *, card_number: str, exp_month: int, exp_year: int, idempotency_key: str
    ) -> str:
        raise KlarnaNotSupported("Klarna keeps no cards for merchants; use the card processor.")

    def sync(
        self, *, provider_reference: str | None = None, idempotency_key: str | None = None
    ) -> GatewayResult | None:
        """Read the order back by its id.

        Klarna offers no lookup by idempotency key: without an order id the outcome stays
        ``UNKNOWN`` (placing the same order again with the same key replays Klarna's answer).
        """
        if not provider_reference:
            return GatewayResult(Decision.UNKNOWN, status="no_lookup_by_idempotency_key")
        answer = self._request(
            "GET", f"/ordermanagement/v1/orders/{quote(provider_reference, safe='')}"
        )
        if answer is None:
            return GatewayResult(Decision.UNKNOWN, provider_reference=provider_reference)
        status, body = answer
        if status == 404:
            return None
        if status >= 400:
            return self._refusal(status, body, provider_reference)
        return self._result(body)

    def health(self) -> bool:
        """Klarna has no health endpoint: reading an order that cannot exist answers 404
        when Klarna is up and the credentials are good (401 and 5xx raise)."""
        try:
            answer = self._request("GET", "/ordermanagement/v1/orders/health-check")
        except GatewayTechnicalError:
            return False
        return answer is not None and answer[0] == 404
