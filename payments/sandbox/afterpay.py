"""Afterpay / Clearpay v2 in the payment sandbox: every path under ``/afterpay/``.

It answers in the shapes of Afterpay's documented Online API v2, keeps its own state and
is scripted by magic values, so ``payments.adapters.afterpay`` is exercised over real HTTP.
Amounts are Money objects with decimal strings: ``{"amount": "10.00", "currency": "EUR"}``;
errors are ``{errorCode, errorId, message, httpStatusCode}``.

- ``GET /v2/configuration`` → ``{minimumAmount, maximumAmount}`` (the v2 shape; v1 answered
  a list of ``{type: "PAY_BY_INSTALLMENT", …}``).
- ``POST /v2/checkouts`` ``{amount, merchantReference, consumer, merchant}`` → 201
  ``{token, expires, redirectCheckoutUrl}``; an amount outside the limits is 422
  ``invalid_amount``. The consumer's approval at the redirect URL is implicit here.
- ``POST /v2/payments/auth`` ``{requestId, token, merchantReference, amount?}`` → 201 Payment
  ``{id, token, status: APPROVED, paymentState: AUTH_APPROVED, originalAmount,
  openToCaptureAmount, merchantReference, refunds, events}``, the ``AUTH_APPROVED`` event
  carrying ``expires`` (13 days on); a decline is 402 with the Payment (``DECLINED`` /
  ``AUTH_DECLINED``); an unknown token is 402 ``invalid_token``.
- ``GET /v2/payments/{id}`` and ``GET /v2/payments/token:{token}`` → the Payment.
- ``POST /v2/payments/{id}/capture`` ``{requestId, amount}`` → 201 Payment (partial
  captures leave ``PARTIALLY_CAPTURED``); over ``openToCaptureAmount`` is 422
  ``invalid_amount``; a voided auth 412 ``payment_voided``, an expired one 412
  ``payment_expired``, a fully captured one 410 ``payment_captured``.
- ``POST /v2/payments/{id}/refund`` ``{requestId, amount, merchantReference}`` → 201 Refund
  ``{refundId, refundedAt, requestId, amount, merchantReference}``; more than captured and
  not yet refunded is 422 ``invalid_amount``.
- ``POST /v2/payments/{id}/void`` ``{requestId, amount?}`` → 200 Payment; without an amount
  the whole ``openToCaptureAmount`` is voided.
- ``POST /v2/payments/token:{token}/reversal`` → 204, no body: cancels the auth made with
  that token, and any auth that arrives for it later. A second reversal is 412
  ``precondition_failed`` ("previously processed"); one made more than 10 minutes after
  the auth is 412 as well.
- Writes are idempotent by ``requestId``: a repeated one answers the first answer again.
- Every ``/v2`` path needs HTTP Basic auth (``merchant_id:secret_key``), else 401.

Magic values: checkout token ``tok_decline`` → the auth is declined; ``tok_error_once`` →
500 the first time a ``requestId`` is seen, then normal (both work without a checkout,
taking the amount from the auth request); an amount of ``999.99`` → the auth is made, but
the answer comes ``SLOW_SECONDS`` later, after the adapter's read timeout.

Witness and control, no auth: ``GET /afterpay/sandbox/payments`` lists every payment with
``reversed``; ``POST /afterpay/sandbox/config`` ``{currency, minimumAmount,
maximumAmount}`` changes the limits; ``POST /afterpay/sandbox/reset`` forgets everything.
Disputes (``GET /v2/disputes/{id}`` and their scripts): ``afterpay_disputes``.
"""

from __future__ import annotations

import base64
import binascii
import copy
import itertools
import re
import secrets
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

from core.errors import ApplicationError
from core.money import Money

