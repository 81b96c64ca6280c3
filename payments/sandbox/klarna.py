"""The sandbox's Klarna: Payments v1 and Order Management, as Klarna documents them.

Mounted by ``payments.sandbox.server`` under ``/klarna`` (so Klarna's
``/payments/v1/sessions`` is ``/klarna/payments/v1/sessions`` here). JSON, amounts in
integer minor units, state kept per sandbox server in ``state.extra["klarna"]``.

Payments API v1 — the request bodies are validated against Klarna's published OpenAPI
description (``specs/klarna-payments-v1.yaml``) and refused with 400 ``BAD_VALUE`` when
they do not conform; the answers are what that description promises (the tests hold them
to its response schemas):

- ``POST /payments/v1/sessions`` (``session_create``) → 200 ``{session_id, client_token,
  payment_method_categories}``; ``GET``/``POST /payments/v1/sessions/{id}`` read (200
  ``session_read``) and update (204) it.
- ``POST /payments/v1/authorizations/{token}/order`` (``create_order_request``) → 200
  ``{order_id, redirect_url, fraud_status, authorized_payment_method}``. An authorization
  token places one order; a used or released token is 404 ``NOT_FOUND``.
- ``POST /payments/v1/authorizations/{token}/customer-token`` → 200 ``{token_id, …}``.
- ``DELETE /payments/v1/authorizations/{token}`` → 204 (the authorization is released).

Order Management (not in that description; shapes from Klarna's OM documentation):

- ``GET /ordermanagement/v1/orders/{id}`` → the order: ``status`` (``AUTHORIZED``,
  ``PART_CAPTURED``, ``CAPTURED``, ``CANCELLED``, ``EXPIRED``), ``fraud_status``,
  ``order_amount``, ``original_order_amount``, ``captured_amount``, ``refunded_amount``,
  ``remaining_authorized_amount``, ``purchase_currency``, ``expires_at``, ``captures``,
  ``refunds``.
- ``POST …/captures`` ``{captured_amount}`` and ``POST …/refunds`` ``{refunded_amount}``
  → 201, no body (read the order back); ``POST …/cancel`` (nothing captured yet),
  ``POST …/release-remaining-authorization`` (something captured) and
  ``POST …/extend-authorization-time`` (``expires_at`` moves ``EXTEND_DAYS`` on) → 204.
  What the order's state forbids is 403 (``CAPTURE_NOT_ALLOWED``,
  ``REFUND_NOT_ALLOWED``, ``NOT_ALLOWED``).

Every call needs HTTP Basic auth with a non-empty username and password (401 otherwise).
A write carrying ``Klarna-Idempotency-Key`` is answered once: the same key again returns
the first answer; the same key on a different request is 409 ``CONFLICT``. Errors have
Klarna's shape ``{error_code, error_messages, correlation_id}``; a body that is not JSON,
or none where the description requires one (session create and update), is 400
``BAD_REQUEST``.

Magic authorization tokens (matched by prefix, so ``tok_pending_7`` is pending too):

- ``tok_reject`` — Klarna refuses the authorization: 403 ``REJECTED`` with
  ``fraud_status: REJECTED``; no order is created.
- ``tok_pending`` — the order is created with ``fraud_status: PENDING``: it cannot be
  captured until Klarna decides (``POST /sandbox/orders/{id}/fraud-status`` here, standing
  in for Klarna's notification).
- ``tok_expired`` — the order is created with its authorization already expired.
- ``tok_timeout`` — the order is created, the answer comes after the client's timeout.
- ``tok_error_once`` — 500 the first time an idempotency key is seen, then normal.
- anything else — ``fraud_status: ACCEPTED``.

Sandbox controls (no auth): ``GET /sandbox/orders`` lists every order (the witness),
``GET /sandbox/writes`` every write with its idempotency key,
``POST /sandbox/orders/{id}/fraud-status`` ``{"fraud_status": "ACCEPTED"|"REJECTED"}``
decides a pending order, ``POST /sandbox/reset`` forgets everything. Disputes, notified
as Klarna's signed dispute webhooks: ``payments.sandbox.klarna_disputes``.
"""

