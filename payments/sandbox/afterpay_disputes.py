"""The sandbox's Afterpay disputes: scripted, notified to the app as Afterpay does it.

Shapes followed (developers.afterpay.com, "Integrate with the Disputes API" and Cash App
Afterpay's "Webhook Signature Generation"): the notification is ``{webhook_event_id,
webhook_event_type: "created" | "updated", dispute_id, merchant_reference}``, signed in
``X-Afterpay-Request-Signature``: HMAC-SHA256 (base64) over ``"<url>\\n<time>\\n<body>"``
with ``time`` in ``X-Afterpay-Request-Date`` (UNIX seconds). The merchant reads the
dispute back with ``GET /v2/disputes/{id}`` → ``{id, order, amount, reason, status,
open, closingReason, merchantOrderId, …}`` (``status`` ``needs_response`` while open, then
``won`` or ``lost``).

Controls (no auth), under ``/afterpay``: ``POST /sandbox/webhooks {"webhook_url",
"hmac_key"}``; ``POST /sandbox/payments/{id}/dispute {"reason", "amount"}`` (a decimal
string, default what is captured) sends ``created``; ``POST /sandbox/disputes/{id}/close
{"outcome": "won" | "lost"}`` sends ``updated``.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import re
import secrets
import time
import uuid
from typing import Any
from urllib import request as urlrequest

from core.errors import ApplicationError
from core.money import Money

Answer = tuple[int, Any]
_OPEN = re.compile(r"/sandbox/payments/([^/]+)/dispute")
_CLOSE = re.compile(r"/sandbox/disputes/([^/]+)/close")
_READ = re.compile(r"/v2/disputes/([^/]+)")


def sign(key: str, url: str, timestamp: int, body: bytes) -> str:
    message = f"{url}\n{timestamp}\n".encode() + body
    return base64.b64encode(hmac.new(key.encode(), message, hashlib.sha256).digest()).decode()


def _error(status: int, code: str, message: str) -> Answer:
    return status, {
        "errorCode": code,
        "errorId": secrets.token_hex(8),
        "message": message,
        "httpStatusCode": status,
    }


def handles(method: str, path: str) -> bool:
    if method == "GET":
        return bool(_READ.fullmatch(path))
    return method == "POST" and bool(
        path == "/sandbox/webhooks" or _OPEN.fullmatch(path) or _CLOSE.fullmatch(path)
    )


def route(state: Any, store: dict[str, Any], method: str, path: str, body: Any) -> Answer:
    """Answer a dispute request; ``state.lock`` is not held (a notification goes out)."""
    body = body if isinstance(body, dict) else {}
    config = store.setdefault("disputes", {"url": "", "key": "", "all": {}})
    if method == "GET":
        with state.lock:
            dispute = config["all"].get(_READ.fullmatch(path).group(1))
            if dispute is None:
                return _error(404, "not_found", "No dispute matches.")
            return 200, copy.deepcopy(dispute)
    if path == "/sandbox/webhooks":
        with state.lock:
            config["url"] = str(body.get("webhook_url", config["url"]))
            config["key"] = str(body.get("hmac_key", config["key"]))
        return 200, {"webhook_url": config["url"]}
    opened = _OPEN.fullmatch(path)
    with state.lock:
        if opened:
            payment = store["payments"].get(opened.group(1))
            captured = _captured_of(payment) if payment else None
            if captured is None or not captured.is_positive():
                return _error(404, "not_found", "No captured payment matches.")
            try:
                amount = Money.parse(str(body.get("amount", captured.amount_str())), "EUR")
            except ApplicationError:
                return _error(400, "invalid_amount", "amount must be a decimal string.")
            amount = Money(amount.minor, captured.currency)
            if not 0 < amount.minor <= captured.minor:
                return _error(400, "invalid_amount", "At most what was captured.")
            dispute = {
                "id": f"dp_{secrets.token_hex(8)}",
                "order": payment["id"],
                "amount": amount.amount_str(),
                "reason": str(body.get("reason") or "product_not_received"),
                "status": "needs_response",
                "open": True,
                "createdAt": str(int(time.time())),
                "merchantOrderId": payment.get("merchantReference"),
            }
            config["all"][dispute["id"]] = dispute
            kind = "created"
        else:
            dispute = config["all"].get(_CLOSE.fullmatch(path).group(1))
            outcome = body.get("outcome")
            if dispute is None or not dispute["open"]:
                return _error(404, "not_found", "No open dispute matches.")
            if outcome not in ("won", "lost"):
                return _error(400, "invalid_outcome", "outcome is won or lost.")
            dispute.update(status=outcome, open=False, updatedAt=str(int(time.time())))
            kind = "updated"
        snapshot = copy.deepcopy(dispute)
        url, key = config["url"], config["key"]
    status, answer = _notify(url, key, kind, snapshot)
    return 200, {"dispute": snapshot, "webhook_status": status, "webhook_answer": answer}


def _captured_of(payment: dict[str, Any]) -> Money:
    from payments.sandbox.afterpay import _captured

    return _captured(payment)


def _notify(url: str, key: str, kind: str, dispute: dict[str, Any]) -> tuple[int, Any]:
    if not url:
        return 0, "no webhook_url configured"
    body = json.dumps(
        {
            "webhook_event_id": str(uuid.uuid4()),
            "webhook_event_type": kind,
            "dispute_id": dispute["id"],
            "merchant_reference": dispute.get("merchantOrderId") or "",
        }
    ).encode()
    timestamp = int(time.time())
    sent = urlrequest.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "X-Afterpay-Request-Date": str(timestamp),
            "X-Afterpay-Request-Signature": sign(key, url, timestamp, body),
        },
    )
    try:
        with urlrequest.urlopen(sent, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except Exception as exc:  # the app being down is the app's problem, not the sandbox's
        return 0, str(exc)