SLOW_SECONDS = 3.0  # how long an auth of 999.99 keeps the caller waiting
SLOW_AMOUNT = "999.99"
AUTH_VALIDITY = timedelta(days=13)  # Afterpay: an auth not captured in 13 days is voided
REVERSAL_WINDOW = timedelta(minutes=10)  # Afterpay: reversals within 10 minutes of the order
# How long a checkout token lives is not stated in the pages read; 3 hours is a guess.
CHECKOUT_VALIDITY = timedelta(hours=3)
MAGIC_TOKENS = ("tok_decline", "tok_error_once")

Answer = tuple[int, Any]


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _error(status: int, code: str, message: str) -> Answer:
    return status, {
        "errorCode": code,
        "errorId": uuid.uuid4().hex[:16],
        "message": message,
        "httpStatusCode": status,
    }


def _store(state: Any) -> dict[str, Any]:
    """This provider's part of the sandbox state; call with ``state.lock`` held."""
    store = state.extra.get("afterpay")
    if store is None:
        store = state.extra["afterpay"] = {
            "config": {"currency": "EUR", "minimum": "1.00", "maximum": "2000.00"},
            "checkouts": {},  # token -> {amount, merchantReference, expires}
            "payments": {},  # order id -> Payment object
            "answers": {},  # (operation, target, requestId) -> first answer
            "seen": set(),  # requestIds seen (tok_error_once)
            "reversed": set(),  # checkout tokens reversed
            "ids": itertools.count(100000001),  # Afterpay order ids are numeric
        }
    return store


def _money(value: Any) -> Money | None:
    """A request's Money object, or None when it is missing or malformed."""
    if not isinstance(value, dict) or not isinstance(value.get("amount"), str):
        return None
    try:
        return Money.parse(value["amount"], str(value.get("currency", "")))
    except ApplicationError:
        return None


def _wire(money: Money) -> dict[str, str]:
    return {"amount": money.amount_str(), "currency": money.currency}


def _read(wire: dict[str, str]) -> Money:
    return Money.parse(wire["amount"], wire["currency"])


