"""The sandbox's Klarna disputes: scripted, notified to the app as Klarna's webhooks.

Shapes followed (docs.klarna.com, "Disputes integration with API" and "Webhooks"): a
notification is ``{"metadata": {event_type, event_id, event_version, occurred_at, …},
"payload": {payment_dispute_id, dispute_reason, state, previous_state, state_context,
payment_transaction_id, payment_transaction_reference, dispute_details: {dispute_amount,
currency, created_by}}}`` with ``event_type`` ``payment.dispute.state-change.<state>``
(``initiated`` opens, ``closed`` closes with ``state_context.outcome`` ``WON`` | ``LOST``),
signed with HMAC-SHA256 over the raw body in ``Klarna-Signature`` (hex here; the pages
read do not say the encoding) under the key named by ``Klarna-Signing-Key-Id``. The
transaction id ends with the Klarna order id (``krn:payment:eu1:authorization:<order id>``).

Controls (no auth), under ``/klarna``: ``POST /sandbox/webhooks {"webhook_url",
"signing_key"}``; ``POST /sandbox/orders/{id}/dispute {"reason", "amount"}`` (amount in
minor units, default what is captured) sends ``…initiated``; ``POST
/sandbox/disputes/{id}/close {"outcome": "WON" | "LOST" | "WITHDRAWN"}`` sends ``…closed``.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib import request as urlrequest

Answer = tuple[int, Any]
SIGNATURE = "Klarna-Signature"
SIGNING_KEY_ID = "Klarna-Signing-Key-Id"
_ids = itertools.count(1)


def sign(key: str, body: bytes) -> str:
    return hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def _error(status: int, code: str, message: str) -> Answer:
    return status, {"error_code": code, "error_messages": [message], "correlation_id": "sandbox"}


def handles(method: str, path: str) -> bool:
    return method == "POST" and bool(
        path == "/sandbox/webhooks"
        or re.fullmatch(r"/sandbox/orders/[^/]+/dispute", path)
        or re.fullmatch(r"/sandbox/disputes/[^/]+/close", path)
    )


def route(state: Any, store: dict[str, Any], path: str, body: Any) -> Answer:
    """Answer a dispute control; ``state.lock`` is not held (a notification goes out)."""
    body = body if isinstance(body, dict) else {}
    config = state.extra.setdefault("klarna_disputes", {"url": "", "key": "", "disputes": {}})
    if path == "/sandbox/webhooks":
        with state.lock:
            config["url"] = str(body.get("webhook_url", config["url"]))
            config["key"] = str(body.get("signing_key", config["key"]))
        return 200, {"webhook_url": config["url"]}
    opened = re.fullmatch(r"/sandbox/orders/([^/]+)/dispute", path)
    with state.lock:
        if opened:
            order = store["orders"].get(opened.group(1))
            if order is None or not order["captured_amount"]:
                return _error(404, "NOT_FOUND", "No captured order with that id")
            amount = body.get("amount", order["captured_amount"])
            if type(amount) is not int or not 0 < amount <= order["captured_amount"]:
                return _error(400, "BAD_VALUE", "Bad value: amount")
            number = next(_ids)
            reason = str(body.get("reason") or "PRODUCTS_OR_SERVICES_NOT_RECEIVED")
            dispute = {
                "payment_dispute_id": f"krn:payment:eu1:dispute:{reason.lower()}:{number}",
                "dispute_reason": reason,
                "state": "INITIATED",
                "previous_state": None,
                "state_context": {},
                "payment_transaction_id": f"krn:payment:eu1:authorization:{order['order_id']}",
                "payment_transaction_reference": order.get("merchant_reference1") or "",
                "dispute_details": {
                    "dispute_amount": amount,
                    "currency": order["purchase_currency"],
                    "created_by": "CUSTOMER",
                },
            }
            config["disputes"][str(number)] = dispute
            event = "payment.dispute.state-change.initiated"
        else:
            number = re.fullmatch(r"/sandbox/disputes/([^/]+)/close", path).group(1)
            dispute = config["disputes"].get(number)
            outcome = body.get("outcome")
            if dispute is None or dispute["state"] == "CLOSED":
                return _error(404, "NOT_FOUND", "No open dispute with that id")
            if outcome not in ("WON", "LOST", "WITHDRAWN"):
                return _error(400, "BAD_VALUE", "Bad value: outcome")
            dispute["previous_state"], dispute["state"] = dispute["state"], "CLOSED"
            dispute["state_context"] = {"outcome": outcome}
            event = "payment.dispute.state-change.closed"
        snapshot = json.loads(json.dumps(dispute))
        url, key = config["url"], config["key"]
    status, answer = _notify(url, key, event, snapshot)
    return 200, {
        "id": str(number),
        "dispute": snapshot,
        "webhook_status": status,
        "webhook_answer": answer,
    }


def _notify(url: str, key: str, event_type: str, payload: dict[str, Any]) -> tuple[int, Any]:
    if not url:
        return 0, "no webhook_url configured"
    body = json.dumps(
        {
            "metadata": {
                "event_type": event_type,
                "event_id": str(uuid.uuid4()),
                "event_version": "v2",
                "occurred_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
            "payload": payload,
        }
    ).encode()
    sent = urlrequest.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            SIGNATURE: sign(key, body),
            SIGNING_KEY_ID: "krn:partner:global:notification:signing-key:sandbox",
        },
    )
    try:
        with urlrequest.urlopen(sent, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except Exception as exc:  # the app being down is the app's problem, not the sandbox's
        return 0, str(exc)