from __future__ import annotations

import base64
import binascii
import copy
import functools
import json
import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft4Validator
from referencing import Registry
from referencing.jsonschema import DRAFT4

SPEC_PATH = Path(__file__).with_name("specs") / "klarna-payments-v1.yaml"
SPEC_URI = "urn:klarna:payments-v1"

AUTHORIZATION_DAYS = 28  # how long a new order's authorization lasts
EXTEND_DAYS = 7  # how far extend-authorization-time moves expires_at
TIMEOUT_SECONDS = 3.0  # how long tok_timeout keeps the caller waiting

Answer = tuple[int, Any]

# --- the published description ----------------------------------------------------------


@functools.cache
def spec() -> dict[str, Any]:
    """Klarna's Payments v1 OpenAPI description, as published."""
    return yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))


def _closed(node: Any, *, writing: bool) -> Any:
    """The document with every object schema closed to undocumented properties.

    ``writing`` also drops ``readOnly`` properties, which a client must not send.
    """
    if isinstance(node, list):
        return [_closed(item, writing=writing) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _closed(value, writing=writing) for key, value in node.items()}
    if isinstance(out.get("properties"), dict) and out.get("type") == "object":
        if writing:
            out["properties"] = {
                name: schema
                for name, schema in out["properties"].items()
                if not (isinstance(schema, dict) and schema.get("readOnly"))
            }
        out.setdefault("additionalProperties", False)
    return out


@functools.cache
def schema_validator(name: str, *, strict: bool = False, writing: bool = False) -> Draft4Validator:
    """A validator for ``#/components/schemas/<name>``, its ``$ref``s resolved in the document.

    OpenAPI 3.0 schema objects are a JSON Schema draft 4/5 dialect, hence ``Draft4``.
    ``strict`` closes objects to undocumented properties (what the tests hold our own
    requests and the sandbox's answers to); the sandbox accepts requests non-strictly,
    as Klarna's description allows.
    """
    document = _closed(copy.deepcopy(spec()), writing=writing) if strict else spec()
    registry = Registry().with_resource(SPEC_URI, DRAFT4.create_resource(document))
    return Draft4Validator(
        {"$ref": f"{SPEC_URI}#/components/schemas/{name}"},
        registry=registry,
        format_checker=Draft4Validator.FORMAT_CHECKER,
    )


def schema_errors(name: str, instance: Any, *, strict: bool = False, writing: bool = False):
    """Readable violations of schema ``name`` (empty when ``instance`` conforms)."""
    validator = schema_validator(name, strict=strict, writing=writing)
    return [
        f"{'.'.join(str(p) for p in error.absolute_path) or '(body)'}: {error.message}"
        for error in sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
    ]


# Operations whose request body the description marks required (``requestBody.required``).
BODY_REQUIRED = {"create_session", "update_session"}
# Request and success-response schemas of the Payments v1 operations the sandbox serves.
REQUEST_SCHEMAS = {
    "create_session": "session_create",
    "update_session": "session",
    "create_order": "create_order_request",
    "create_customer_token": "customer_token_creation_request",
}
RESPONSE_SCHEMAS = {
    "create_session": "merchant_session",
    "read_session": "session_read",
    "create_order": "order",
    "create_customer_token": "customer_token_creation_response",
}

# --- helpers ----------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


def _stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _error(status: int, code: str, *messages: str, **extra: Any) -> Answer:
    body = {
        "error_code": code,
        "error_messages": list(messages),
        "correlation_id": str(uuid.uuid4()),
        **extra,
    }
    return status, body


def malformed() -> Answer:
    """A request body that is not JSON (the sandbox server asks before routing)."""
    return _error(400, "BAD_REQUEST", "Request body is not valid JSON")


