"""A lending partner in the payment sandbox: every path under ``/partner/``.

It takes credit applications, decides them by script, "funds the merchant" on approval and
notifies decisions it takes later with signed webhooks, so ``payments.adapters.
lending_partner`` is exercised over real HTTP. Amounts are integer minor units beside an
ISO 4217 ``currency``; APRs are decimal strings. Errors are ``{"error": {code, message}}``.

- ``POST /v1/applications`` ``{merchant_reference, amount, currency, customer {id, email,
  tier, kyc_status}, items [{sku, name, quantity, unit_price, total_amount,
  merchant_category}], product {code, installment_count, frequency}}`` → 201 Application
  ``{id, status, merchant_reference, idempotency_key, amount, currency, product, reasons,
  terms, funding, created_at, decided_at}``. ``status`` is ``approved`` (``terms``
  {installment_count, frequency, apr, fees {origination, per_installment},
  total_repayable, first_due_date} and ``funding`` {amount, status: "funded", funded_at}),
  ``declined`` (``reasons`` [{code, message}]) or ``referred`` (decided later). A
  malformed request is 422 ``invalid_request``.
- ``GET /v1/applications/{id}`` → the Application; ``GET /v1/applications?idempotency_key=K``
  → ``{"data": [Application]}`` (empty when the key was never received).
- ``POST /v1/applications/{id}/cancel`` ``{reason}`` → 200 the Application, ``status``
  ``cancelled`` (with ``cancel_reason`` and ``cancelled_at``; an approved one's ``funding``
  becomes ``reversed``). A declined or cancelled one answers as it is. An approved one
  answers 409 ``already_funded`` (with ``application``) when ``POST /partner/sandbox/config
  {"refuse_cancel_funded": true}``. Unknown id → 404. A cancelled application is never
  decided afterwards (``decide`` answers 409 ``not_referred``; no webhook goes out).
- ``GET /v1/health`` → ``{"status": "ok"}``.
- Writes need ``Authorization: Bearer …`` (else 401) and ``Idempotency-Key`` (else 400); a
  repeated key answers the application it opened, as it is now (200), and never
  opens a second one; a refused request is refused again the same way.

Scripted outcomes, by the customer's email: the part after ``+`` of the local part, or the
whole local part (``anna+decline@…`` or ``decline@…``):

- ``decline`` → declined, ``insufficient_credit_history``; a ``kyc_status`` other than
  ``verified`` → declined, ``kyc_incomplete``; an amount above the limit (``POST
  /sandbox/config {"max_amount": minor}``, default 1 000 000) → ``amount_above_limit``.
- ``refer`` → referred, until ``POST /partner/sandbox/applications/{id}/decide
  {"decision": "approve" | "decline"}``; ``refer-approve`` / ``refer-decline`` → referred,
  then decided that way on their own after ``refer_delay_ms`` (config, default 200).
- ``timeout`` → approved and stored, but the answer comes ``SLOW_SECONDS`` later, after
  the adapter's read timeout.
- ``error-once`` → 500 the first time a key is seen, then normal.
- anything else → approved.

A decision taken later is POSTed to the webhook URL (``POST /partner/sandbox/config
{"webhook_url", "webhook_secret"}``, else the sandbox-wide one of ``/sandbox/config``) as
``{"id": "evt_…", "type": "application.approved" | "application.declined", "data":
Application}``, signed as ``payments.webhooks`` verifies. ``POST /partner/sandbox/
applications/{id}/redeliver`` sends the last notification again, same event id.

Witness and control, no auth: ``GET /partner/sandbox/applications`` lists every
application (with ``notifications``: the event ids sent); ``POST /partner/sandbox/reset``
forgets everything.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib import request as urlrequest
from urllib.parse import parse_qs, unquote

SLOW_SECONDS = 3.0  # how long a "timeout" application keeps the caller waiting
DEFAULT_MAX_AMOUNT = 1_000_000  # minor units
FREQUENCY_DAYS = {"weekly": 7, "biweekly": 14, "monthly": 30}

Answer = tuple[int, Any]


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _error(status: int, code: str, message: str) -> Answer:
    return status, {"error": {"code": code, "message": message}}


def _store(state: Any) -> dict[str, Any]:
    """This provider's part of the sandbox state; call with ``state.lock`` held."""
    store = state.extra.get("partner")
    if store is None:
        store = state.extra["partner"] = {
            "config": {
                "webhook_url": "",
                "webhook_secret": "",
                "refer_delay_ms": 200,
                "max_amount": DEFAULT_MAX_AMOUNT,
                "refuse_cancel_funded": False,
            },
            "applications": {},  # id -> Application
            "answers": {},  # idempotency key -> (status, Application id | error body)
            "cancel_answers": {},  # idempotency key -> (status, body) of a cancel
            "seen": set(),  # keys seen (error-once)
            "notifications": {},  # application id -> [event body, …]
            "ids": itertools.count(1),
            "key_locks": {},
        }
    return store


