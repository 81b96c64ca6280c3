"""Signed webhooks: ``Webhook-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>…]``.

``v1`` is HMAC-SHA256, keyed with the account's webhook secret, over
``"<t>." + raw body``. Compared in constant time; ``t`` must be within ±5 minutes of
now; during a secret rotation both the new and the previous secret are accepted.
"""

from __future__ import annotations

import base64
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


# Klarna's webhooks (its disputes among them) are signed, unlike its order push:
# ``Klarna-Signature`` is HMAC-SHA256 over the raw body (hex) with the account's webhook
# secret. They carry no timestamp to bound; a replay is stored once by its event id.
KLARNA_SIGNATURE = "Klarna-Signature"


def verify_klarna(*, header: str | None, body: bytes, secrets: Sequence[str]) -> None:
    """Raise ``WebhookRejected`` unless ``header`` signs ``body`` with one of ``secrets``."""
    candidate = (header or "").strip()
    if not candidate.isascii():
        raise _reject("webhooks.signature_invalid", "The signature does not match.")
    expected = [
        hmac.new(secret.encode(), body, hashlib.sha256).hexdigest() for secret in secrets if secret
    ]
    if not any(hmac.compare_digest(e, candidate) for e in expected):
        raise _reject("webhooks.signature_invalid", "The signature does not match.")


def klarna_event(body: bytes) -> dict:
    """``{"metadata": {event_id, event_type, …}, "payload": {…}}`` → a stored event."""
    payload = json.loads(body)
    metadata = payload.get("metadata") if isinstance(payload, dict) else None
    if not (
        isinstance(metadata, dict)
        and isinstance(metadata.get("event_id"), str)
        and isinstance(metadata.get("event_type"), str)
        and 0 < len(metadata["event_id"]) <= 128
        and 0 < len(metadata["event_type"]) <= 60
        and isinstance(payload.get("payload"), dict)
    ):
        raise WebhookRejected(
            "The notification needs metadata.event_id, metadata.event_type and a payload.",
            code="webhooks.malformed_event",
            fields={"metadata": ["Required."], "payload": ["Required."]},
        )
    return {
        "id": metadata["event_id"],
        "type": metadata["event_type"],
        "data": payload["payload"],
        "metadata": metadata,
    }


# Afterpay's dispute notifications: ``X-Afterpay-Request-Signature`` is HMAC-SHA256
# (base64) over ``"<url>\n<X-Afterpay-Request-Date>\n<raw body>"``, url being where the
# notification was sent; the date (UNIX seconds) must be within ±5 minutes of now.
AFTERPAY_SIGNATURE = "X-Afterpay-Request-Signature"
AFTERPAY_DATE = "X-Afterpay-Request-Date"


def verify_afterpay(
    *,
    header: str | None,
    date: str | None,
    url: str,
    body: bytes,
    secrets: Sequence[str],
    now: float,
) -> None:
    """Raise ``WebhookRejected`` unless ``header`` signs ``url``, ``date`` and ``body``."""
    try:
        timestamp = int(date or "")
    except ValueError:
        raise _reject(
            "webhooks.signature_malformed", f"{AFTERPAY_DATE} must be UNIX seconds."
        ) from None
    if abs(now - timestamp) > TOLERANCE_SECONDS:
        raise _reject(
            "webhooks.timestamp_out_of_tolerance",
            f"The signature's timestamp is more than {TOLERANCE_SECONDS} s away.",
        )
    candidate = (header or "").strip()
    message = f"{url}\n{timestamp}\n".encode() + body
    expected = [
        base64.b64encode(hmac.new(s.encode(), message, hashlib.sha256).digest()).decode()
        for s in secrets
        if s
    ]
    if not candidate.isascii() or not any(hmac.compare_digest(e, candidate) for e in expected):
        raise _reject("webhooks.signature_invalid", "The signature does not match.")


def afterpay_event(body: bytes) -> dict:
    """``{webhook_event_id, webhook_event_type, dispute_id, merchant_reference}`` → a
    stored event of type ``dispute.<created | updated>``."""
    payload = json.loads(body)
    if not (
        isinstance(payload, dict)
        and isinstance(payload.get("webhook_event_id"), str)
        and 0 < len(payload["webhook_event_id"]) <= 128
        and payload.get("webhook_event_type") in ("created", "updated")
        and isinstance(payload.get("dispute_id"), str)
        and 0 < len(payload["dispute_id"]) <= 128
    ):
        raise WebhookRejected(
            "The notification needs webhook_event_id, webhook_event_type and dispute_id.",
            code="webhooks.malformed_event",
            fields={"webhook_event_id": ["Required."], "dispute_id": ["Required."]},
        )
    return {
        "id": payload["webhook_event_id"],
        "type": f"dispute.{payload['webhook_event_type']}",
        "data": payload,
    }