def _header(headers: dict[str, str], name: str) -> str:
    wanted = name.lower()
    return next((v for k, v in headers.items() if k.lower() == wanted), "")


def _basic_auth_ok(headers: dict[str, str]) -> bool:
    scheme, _, encoded = _header(headers, "Authorization").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        username, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return bool(sep and username and password)


def _store(state: Any) -> dict[str, Any]:
    return state.extra.setdefault(
        "klarna",
        {
            "sessions": {},
            "orders": {},
            "spent_tokens": set(),  # authorization tokens used or released
            "keys": {},  # idempotency key -> (request fingerprint, first answer)
            "seen": set(),  # keys tok_error_once already failed for
            "writes": [],  # every write with its idempotency key (the witness)
        },
    )


def _magic(token: str) -> str:
    for magic in ("reject", "pending", "expired", "timeout", "error_once"):
        if token.startswith(f"tok_{magic}"):
            return magic
    return ""


# --- Payments v1 ------------------------------------------------------------------------

_CATEGORIES = [
    {
        "identifier": "klarna",
        "name": "Pay with Klarna",
        "asset_urls": {
            "descriptive": "https://x.klarnacdn.net/payment-method/assets/badges/generic/klarna.svg",
            "standard": "https://x.klarnacdn.net/payment-method/assets/badges/generic/klarna.svg",
        },
    }
]
_SESSION_FIELDS = set(spec()["components"]["schemas"]["session_read"]["properties"])
_CUSTOMER_READ_FIELDS = set(spec()["components"]["schemas"]["customer_read"]["properties"])


def create_session(store: dict[str, Any], body: dict[str, Any]) -> Answer:
    session_id = str(uuid.uuid4())
    client_token = base64.urlsafe_b64encode(json.dumps({"session_id": session_id}).encode())
    session = {
        **{k: v for k, v in body.items() if k in _SESSION_FIELDS},
        "session_id": session_id,
        "client_token": client_token.decode().rstrip("="),
        "status": "incomplete",
        "expires_at": _stamp(_now() + timedelta(hours=48)),
        "payment_method_categories": _CATEGORIES,
    }
    store["sessions"][session_id] = session
    return 200, {
        "session_id": session_id,
        "client_token": session["client_token"],
        "payment_method_categories": _CATEGORIES,
    }


def read_session(store: dict[str, Any], session_id: str) -> Answer:
    session = store["sessions"].get(session_id)
    if session is None:
        return _error(404, "NOT_FOUND", "Session not found")
    answer = {k: v for k, v in session.items() if k in _SESSION_FIELDS}
    if isinstance(answer.get("customer"), dict):
        answer["customer"] = {
            k: v for k, v in answer["customer"].items() if k in _CUSTOMER_READ_FIELDS
        }
    return 200, answer


def update_session(store: dict[str, Any], session_id: str, body: dict[str, Any]) -> Answer:
    session = store["sessions"].get(session_id)
    if session is None:
        return _error(404, "NOT_FOUND", "Session not found")
    if session["status"] == "complete":
        return _error(404, "SESSION_COMPLETED", "Session is already completed")
    session.update({k: v for k, v in body.items() if k in _SESSION_FIELDS and k != "status"})
    return 204, None


def _take_token(store: dict[str, Any], token: str) -> Answer | None:
    """Refuse a used, released or rejected token; otherwise mark it used."""
    if token in store["spent_tokens"]:
        return _error(404, "NOT_FOUND", "Authorization not found")
    if _magic(token) == "reject":
        store["spent_tokens"].add(token)
        return _error(403, "REJECTED", "Authorization was rejected", fraud_status="REJECTED")
    store["spent_tokens"].add(token)
    return None