def _header(headers: dict[str, str], name: str) -> str:
    return next((v for k, v in headers.items() if k.lower() == name.lower()), "")


def _script(application: dict[str, Any]) -> str:
    email = str(application.get("customer", {}).get("email", ""))
    local = email.partition("@")[0]
    return local.partition("+")[2] or local


def route(
    state: Any, method: str, path: str, body: dict[str, Any], headers: dict[str, str]
) -> Answer | None:
    path, _, query = path.partition("?")
    path = unquote(path)
    if path.startswith("/sandbox/"):
        return _control(state, method, path, body)
    if not path.startswith("/v1/"):
        return None
    if not _header(headers, "Authorization").startswith("Bearer "):
        return _error(401, "unauthorized", "A Bearer API key is required.")
    if method == "GET":
        return _get(state, path, parse_qs(query))
    if method == "POST" and path == "/v1/applications":
        return _submit(state, body, _header(headers, "Idempotency-Key"))
    match = re.fullmatch(r"/v1/applications/([A-Za-z0-9_]+)/cancel", path)
    if method == "POST" and match:
        return _cancel(state, match.group(1), body, _header(headers, "Idempotency-Key"))
    return None


# --- reads ------------------------------------------------------------------------------
def _get(state: Any, path: str, query: dict[str, list[str]]) -> Answer | None:
    with state.lock:
        store = _store(state)
        if path == "/v1/health":
            return 200, {"status": "ok"}
        if path == "/v1/applications":
            key = (query.get("idempotency_key") or [""])[0]
            hit = store["answers"].get(key)
            application = store["applications"].get(hit[1]) if hit and hit[0] < 300 else None
            return 200, {"data": [copy.deepcopy(application)] if application else []}
        match = re.fullmatch(r"/v1/applications/([A-Za-z0-9_]+)", path)
        if not match:
            return None
        application = store["applications"].get(match.group(1))
        if application is None:
            return _error(404, "not_found", "No application has this id.")
        return 200, copy.deepcopy(application)


# --- writes -----------------------------------------------------------------------------
def _submit(state: Any, body: dict[str, Any], key: str) -> Answer:
    if not key:
        return _error(400, "idempotency_key_required", "Idempotency-Key is required.")
    with state.lock:
        store = _store(state)
        key_lock = store["key_locks"].setdefault(key, threading.Lock())
    # One request per key at a time: a concurrent repeat waits for the first and gets its
    # answer, so the application log stays a true witness.
    with key_lock:
        with state.lock:
            store = _store(state)
            if key in store["answers"]:
                status, kept = store["answers"][key]
                if status >= 300:
                    return status, copy.deepcopy(kept)
                return 200, copy.deepcopy(store["applications"][kept])
            first_time = key not in store["seen"]
            store["seen"].add(key)
            if _script(body) == "error-once" and first_time:
                return _error(500, "internal_error", "Something went wrong.")
            status, answer = _make(store, body, key)
            store["answers"][key] = (status, answer["id"] if status < 300 else answer)
            delay = store["config"]["refer_delay_ms"] / 1000
        script = _script(body)
        if status == 201 and script in ("refer-approve", "refer-decline"):
            decision = script.partition("-")[2]
            timer = threading.Timer(delay, _decide, args=(state, answer["id"], decision))
            timer.daemon = True
            timer.start()
    if status == 201 and script == "timeout":
        time.sleep(SLOW_SECONDS)  # made and stored; the answer comes too late
    return status, answer


