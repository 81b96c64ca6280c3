"""Signed webhooks: ``Webhook-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>…]``.

``v1`` is HMAC-SHA256, keyed with the account's webhook secret, over
``"<t>." + raw body``. Compared in constant time; ``t`` must be within ±5 minutes of
now; during a secret rotation both the new and the previous secret are accepted.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Sequence

from payments.errors import WebhookRejected

HEADER = "Webhook-Signature"
TOLERANCE_SECONDS = 300


def signature(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The header a sender (the payment sandbox, a test) puts on ``body``."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    return f"t={timestamp},v1={signature(secret, timestamp, body)}"


def _reject(code: str, message: str) -> WebhookRejected:
    return WebhookRejected(message, code=code, fields={HEADER: [message]})


def verify(*, header: str | None, body: bytes, secrets: Sequence[str], now: float) -> None:
    """Raise ``WebhookRejected`` unless ``header`` signs ``body`` with one of ``secrets``."""
    if not header:
        raise _reject("webhooks.signature_missing", f"The {HEADER} header is missing.")
    if not header.isascii():  # a signature is ASCII; compare_digest refuses anything else
        raise _reject("webhooks.signature_malformed", f"{HEADER} must be t=…,v1=… in ASCII.")
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        parts.setdefault(key, []).append(value)
    try:
        timestamp = int(parts["t"][0])  # ASCII digits only: the header is ASCII
        candidates = parts["v1"]
    except (KeyError, ValueError):
        raise _reject("webhooks.signature_malformed", f"{HEADER} must be t=…,v1=….") from None
    if abs(now - timestamp) > TOLERANCE_SECONDS:
        raise _reject(
            "webhooks.timestamp_out_of_tolerance",
            f"The signature's timestamp is more than {TOLERANCE_SECONDS} s away.",
        )
    expected = [signature(secret, timestamp, body) for secret in secrets if secret]
    if not any(hmac.compare_digest(e, c) for e in expected for c in candidates):
        raise _reject("webhooks.signature_invalid", "The signature does not match.")


# Providers whose notifications carry no signature (Klarna's push). Nothing in such a
# body is trusted: it only names the order, which is then read back from the provider.
UNSIGNED = {"klarna"}
_ORDER_ID = re.compile(r"[A-Za-z0-9-]{1,64}")
_EVENT_TYPE = re.compile(r"[A-Z_]{1,40}")


def unsigned_event(body: bytes) -> dict:
    """``{"order_id": …, "event_type": "FRAUD_RISK_ACCEPTED" | …}`` → a stored event."""
    payload = json.loads(body)
    if not (
        isinstance(payload, dict)
        and isinstance(payload.get("order_id"), str)
        and isinstance(payload.get("event_type"), str)
        and _ORDER_ID.fullmatch(payload["order_id"])
        and _EVENT_TYPE.fullmatch(payload["event_type"])
    ):
        raise WebhookRejected(
            "The notification needs an order_id and an event_type.",
            code="webhooks.malformed_event",
            fields={"order_id": ["Required."], "event_type": ["Required."]},
        )
    return {
        "id": f"{payload['order_id']}:{payload['event_type']}",
        "type": "order.changed",
        "data": {"order_id": payload["order_id"]},
    }