def create_order(store: dict[str, Any], token: str, body: dict[str, Any]) -> Answer:
    refused = _take_token(store, token)
    if refused:
        return refused
    magic = _magic(token)
    now = _now()
    order_id = str(uuid.uuid4())
    order = {
        "order_id": order_id,
        "fraud_status": "PENDING" if magic == "pending" else "ACCEPTED",
        "order_amount": body["order_amount"],
        "original_order_amount": body["order_amount"],
        "captured_amount": 0,
        "refunded_amount": 0,
        "released_amount": 0,
        "cancelled": False,
        "purchase_currency": body["purchase_currency"].upper(),
        "purchase_country": body["purchase_country"].upper(),
        "locale": body.get("locale", "en-US"),
        "merchant_reference1": body.get("merchant_reference1"),
        "merchant_reference2": body.get("merchant_reference2"),
        "order_lines": body["order_lines"],
        "klarna_reference": order_id[:8].upper(),
        "created_at": _stamp(now),
        "expires_at": now - timedelta(seconds=1)
        if magic == "expired"
        else now + timedelta(days=AUTHORIZATION_DAYS),
        "captures": [],
        "refunds": [],
    }
    store["orders"][order_id] = order
    return 200, {
        "order_id": order_id,
        "redirect_url": f"https://sandbox.klarna.invalid/v1/sessions/{order_id}/redirect",
        "fraud_status": order["fraud_status"],
        "authorized_payment_method": {"type": "invoice", "number_of_days": 30},
    }


def create_customer_token(store: dict[str, Any], token: str, body: dict[str, Any]) -> Answer:
    refused = _take_token(store, token)
    if refused:
        return refused
    return 200, {"token_id": str(uuid.uuid4()), "payment_method_reference": str(uuid.uuid4())}


def cancel_authorization(store: dict[str, Any], token: str) -> Answer:
    if token in store["spent_tokens"]:
        return _error(404, "NOT_FOUND", "Authorization not found")
    store["spent_tokens"].add(token)
    return 204, None


# --- Order Management -------------------------------------------------------------------


def _remaining(order: dict[str, Any]) -> int:
    if order["cancelled"] or order["fraud_status"] == "REJECTED":
        return 0
    return order["order_amount"] - order["captured_amount"] - order["released_amount"]


def _status(order: dict[str, Any]) -> str:
    if order["cancelled"] or order["fraud_status"] == "REJECTED":
        return "CANCELLED"
    remaining = _remaining(order)
    if order["captured_amount"] and not remaining:
        return "CAPTURED"
    if _now() > order["expires_at"] and remaining:
        return "PART_CAPTURED" if order["captured_amount"] else "EXPIRED"
    return "PART_CAPTURED" if order["captured_amount"] else "AUTHORIZED"


def order_view(order: dict[str, Any]) -> dict[str, Any]:
    """The order as Klarna's Order Management API shows it."""
    hidden = {"released_amount", "cancelled"}
    return {
        **{k: v for k, v in order.items() if k not in hidden},
        "status": _status(order),
        "remaining_authorized_amount": _remaining(order),
        "expires_at": _stamp(order["expires_at"]),
        "captures": [dict(c) for c in order["captures"]],
        "refunds": [dict(r) for r in order["refunds"]],
    }


def _amount(body: dict[str, Any], field: str) -> int | None:
    value = body.get(field) if isinstance(body, dict) else None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def capture(order: dict[str, Any], body: dict[str, Any]) -> Answer:
    amount = _amount(body, "captured_amount")
    if amount is None:
        return _error(400, "BAD_VALUE", "Bad value: captured_amount")
    if order["fraud_status"] != "ACCEPTED":
        return _error(403, "CAPTURE_NOT_ALLOWED", "Order is not accepted by Klarna yet")
    if _status(order) not in ("AUTHORIZED", "PART_CAPTURED") or _now() > order["expires_at"]:
        return _error(403, "CAPTURE_NOT_ALLOWED", f"Order is {_status(order)}")
    if amount > _remaining(order):
        return _error(403, "CAPTURE_NOT_ALLOWED", "Captured amount exceeds the authorization")
    order["captured_amount"] += amount
    order["captures"].append(
        {"capture_id": str(uuid.uuid4()), "captured_amount": amount, "captured_at": _stamp(_now())}
    )
    return 201, None