def _cancel(state: Any, application_id: str, body: dict[str, Any], key: str) -> Answer:
    """Cancel an application at the merchant's request; a repeated key answers again."""
    if not key:
        return _error(400, "idempotency_key_required", "Idempotency-Key is required.")
    with state.lock:
        store = _store(state)
        if key in store["cancel_answers"]:
            status, kept = store["cancel_answers"][key]
            return status, copy.deepcopy(kept)
        application = store["applications"].get(application_id)
        if application is None:
            return _error(404, "not_found", "No application has this id.")
        if application["status"] == "approved" and store["config"]["refuse_cancel_funded"]:
            status, answer = _error(409, "already_funded", "The merchant is already funded.")
            answer["application"] = copy.deepcopy(application)
        else:
            if application["status"] in ("referred", "approved"):
                application["status"] = "cancelled"
                application["cancel_reason"] = str(body.get("reason", ""))[:255]
                application["cancelled_at"] = _iso(_now())
                if application["funding"]:
                    application["funding"]["status"] = "reversed"
            status, answer = 200, copy.deepcopy(application)
        store["cancel_answers"][key] = (status, copy.deepcopy(answer))
        return status, answer


def _valid(body: dict[str, Any]) -> str | None:
    """What is wrong with an application request, or None."""
    if not isinstance(body.get("amount"), int) or body["amount"] <= 0:
        return "amount must be a positive integer of minor units."
    if not isinstance(body.get("currency"), str) or len(body["currency"]) != 3:
        return "currency must be an ISO 4217 code."
    customer = body.get("customer")
    if not isinstance(customer, dict) or not customer.get("email"):
        return "customer.email is required."
    items = body.get("items")
    if not isinstance(items, list) or not items:
        return "items must list at least one item."
    product = body.get("product")
    if (
        not isinstance(product, dict)
        or not isinstance(product.get("installment_count"), int)
        or product["installment_count"] < 1
        or product.get("frequency") not in FREQUENCY_DAYS
    ):
        return "product needs an installment_count and a frequency."
    return None


def _make(store: dict[str, Any], body: dict[str, Any], key: str) -> Answer:
    problem = _valid(body)
    if problem:
        return _error(422, "invalid_request", problem)
    script = _script(body)
    reasons: list[dict[str, str]] = []
    if body["customer"].get("kyc_status") != "verified":
        reasons.append({"code": "kyc_incomplete", "message": "The customer is not verified."})
    if body["amount"] > store["config"]["max_amount"]:
        reasons.append({"code": "amount_above_limit", "message": "Above the partner's limit."})
    if script == "decline":
        reasons.append(
            {
                "code": "insufficient_credit_history",
                "message": "Not enough credit history to lend this amount.",
            }
        )
    now = _now()
    application = {
        "id": f"app_{next(store['ids'])}",
        "status": "referred",
        "merchant_reference": body.get("merchant_reference"),
        "idempotency_key": key,
        "amount": body["amount"],
        "currency": body["currency"],
        "product": body["product"],
        "reasons": [],
        "terms": None,
        "funding": None,
        "created_at": _iso(now),
        "decided_at": None,
    }
    if reasons:
        _settle(application, approve=False, reasons=reasons)
    elif not script.startswith("refer"):
        _settle(application, approve=True)
    store["applications"][application["id"]] = application
    store["notifications"][application["id"]] = []
    return 201, copy.deepcopy(application)