def _authorized(headers: dict[str, str]) -> bool:
    value = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
    if not value.startswith("Basic "):
        return False
    try:
        decoded = base64.b64decode(value[6:], validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    merchant_id, _, secret = decoded.partition(":")
    return bool(merchant_id and secret)


def route(
    state: Any, method: str, path: str, body: dict[str, Any], headers: dict[str, str]
) -> Answer | None:
    path = unquote(path.partition("?")[0])
    from payments.sandbox import afterpay_disputes

    if afterpay_disputes.handles(method, path):  # disputes: scripted, notified as webhooks
        if path.startswith("/v2/") and not _authorized(headers):
            return _error(401, "unauthorized", "Basic authentication is required.")
        with state.lock:
            store = _store(state)
        return afterpay_disputes.route(state, store, method, path, body)
    if path.startswith("/sandbox/"):
        return _control(state, method, path, body)
    if not path.startswith("/v2/"):
        return None
    if not _authorized(headers):
        return _error(401, "unauthorized", "Basic authentication is required.")
    if method == "GET":
        return _get(state, path)
    if method != "POST":
        return None
    if path == "/v2/checkouts":
        with state.lock:
            return _checkout(_store(state), body)
    if path == "/v2/payments/auth":
        return _auth(state, body)
    match = re.fullmatch(r"/v2/payments/token:([^/]+)/reversal", path)
    if match:
        with state.lock:
            return _reverse(_store(state), match.group(1))
    match = re.fullmatch(r"/v2/payments/(\d+)/(capture|refund|void)", path)
    if match:
        order_id, action = match.groups()
        change = {"capture": _capture, "refund": _refund, "void": _void}[action]
        with state.lock:
            store = _store(state)
            return _once(store, (action, order_id), body, lambda: change(store, order_id, body))
    return None


def _control(state: Any, method: str, path: str, body: dict[str, Any]) -> Answer | None:
    with state.lock:
        store = _store(state)
        if method == "GET" and path == "/sandbox/payments":
            payments = [
                {**copy.deepcopy(p), "reversed": p["token"] in store["reversed"]}
                for p in store["payments"].values()
            ]
            return 200, {"data": payments}
        if method == "POST" and path == "/sandbox/config":
            config = store["config"]
            config["currency"] = body.get("currency", config["currency"])
            config["minimum"] = body.get("minimumAmount", config["minimum"])
            config["maximum"] = body.get("maximumAmount", config["maximum"])
            return 200, dict(config)
        if method == "POST" and path == "/sandbox/reset":
            del state.extra["afterpay"]
            return 200, {"reset": True}
    return None


def _once(
    store: dict[str, Any], target: tuple[str, str], body: dict[str, Any], make: Any
) -> Answer:
    """Answer a write once per ``requestId``; call with ``state.lock`` held.

    Afterpay documents refunds as idempotent only when ``merchantReference`` comes with
    the ``requestId``; the sandbox keys every write by ``requestId`` alone.
    """
    request_id = body.get("requestId")
    key = (*target, request_id)
    if request_id and key in store["answers"]:
        return copy.deepcopy(store["answers"][key])
    answer = make()
    if request_id and answer[0] < 500:
        store["answers"][key] = copy.deepcopy(answer)
    return answer


# --- reads ----------------------------------------------------------------------------
def _get(state: Any, path: str) -> Answer | None:
    with state.lock:
        store = _store(state)
        if path == "/v2/configuration":
            config = store["config"]
            currency = config["currency"]
            return 200, {
                "minimumAmount": {"amount": config["minimum"], "currency": currency},
                "maximumAmount": {"amount": config["maximum"], "currency": currency},
            }
        match = re.fullmatch(r"/v2/payments/(?:token:([^/]+)|(\d+))", path)
        if not match:
            return None
        token, order_id = match.groups()
        if token:
            payment = next((p for p in store["payments"].values() if p["token"] == token), None)
        else:
            payment = store["payments"].get(order_id)
        if payment is None:
            return _error(404, "not_found", "No payment matches.")
        return 200, copy.deepcopy(payment)


# --- writes ---------------------------------------------------------------------------
def _checkout(store: dict[str, Any], body: dict[str, Any]) -> Answer:
    amount = _money(body.get("amount"))
    if amount is None:
        return _error(422, "invalid_object", "amount is required as a Money object.")
    config = store["config"]
    if amount.currency != config["currency"]:
        return _error(422, "invalid_object", f"{amount.currency} is not configured.")
    low, high = (Money.parse(config[k], amount.currency) for k in ("minimum", "maximum"))
    if not low <= amount <= high:
        return _error(422, "invalid_amount", "The amount is outside the merchant's limits.")
    token = f"tok_{secrets.token_hex(12)}"
    expires = _now() + CHECKOUT_VALIDITY
    store["checkouts"][token] = {
        "amount": _wire(amount),
        "merchantReference": body.get("merchantReference"),
        "expires": expires,
    }
    return 201, {
        "token": token,
        "expires": _iso(expires),
        "redirectCheckoutUrl": f"https://portal.sandbox.afterpay.com/checkout/?token={token}",
    }


def _auth(state: Any, body: dict[str, Any]) -> Answer:
    token = str(body.get("token") or "")
    request_id = body.get("requestId")
    with state.lock:
        store = _store(state)
        first_time = request_id not in store["seen"]
        if request_id:
            store["seen"].add(request_id)
        if token == "tok_error_once" and first_time:
            return _error(500, "internal_server_error", "Something went wrong.")
        answer = _once(store, ("auth", ""), body, lambda: _make_auth(store, token, body))
    payment = answer[1]
    if answer[0] == 201 and payment["originalAmount"]["amount"] == SLOW_AMOUNT:
        time.sleep(SLOW_SECONDS)  # made and stored; the answer comes too late
    return answer


def _make_auth(store: dict[str, Any], token: str, body: dict[str, Any]) -> Answer:
    if not token:
        return _error(422, "invalid_object", "token is required.")
    if token in store["reversed"]:
        return _error(412, "precondition_failed", "Order in pending reversal.")
    if any(p["token"] == token for p in store["payments"].values()):
        return _error(402, "invalid_token", "The checkout token was already used.")
    asked = _money(body.get("amount")) if body.get("amount") is not None else None
    if body.get("amount") is not None and asked is None:
        return _error(422, "invalid_object", "amount must be a Money object.")
    checkout = store["checkouts"].get(token)
    if checkout is not None:
        if checkout["expires"] < _now():
            return _error(402, "invalid_token", "The checkout token has expired.")
        amount = _read(checkout["amount"])
        if asked is not None and asked != amount:
            # Documented as "rejected with an error specific to this scenario"; the exact
            # errorCode is not in the pages read.
            return _error(412, "invalid_amount", "The amount differs from the checkout's.")
    elif token in MAGIC_TOKENS and asked is not None:
        amount = asked
    else:
        return _error(402, "invalid_token", "The checkout token is invalid or expired.")
    approved = token != "tok_decline"
    now = _now()
    payment = {
        "id": str(next(store["ids"])),
        "token": token,
        "status": "APPROVED" if approved else "DECLINED",
        "created": _iso(now),
        "originalAmount": _wire(amount),
        "openToCaptureAmount": _wire(amount if approved else Money.zero(amount.currency)),
        "paymentState": "AUTH_APPROVED" if approved else "AUTH_DECLINED",
        "merchantReference": body.get("merchantReference")
        or (checkout or {}).get("merchantReference"),
        "refunds": [],
        "orderDetails": {},
        "events": [
            _event(
                "AUTH_APPROVED" if approved else "AUTH_DECLINED",
                amount,
                expires=_iso(now + AUTH_VALIDITY) if approved else None,
            )
        ],
    }
    store["payments"][payment["id"]] = payment
    return (201 if approved else 402), copy.deepcopy(payment)


def _event(kind: str, amount: Money, *, expires: str | None = None) -> dict[str, Any]:
    return {
        "id": secrets.token_urlsafe(20),
        "created": _iso(_now()),
        "expires": expires,
        "type": kind,
        "amount": _wire(amount),
        "paymentEventMerchantReference": None,
    }


def _captured(payment: dict[str, Any]) -> Money:
    total = Money.zero(payment["originalAmount"]["currency"])
    for event in payment["events"]:
        if event["type"] == "CAPTURED":
            total = total + _read(event["amount"])
    return total


def _expired(payment: dict[str, Any]) -> bool:
    expires = payment["events"][0]["expires"]
    return bool(expires) and datetime.fromisoformat(expires) < _now()


def _payment_or_error(store: dict[str, Any], order_id: str) -> dict[str, Any] | Answer:
    payment = store["payments"].get(order_id)
    if payment is None:
        return _error(412, "error", "No order matches this orderId.")
    if payment["status"] != "APPROVED":
        return _error(412, "invalid_state", "The order was declined.")
    return payment


def _capture(store: dict[str, Any], order_id: str, body: dict[str, Any]) -> Answer:
    payment = _payment_or_error(store, order_id)
    if isinstance(payment, tuple):
        return payment
    open_amount = _read(payment["openToCaptureAmount"])
    if payment["paymentState"] == "VOIDED":
        return _error(412, "payment_voided", "The auth for this order was voided.")
    if _expired(payment):
        return _error(412, "payment_expired", "The auth for this order has expired.")
    if open_amount.is_zero():
        return _error(410, "payment_captured", "Nothing is left to capture.")
    amount = _money(body.get("amount"))
    if amount is None or amount.currency != open_amount.currency:
        return _error(422, "invalid_object", "amount is required as a Money object.")
    if not amount.is_positive() or amount > open_amount:
        return _error(422, "invalid_amount", "The amount exceeds the openToCaptureAmount.")
    payment["events"].append(_event("CAPTURED", amount))
    payment["openToCaptureAmount"] = _wire(open_amount - amount)
    payment["paymentState"] = "CAPTURED" if amount == open_amount else "PARTIALLY_CAPTURED"
    return 201, copy.deepcopy(payment)


def _refund(store: dict[str, Any], order_id: str, body: dict[str, Any]) -> Answer:
    payment = _payment_or_error(store, order_id)
    if isinstance(payment, tuple):
        return payment
    amount = _money(body.get("amount"))
    captured = _captured(payment)
    if amount is None or amount.currency != captured.currency:
        return _error(422, "invalid_object", "amount is required as a Money object.")
    refunded = Money.zero(captured.currency)
    for refund in payment["refunds"]:
        refunded = refunded + _read(refund["amount"])
    if not amount.is_positive() or refunded + amount > captured:
        return _error(422, "invalid_amount", "The refund exceeds what was captured.")
    refund = {
        "requestId": body.get("requestId"),
        "amount": _wire(amount),
        "merchantReference": body.get("merchantReference"),
        "refundId": str(next(store["ids"])),
        "refundedAt": _iso(_now()),
        "refundMerchantReference": body.get("refundMerchantReference"),
    }
    payment["refunds"].append(refund)
    return 201, dict(refund)


def _void(store: dict[str, Any], order_id: str, body: dict[str, Any]) -> Answer:
    payment = _payment_or_error(store, order_id)
    if isinstance(payment, tuple):
        return payment
    open_amount = _read(payment["openToCaptureAmount"])
    if open_amount.is_zero():
        if payment["paymentState"] == "VOIDED":
            return _error(412, "payment_voided", "The auth for this order was voided.")
        return _error(410, "payment_captured", "Nothing is left to void.")
    amount = open_amount if body.get("amount") is None else _money(body.get("amount"))
    if amount is None or amount.currency != open_amount.currency:
        return _error(422, "invalid_object", "amount must be a Money object.")
    if not amount.is_positive() or amount > open_amount:
        return _error(422, "invalid_amount", "The amount exceeds the openToCaptureAmount.")
    payment["events"].append(_event("VOIDED", amount))
    left = open_amount - amount
    payment["openToCaptureAmount"] = _wire(left)
    if left.is_zero():
        payment["paymentState"] = "CAPTURED" if _captured(payment).is_positive() else "VOIDED"
    # The docs show the updated Payment object; the success status (200) is assumed.
    return 200, copy.deepcopy(payment)


def _reverse(store: dict[str, Any], token: str) -> Answer:
    if token in store["reversed"]:
        return _error(412, "precondition_failed", "Payment reversal previously processed.")
    payment = next((p for p in store["payments"].values() if p["token"] == token), None)
    if payment is None and token not in store["checkouts"] and token not in MAGIC_TOKENS:
        return _error(402, "invalid_token", "Invalid token.")
    if payment is not None:
        created = datetime.fromisoformat(payment["created"])
        if _now() - created > REVERSAL_WINDOW:
            return _error(412, "precondition_failed", "Order outside reversal window.")
        if payment["status"] != "APPROVED" or _captured(payment).is_positive():
            # The docs also allow reversing a captured order (a refund without fees);
            # this sandbox reverses auths only.
            return _error(412, "precondition_failed", "Payment not eligible for a reversal.")
        open_amount = _read(payment["openToCaptureAmount"])
        payment["events"].append(_event("VOIDED", open_amount))
        payment["openToCaptureAmount"] = _wire(Money.zero(open_amount.currency))
        # Afterpay's v1 pages call the end state REVERSED; the v2 paymentState list has
        # no such value, so the sandbox reports VOIDED (and ``reversed`` in its witness).
        payment["paymentState"] = "VOIDED"
    store["reversed"].add(token)
    return 204, None