def refund(order: dict[str, Any], body: dict[str, Any]) -> Answer:
    amount = _amount(body, "refunded_amount")
    if amount is None:
        return _error(400, "BAD_VALUE", "Bad value: refunded_amount")
    if amount > order["captured_amount"] - order["refunded_amount"]:
        return _error(403, "REFUND_NOT_ALLOWED", "Refunded amount exceeds the captured amount")
    order["refunded_amount"] += amount
    order["refunds"].append(
        {"refund_id": str(uuid.uuid4()), "refunded_amount": amount, "refunded_at": _stamp(_now())}
    )
    return 201, None


def cancel(order: dict[str, Any], body: dict[str, Any]) -> Answer:
    if order["captured_amount"] or _status(order) != "AUTHORIZED":
        return _error(403, "NOT_ALLOWED", f"Cannot cancel an order that is {_status(order)}")
    order["cancelled"] = True
    return 204, None


def release_remaining(order: dict[str, Any], body: dict[str, Any]) -> Answer:
    if _status(order) != "PART_CAPTURED":
        return _error(403, "NOT_ALLOWED", f"Nothing to release on an order {_status(order)}")
    order["released_amount"] += _remaining(order)
    return 204, None


def extend(order: dict[str, Any], body: dict[str, Any]) -> Answer:
    if _status(order) not in ("AUTHORIZED", "PART_CAPTURED") or _now() > order["expires_at"]:
        return _error(403, "NOT_ALLOWED", f"Cannot extend an order that is {_status(order)}")
    order["expires_at"] += timedelta(days=EXTEND_DAYS)
    return 204, None


_ORDER_ACTIONS: dict[str, Callable[[dict[str, Any], dict[str, Any]], Answer]] = {
    "captures": capture,
    "refunds": refund,
    "cancel": cancel,
    "release-remaining-authorization": release_remaining,
    "extend-authorization-time": extend,
}

# --- routing ----------------------------------------------------------------------------

_PAYMENTS = [
    ("POST", re.compile(r"/payments/v1/sessions"), "create_session"),
    ("GET", re.compile(r"/payments/v1/sessions/([^/]+)"), "read_session"),
    ("POST", re.compile(r"/payments/v1/sessions/([^/]+)"), "update_session"),
    ("POST", re.compile(r"/payments/v1/authorizations/([^/]+)/order"), "create_order"),
    (
        "POST",
        re.compile(r"/payments/v1/authorizations/([^/]+)/customer-token"),
        "create_customer_token",
    ),
    ("DELETE", re.compile(r"/payments/v1/authorizations/([^/]+)"), "cancel_authorization"),
]
_ORDER = re.compile(r"/ordermanagement/v1/orders/([^/]+)")
_ORDER_ACTION = re.compile(r"/ordermanagement/v1/orders/([^/]+)/([a-z-]+)")


def _operation(method: str, path: str) -> tuple[str, tuple[str, ...]] | None:
    for verb, pattern, name in _PAYMENTS:
        match = pattern.fullmatch(path)
        if verb == method and match:
            return name, match.groups()
    if method == "GET" and (match := _ORDER.fullmatch(path)):
        return "read_order", match.groups()
    match = _ORDER_ACTION.fullmatch(path) if method == "POST" else None
    if match and match.group(2) in _ORDER_ACTIONS:
        return "order_action", match.groups()
    return None