def _settle(
    application: dict[str, Any], *, approve: bool, reasons: list[dict[str, str]] | None = None
) -> None:
    """Decide an application: terms and funding on approval, reasons on a decline."""
    now = _now()
    application["decided_at"] = _iso(now)
    if not approve:
        application["status"] = "declined"
        application["reasons"] = reasons or [
            {"code": "affordability", "message": "The repayments are not affordable."}
        ]
        return
    product = application["product"]
    count, amount = product["installment_count"], application["amount"]
    apr = Decimal("0.00") if count <= 4 else Decimal("19.99")
    origination = 0 if count <= 4 else amount // 100  # 1% on longer plans
    per_installment = 0 if count <= 4 else 99
    # Simple interest on the average balance of an amortizing plan (half the amount).
    years = Decimal(count * FREQUENCY_DAYS[product["frequency"]]) / Decimal(365)
    interest = int((Decimal(amount) * apr / 100 * years / 2).to_integral_value())
    application["status"] = "approved"
    application["terms"] = {
        "installment_count": count,
        "frequency": product["frequency"],
        "apr": f"{apr:.2f}",
        "fees": {"origination": origination, "per_installment": per_installment},
        "total_repayable": amount + interest + origination + per_installment * count,
        "first_due_date": (now + timedelta(days=FREQUENCY_DAYS[product["frequency"]]))
        .date()
        .isoformat(),
    }
    # The partner pays the merchant the amount financed at approval.
    application["funding"] = {"amount": amount, "status": "funded", "funded_at": _iso(now)}


# --- control and notifications ----------------------------------------------------------
def _control(state: Any, method: str, path: str, body: dict[str, Any]) -> Answer | None:
    if method == "GET" and path == "/sandbox/applications":
        with state.lock:
            store = _store(state)
            return 200, {
                "data": [
                    {
                        **copy.deepcopy(a),
                        "notifications": [n["id"] for n in store["notifications"][a["id"]]],
                    }
                    for a in store["applications"].values()
                ]
            }
    if method != "POST":
        return None
    if path == "/sandbox/config":
        with state.lock:
            config = _store(state)["config"]
            for name in (
                "webhook_url",
                "webhook_secret",
                "refer_delay_ms",
                "max_amount",
                "refuse_cancel_funded",
            ):
                if name in body:
                    config[name] = body[name]
            return 200, {k: v for k, v in config.items() if k != "webhook_secret"}
    if path == "/sandbox/reset":
        with state.lock:
            state.extra.pop("partner", None)
        return 200, {"reset": True}
    match = re.fullmatch(r"/sandbox/applications/(app_\d+)/(decide|redeliver)", path)
    if not match:
        return None
    application_id, action = match.groups()
    if action == "redeliver":
        return _redeliver(state, application_id)
    decision = body.get("decision")
    if decision not in ("approve", "decline"):
        return _error(422, "invalid_request", "decision must be approve or decline.")
    return _decide(state, application_id, decision)


def _decide(state: Any, application_id: str, decision: str) -> Answer:
    """Decide a referred application and notify the merchant."""
    with state.lock:
        store = _store(state)
        application = store["applications"].get(application_id)
        if application is None or application["status"] != "referred":
            return _error(409, "not_referred", "Only a referred application can be decided.")
        _settle(application, approve=decision == "approve")
        event = {
            "id": f"evt_partner_{next(store['ids'])}",
            "type": f"application.{application['status']}",
            "created_at": _iso(_now()),
            "data": copy.deepcopy(application),
        }
        store["notifications"][application_id].append(event)
        target = _target(state, store)
    status, answer = _send(target, event)
    return 200, {
        "application": event["data"],
        "event_id": event["id"],
        "webhook_status": status,
        "webhook_answer": answer,
    }


def _redeliver(state: Any, application_id: str) -> Answer:
    with state.lock:
        store = _store(state)
        sent = store["notifications"].get(application_id)
        if not sent:
            return _error(409, "nothing_sent", "No notification was sent for it.")
        event, target = sent[-1], _target(state, store)
    status, answer = _send(target, event)
    return 200, {"event_id": event["id"], "webhook_status": status, "webhook_answer": answer}


def _target(state: Any, store: dict[str, Any]) -> tuple[str, str]:
    config = store["config"]
    return (
        config["webhook_url"] or state.webhook_url,
        config["webhook_secret"] or state.webhook_secret,
    )


def _send(target: tuple[str, str], event: dict[str, Any]) -> tuple[int, Any]:
    """POST a signed notification to the merchant; returns its answer."""
    from payments.webhooks import signature_header

    url, secret = target
    if not url:
        return 0, "no webhook_url configured"
    body = json.dumps(event).encode()
    http_request = urlrequest.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Webhook-Signature": signature_header(secret, body),
        },
    )
    try:
        with urlrequest.urlopen(http_request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urlrequest.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")
    except Exception as exc:  # the merchant being down is the merchant's problem
        return 0, str(exc)