def _dispatch(store: dict[str, Any], name: str, args: tuple[str, ...], body: Any) -> Answer:
    if name in REQUEST_SCHEMAS:
        problems = schema_errors(REQUEST_SCHEMAS[name], body)
        if problems:
            return _error(400, "BAD_VALUE", *problems)
    if name == "create_session":
        return create_session(store, body)
    if name == "read_session":
        return read_session(store, args[0])
    if name == "update_session":
        return update_session(store, args[0], body)
    if name == "create_order":
        return create_order(store, args[0], body)
    if name == "create_customer_token":
        return create_customer_token(store, args[0], body)
    if name == "cancel_authorization":
        return cancel_authorization(store, args[0])
    order = store["orders"].get(args[0])
    if order is None:
        return _error(404, "NO_SUCH_ORDER", f"Order {args[0]} not found")
    if name == "read_order":
        return 200, order_view(order)
    return _ORDER_ACTIONS[args[1]](order, body if isinstance(body, dict) else {})


def _control(store: dict[str, Any], method: str, path: str, body: Any) -> Answer | None:
    """The sandbox's own endpoints under ``/sandbox`` (no auth)."""
    if method == "GET" and path == "/sandbox/orders":
        return 200, {"data": [order_view(o) for o in store["orders"].values()]}
    if method == "GET" and path == "/sandbox/writes":
        return 200, {"data": list(store["writes"])}
    if method == "POST" and path == "/sandbox/reset":
        for part in ("sessions", "orders", "keys"):
            store[part].clear()
        store["spent_tokens"].clear()
        store["seen"].clear()
        store["writes"].clear()
        return 200, {"reset": True}
    match = re.fullmatch(r"/sandbox/orders/([^/]+)/fraud-status", path)
    if method == "POST" and match:
        order = store["orders"].get(match.group(1))
        decided = (body or {}).get("fraud_status")
        if order is None or order["fraud_status"] != "PENDING":
            return _error(404, "NOT_FOUND", "No pending order with that id")
        if decided not in ("ACCEPTED", "REJECTED"):
            return _error(400, "BAD_VALUE", "Bad value: fraud_status")
        order["fraud_status"] = decided
        return 200, order_view(order)
    return None


def route(state: Any, method: str, path: str, body: Any, headers: dict[str, str]) -> Answer | None:
    """Answer one request under ``/klarna`` (``path`` is what follows it)."""
    path = path.split("?", 1)[0]
    from payments.sandbox import klarna_disputes

    if klarna_disputes.handles(method, path):  # disputes: scripted, notified as webhooks
        with state.lock:
            store = _store(state)
        return klarna_disputes.route(state, store, path, body)
    with state.lock:
        store = _store(state)
        if path.startswith("/sandbox/"):
            return _control(store, method, path, body)
    operation = _operation(method, path)
    if operation is None:
        return _error(404, "NOT_FOUND", f"No route for {method} {path}")
    if not _basic_auth_ok(headers):
        return _error(401, "UNAUTHORIZED", "Basic authentication with API credentials needed")
    name, args = operation
    if name in BODY_REQUIRED and _header(headers, "Content-Length") in ("", "0"):
        return _error(400, "BAD_REQUEST", "A request body is required")
    if method == "GET":
        with state.lock:
            return _dispatch(store, name, args, body)

    key = _header(headers, "Klarna-Idempotency-Key")
    fingerprint = json.dumps([method, path, body], sort_keys=True)
    magic = _magic(args[0]) if name == "create_order" else ""
    with state.lock:
        store["writes"].append({"method": method, "path": path, "idempotency_key": key})
        if key and key in store["keys"]:
            first_fingerprint, answer = store["keys"][key]
            if first_fingerprint != fingerprint:
                return _error(409, "CONFLICT", "Idempotency key was used for another request")
            return answer
        if magic == "error_once" and key not in store["seen"]:
            store["seen"].add(key)
            return _error(500, "INTERNAL_SERVER_ERROR", "Something went wrong (sandbox)")
        answer = _dispatch(store, name, args, body)
        if key and answer[0] < 500:
            store["keys"][key] = (fingerprint, answer)
    if magic == "timeout":
        time.sleep(TIMEOUT_SECONDS)
    return answer
