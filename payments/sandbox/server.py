"""The payment sandbox: a local HTTP server that answers like a card processor.

It keeps its own state (charges, captures, refunds), honours ``Idempotency-Key`` and is
scripted by documented magic values, so the real adapter is exercised over real HTTP:

Card processor API (what ``payments.adapters.card`` speaks), JSON, amounts in minor units:

- ``POST /card/v1/charges`` ``{amount, currency, reference, payment_method, capture,
  off_session}`` → 201 ``{id, status, amount, currency, amount_captured,
  amount_refunded, decline_code, capture}``; ``status`` is ``authorized``, ``captured``,
  ``declined`` or ``pending_review`` (a charge with ``capture`` is captured when it is
  authorized, at once or on review approval).
- ``POST /card/v1/charges/{id}/capture`` ``{amount}``, ``POST …/refunds`` ``{amount}``,
  ``POST …/void`` → 200 with the charge.
- ``POST /card/v1/charges/batch`` ``{"charges": [{idempotency_key, amount, currency,
  reference, payment_method, capture, off_session}, …]}`` (at most 5,000; no
  ``Idempotency-Key`` header: each item carries its own) → 200 ``{"data": [{idempotency_key,
  status_code, charge}, …]}``, one per item in order. Each item is exactly a
  ``POST /card/v1/charges`` with its key (same per-key lock, same replay store: a key used
  once by either route gets the first answer from both), so ``status_code`` is 201 with the
  ``charge``, or an error code with ``error`` instead (``pm_error_once``: 500 ``internal``
  the first time). A new ``pm_timeout`` charge delays the whole answer once; latency counts
  once per batch. 400 ``invalid_batch`` (not a non-empty list of objects, too many, an item
  without a non-empty ``idempotency_key``, an int ``amount`` or a ``currency``) or
  ``duplicate_idempotency_key`` creates nothing.
- ``GET /card/v1/charges/{id}`` → the charge; ``GET /card/v1/charges?idempotency_key=K``
  → ``{"data": [charge]}`` (how a caller whose request timed out finds out what happened).
- ``POST /card/v1/payment_methods`` ``{card_number, exp_month, exp_year}`` → 201
  ``{id: "pm_…", brand, last4, exp_month, exp_year, fingerprint}``: the card number stays
  here; callers keep the token. ``fingerprint`` is the same for every token of one card
  number (letters only, never derivable back). 400 ``invalid_number`` (not 12 to 19 digits
  passing the Luhn check) or ``invalid_expiry`` (no month 1..12, or expired) creates none.
- ``GET /card/v1/health`` → ``{"status": "ok"}``.
- Writes need ``Authorization: Bearer <secret>`` and ``Idempotency-Key``; a repeated key
  returns the first answer.

Magic payment methods: ``pm_decline`` (declined, ``insufficient_funds``), ``pm_lost``
(declined, ``card_lost``), ``pm_review`` (pending_review), ``pm_timeout`` (the charge is
made, the answer comes after the client's timeout), ``pm_unreachable`` (the request never
arrives: no charge is made, the key stays unseen, and the caller times out without an
answer; a batch with one such item is lost whole), ``pm_error_once`` (500 the first time
a key is seen, then normal); ``pm_decline__<anything>`` (and so on) behaves as its magic
token, so each customer can save a copy of its own. A body that is not JSON is 400
``invalid_json`` (under ``/klarna``, Klarna's error shape). ``POST /sandbox/config``
``{"latency_ms": 50}`` sets a delay before every answer; ``GET /sandbox/charges`` lists
every charge (the witness).

Signed webhooks back to the app: ``POST /sandbox/config {"webhook_url": …,
"webhook_secret": …}``, then ``POST /sandbox/charges/{id}/review {"decision": "approve"}``
(or ``"reject"``) settles a ``pending_review`` charge and POSTs the outcome to the app,
signed as ``payments.webhooks`` verifies: an approved charge made with ``capture: true`` is
captured in full (``payment.captured``), as a processor captures on approval; one made
without is ``authorized`` (``payment.authorized``); a rejected one is ``declined``
(``payment.authorization_failed``).

Disputes (chargebacks), scripted the same way: ``POST /sandbox/charges/{id}/dispute
{"reason": …, "amount": …}`` opens a dispute ``dp_…`` on a captured charge (``amount``,
minor units, defaults to what is captured and not refunded, and may not exceed what is
captured) and sends ``dispute.opened``; ``POST /sandbox/disputes/{id}/close {"outcome":
"won" | "lost" | "closed"}`` closes an open one and sends ``dispute.closed``. Both
notifications carry ``data: {dispute_id, payment_id, amount, currency, reason, status}``
(``status``: ``open``, ``won``, ``lost`` or ``closed``, i.e. withdrawn); a refused script
is 404 ``not_found``, 409 ``not_disputable`` / ``not_open`` or 400 ``invalid_amount`` /
``invalid_outcome``.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import itertools
import json
import re
import secrets
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TIMEOUT_SECONDS = 3.0  # how long pm_timeout and pm_unreachable keep the caller waiting
MALFORMED = object()  # a request body that is not JSON
UNREACHABLE = "pm_unreachable"  # the magic method whose charge request never arrives
MAX_BATCH = 5000  # charges in one POST /card/v1/charges/batch


# Other providers plug in here: a module with
# ``route(state, method, path, body, headers) -> (status, json body) | None`` handling the
# paths under ``/<name>/`` (``state.extra[name]`` is its own storage, ``state.lock`` guards
# it, ``state.latency`` is already applied). ``None`` means "no such route" (404).
PROVIDER_ROUTES: dict[str, str] = {
    "klarna": "payments.sandbox.klarna",
    "afterpay": "payments.sandbox.afterpay",
    "partner": "payments.sandbox.partner",
}


def _batch_problem(items: Any) -> str | None:
    """Why a batch's ``charges`` is refused (400), or None."""
    if not isinstance(items, list) or not 0 < len(items) <= MAX_BATCH:
        return "invalid_batch"
    for item in items:
        if not (
            isinstance(item, dict)
            and isinstance(item.get("idempotency_key"), str)
            and item["idempotency_key"]
            and type(item.get("amount")) is int
            and isinstance(item.get("currency"), str)
            and item["currency"]
        ):
            return "invalid_batch"
    if len({item["idempotency_key"] for item in items}) != len(items):
        return "duplicate_idempotency_key"
    return None


_HEX_AS_LETTERS = str.maketrans("0123456789", "ghijklmnop")


def _magic(method: Any) -> str:
    """The magic payment method a token names: ``pm_decline__7`` is ``pm_decline`` (a copy
    of a magic token that one customer saves, since a token is one customer's only)."""
    return str(method or "").split("__", 1)[0]


def _luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char) * (2 if index % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def _brand(number: str) -> str:
    if number.startswith("4"):
        return "visa"
    if number[:2] in ("34", "37"):
        return "amex"
    if "51" <= number[:2] <= "55" or "2221" <= number[:4] <= "2720":
        return "mastercard"
    return "unknown"


def _method(body: Any) -> Any:
    return body.get("payment_method") if isinstance(body, dict) else None


class SandboxState:
    def __init__(self) -> None:
        self.webhook_url = ""
        self.webhook_secret = ""
        self.key_locks: dict[str, threading.Lock] = {}
        self.extra: dict[str, Any] = {}
        self.lock = threading.Lock()
        self.charges: dict[str, dict[str, Any]] = {}
        self.disputes: dict[str, dict[str, Any]] = {}
        self.by_key: dict[str, tuple[int, dict[str, Any]]] = {}
        self.seen_keys: set[str] = set()
        self.latency = 0.0
        self.ids = itertools.count(1)

    def reset(self) -> None:
        with self.lock:
            self.charges.clear()
            self.disputes.clear()
            self.by_key.clear()
            self.seen_keys.clear()
            self.latency = 0.0


class Handler(BaseHTTPRequestHandler):
    server: SandboxServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, the body waits for the
    # client's delayed ACK (~40 ms a request), which no real processor adds.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    # --- plumbing -------------------------------------------------------------------
    def _send(self, status: int, body: Any) -> None:
        """Answer with JSON; ``None`` sends no body (204 No Content)."""
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        """The request's JSON (``{}`` when it has none), or ``MALFORMED``."""
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw) if raw else {}
        except (UnicodeDecodeError, json.JSONDecodeError):
            return MALFORMED

    def _malformed(self) -> None:
        """400 for a body that is not JSON, in the shape of the provider the path names."""
        name = self.path.split("/")[1] if self.path.count("/") > 1 else ""
        module_path = PROVIDER_ROUTES.get(name)
        module = importlib.import_module(module_path) if module_path else None
        answer = getattr(module, "malformed", None)
        status, payload = answer() if answer else (400, {"error": "invalid_json"})
        self._send(status, payload)

    def _authorized(self) -> bool:
        return self.headers.get("Authorization", "").startswith("Bearer ")

    # --- routes ---------------------------------------------------------------------
    def _provider_route(self, method: str, body: dict[str, Any]) -> bool:
        """Hand ``/<provider>/…`` to that provider's module; True if it answered."""
        name = self.path.split("/")[1] if self.path.count("/") > 1 else ""
        module_path = PROVIDER_ROUTES.get(name)
        if module_path is None:
            return False
        try:
            module = importlib.import_module(module_path)
        except ModuleNotFoundError:
            return False
        answer = module.route(
            self.server.state, method, self.path[len(name) + 1 :], body, dict(self.headers)
        )
        status, payload = answer if answer is not None else (404, {"error": "not_found"})
        self._send(status, payload)
        return True

    def do_GET(self) -> None:
        state = self.server.state
        time.sleep(state.latency)
        if self._provider_route("GET", {}):
            return
        path, _, query = self.path.partition("?")
        if path == "/card/v1/health":
            return self._send(200, {"status": "ok"})
        if path == "/sandbox/charges":
            with state.lock:
                return self._send(200, {"data": list(state.charges.values())})
        if path == "/card/v1/charges" and query.startswith("idempotency_key="):
            key = query.split("=", 1)[1]
            with state.lock:
                hit = state.by_key.get(key)
                current = state.charges.get(hit[1].get("id")) if hit else None
            return self._send(200, {"data": [dict(current)] if current else []})
        match = re.fullmatch(r"/card/v1/charges/(ch_\d+)", path)
        if match:
            with state.lock:
                charge = state.charges.get(match.group(1))
            return self._send(200, charge) if charge else self._send(404, {"error": "not_found"})
        return self._send(404, {"error": "not_found"})

    def do_POST(self) -> None:
        state = self.server.state
        body = self._body()
        if body is MALFORMED:
            return self._malformed()
        if self.path == "/sandbox/config":
            state.latency = float(body.get("latency_ms", state.latency * 1000)) / 1000
            state.webhook_url = body.get("webhook_url", state.webhook_url)
            state.webhook_secret = body.get("webhook_secret", state.webhook_secret)
            return self._send(
                200, {"latency_ms": state.latency * 1000, "webhook_url": state.webhook_url}
            )
        review = re.fullmatch(r"/sandbox/charges/(ch_\d+)/review", self.path)
        if review:
            return self._review(review.group(1), body.get("decision") == "approve")
        opened = re.fullmatch(r"/sandbox/charges/(ch_\d+)/dispute", self.path)
        if opened:
            return self._dispute_open(opened.group(1), body)
        closed = re.fullmatch(r"/sandbox/disputes/(dp_\d+)/close", self.path)
        if closed:
            return self._dispute_close(closed.group(1), body)
        if self.path == "/sandbox/reset":
            state.reset()
            return self._send(200, {"reset": True})
        time.sleep(state.latency)
        if self._provider_route(self.command, body):
            return
        if not self._authorized():
            return self._send(401, {"error": "unauthorized"})
        if self.path == "/card/v1/charges/batch":
            return self._charge_batch(body)
        key = self.headers.get("Idempotency-Key")
        if not key:
            return self._send(400, {"error": "idempotency_key_required"})
        if self.path == "/card/v1/charges" and _method(body) == UNREACHABLE:
            return self._lost()
        with state.lock:
            key_lock = state.key_locks.setdefault(key, threading.Lock())
        status, answer, written = self._once(key, key_lock, body, self._write)
        if written and _magic(body.get("payment_method")) == "pm_timeout":
            time.sleep(TIMEOUT_SECONDS)
        return self._send(status, answer)

    def _once(
        self,
        key: str,
        key_lock: threading.Lock,
        body: dict[str, Any],
        write: Callable[[dict[str, Any], str], tuple[int, dict[str, Any]]],
    ) -> tuple[int, dict[str, Any], bool]:
        """Do the write of ``key`` once: ``(status, answer, written)``.

        Every keyed write goes through here, a single request or an item of a batch. One
        request per key at a time, like a real processor: a concurrent repeat waits on
        ``key_lock`` (the key's entry in ``state.key_locks``) for the first and gets its
        answer, so the charge log stays a true witness. ``state.lock`` is taken once around
        the check, the write and the store: ``write`` runs with it held and must not take
        it. ``written`` is false for a replayed answer and for ``pm_error_once``'s 500.
        """
        state = self.server.state
        with key_lock, state.lock:
            replay = state.by_key.get(key)
            if replay is not None:
                return replay[0], replay[1], False
            first_time = key not in state.seen_keys
            state.seen_keys.add(key)
            if first_time and _magic(body.get("payment_method")) == "pm_error_once":
                return 500, {"error": "internal"}, False
            status, answer = write(body, key)
            state.by_key[key] = (status, answer)
            return status, answer, True

    def _lost(self) -> None:
        """A request that never reaches the processor: nothing is made, the caller times out."""
        time.sleep(TIMEOUT_SECONDS)
        self.close_connection = True  # no answer at all, as when the request is lost

    def _charge_batch(self, body: Any) -> None:
        """``POST /card/v1/charges/batch``: each item as its own ``POST /card/v1/charges``."""
        state = self.server.state
        items = body.get("charges") if isinstance(body, dict) else None
        problem = _batch_problem(items)
        if problem:
            return self._send(400, {"error": problem})
        if any(_method(item) == UNREACHABLE for item in items):
            return self._lost()
        keys = [item["idempotency_key"] for item in items]
        with state.lock:  # once for the batch; a key's lock, once made, is never replaced
            known = state.key_locks
            key_locks = [known.get(key) or known.setdefault(key, threading.Lock()) for key in keys]
        once, create = self._once, self._create_charge
        data, delay = [], False
        for item, key, key_lock in zip(items, keys, key_locks, strict=True):
            status, answer, written = once(key, key_lock, item, create)
            if status < 400:
                data.append({"idempotency_key": key, "status_code": status, "charge": answer})
            else:
                data.append(
                    {"idempotency_key": key, "status_code": status, "error": answer.get("error")}
                )
            delay = delay or (written and _magic(item.get("payment_method")) == "pm_timeout")
        if delay:  # once for the batch, after every item is done and no lock is held
            time.sleep(TIMEOUT_SECONDS)
        return self._send(200, {"data": data})

    def _review(self, charge_id: str, approve: bool) -> None:
        state = self.server.state
        with state.lock:
            charge = state.charges.get(charge_id)
            if charge is None or charge["status"] != "pending_review":
                return self._send(409, {"error": "not_pending_review"})
            if not approve:
                charge["status"], event_type = "declined", "payment.authorization_failed"
            elif charge["capture"]:
                charge["status"], event_type = "captured", "payment.captured"
                charge["amount_captured"] = charge["amount"]
            else:
                charge["status"], event_type = "authorized", "payment.authorized"
            snapshot = dict(charge)
        status, answer = self._notify(event_type, snapshot)
        return self._send(
            200, {"charge": snapshot, "webhook_status": status, "webhook_answer": answer}
        )

    def _dispute_open(self, charge_id: str, body: dict[str, Any]) -> None:
        state = self.server.state
        with state.lock:
            charge = state.charges.get(charge_id)
            if charge is None:
                return self._send(404, {"error": "not_found"})
            if not charge["amount_captured"]:
                return self._send(409, {"error": "not_disputable", "status": charge["status"]})
            amount = body.get("amount", charge["amount_captured"] - charge["amount_refunded"])
            if type(amount) is not int or not 0 < amount <= charge["amount_captured"]:
                return self._send(400, {"error": "invalid_amount"})
            dispute = {
                "id": f"dp_{next(state.ids)}",
                "charge": charge_id,
                "amount": amount,
                "currency": charge["currency"],
                "reason": str(body.get("reason") or "general"),
                "status": "open",
            }
            state.disputes[dispute["id"]] = dispute
            snapshot = dict(dispute)
        status, answer = self._send_event("dispute.opened", self._dispute_data(snapshot))
        return self._send(
            200, {"dispute": snapshot, "webhook_status": status, "webhook_answer": answer}
        )

    def _dispute_close(self, dispute_id: str, body: dict[str, Any]) -> None:
        state = self.server.state
        outcome = body.get("outcome")
        if outcome not in ("won", "lost", "closed"):
            return self._send(400, {"error": "invalid_outcome"})
        with state.lock:
            dispute = state.disputes.get(dispute_id)
            if dispute is None:
                return self._send(404, {"error": "not_found"})
            if dispute["status"] != "open":
                return self._send(409, {"error": "not_open", "status": dispute["status"]})
            dispute["status"] = outcome
            snapshot = dict(dispute)
        status, answer = self._send_event("dispute.closed", self._dispute_data(snapshot))
        return self._send(
            200, {"dispute": snapshot, "webhook_status": status, "webhook_answer": answer}
        )

    @staticmethod
    def _dispute_data(dispute: dict[str, Any]) -> dict[str, Any]:
        return {
            "dispute_id": dispute["id"],
            "payment_id": dispute["charge"],
            "amount": dispute["amount"],
            "currency": dispute["currency"],
            "reason": dispute["reason"],
            "status": dispute["status"],
        }

    def _notify(self, event_type: str, charge: dict[str, Any]) -> tuple[int, Any]:
        """POST a signed notification about ``charge`` to the app; returns its answer."""
        return self._send_event(
            event_type,
            {
                "payment_id": charge["id"],
                "amount": charge["amount"],
                "currency": charge["currency"],
                "request_id": charge.get("idempotency_key", ""),
            },
        )

    def _send_event(self, event_type: str, data: dict[str, Any]) -> tuple[int, Any]:
        """POST a signed notification to the app; returns its answer."""
        from urllib import request as urlrequest

        from payments.webhooks import signature_header

        state = self.server.state
        if not state.webhook_url:
            return 0, "no webhook_url configured"
        body = json.dumps(
            {"id": f"evt_{next(state.ids)}", "type": event_type, "data": data}
        ).encode()
        http_request = urlrequest.Request(
            state.webhook_url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "Webhook-Signature": signature_header(state.webhook_secret, body),
            },
        )
        try:
            with urlrequest.urlopen(http_request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"null")
        except Exception as exc:  # the app being down is the app's problem, not the sandbox's
            return 0, str(exc)

    def _write(self, body: dict[str, Any], key: str) -> tuple[int, dict[str, Any]]:
        """The write a keyed request asks for; called by ``_once`` with ``state.lock`` held."""
        state = self.server.state
        if self.path == "/card/v1/payment_methods":
            return self._tokenize(body)
        if self.path == "/card/v1/charges":
            return self._create_charge(body, key)
        match = re.fullmatch(r"/card/v1/charges/(ch_\d+)/(capture|refunds|void)", self.path)
        if not match:
            return 404, {"error": "not_found"}
        charge = state.charges.get(match.group(1))
        if charge is None:
            return 404, {"error": "not_found"}
        return self._change(charge, match.group(2), int(body.get("amount", 0)))

    def _tokenize(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """A card's token; called by ``_once`` with ``state.lock`` held."""
        number = str(body.get("card_number", "")).replace(" ", "")
        if not (number.isascii() and number.isdigit() and 12 <= len(number) <= 19):
            return 400, {"error": "invalid_number"}
        if not _luhn_valid(number):
            return 400, {"error": "invalid_number"}
        month, year = body.get("exp_month"), body.get("exp_year")
        today = time.gmtime()
        if (
            type(month) is not int
            or type(year) is not int
            or not 1 <= month <= 12
            or (year, month) < (today.tm_year, today.tm_mon)
        ):
            return 400, {"error": "invalid_expiry"}
        digest = hmac.new(b"sandbox-card-fingerprint", number.encode(), hashlib.sha256)
        fingerprint = digest.hexdigest()[:24].translate(_HEX_AS_LETTERS)
        return 201, {
            # Unique across restarts too: tokens saved against an earlier run stay unique.
            "id": f"pm_{next(self.server.state.ids)}_{secrets.token_hex(4)}",
            "brand": _brand(number),
            "last4": number[-4:],
            "exp_month": month,
            "exp_year": year,
            "fingerprint": f"fp_{fingerprint}",
        }

    def _create_charge(self, body: dict[str, Any], key: str) -> tuple[int, dict[str, Any]]:
        """One charge, single or batch item; called by ``_once`` with ``state.lock`` held."""
        state = self.server.state
        amount, method = int(body["amount"]), _magic(body.get("payment_method"))
        status, decline = "authorized", None
        if method == "pm_decline":
            status, decline = "declined", "insufficient_funds"
        elif method == "pm_lost":
            status, decline = "declined", "card_lost"
        elif method == "pm_review":
            status = "pending_review"
        elif body.get("capture"):
            status = "captured"
        charge = {
            "id": f"ch_{next(state.ids)}",
            "status": status,
            "amount": amount,
            "currency": body["currency"],
            "reference": body.get("reference"),
            "amount_captured": amount if status == "captured" else 0,
            "amount_refunded": 0,
            "decline_code": decline,
            "idempotency_key": key,
            "off_session": bool(body.get("off_session")),
            "capture": bool(body.get("capture")),
        }
        state.charges[charge["id"]] = charge
        return 201, dict(charge)

    @staticmethod
    def _change(charge: dict[str, Any], action: str, amount: int) -> tuple[int, dict[str, Any]]:
        if action == "capture":
            if charge["status"] not in ("authorized", "partially_captured"):
                return 409, {"error": "not_capturable", "status": charge["status"]}
            if amount <= 0 or charge["amount_captured"] + amount > charge["amount"]:
                return 400, {"error": "amount_exceeds_authorized"}
            charge["amount_captured"] += amount
            charge["status"] = (
                "captured"
                if charge["amount_captured"] == charge["amount"]
                else "partially_captured"
            )
        elif action == "refunds":
            if amount <= 0 or charge["amount_refunded"] + amount > charge["amount_captured"]:
                return 400, {"error": "amount_exceeds_captured"}
            charge["amount_refunded"] += amount
        elif action == "void":
            if charge["status"] not in ("authorized", "partially_captured"):
                return 409, {"error": "not_voidable", "status": charge["status"]}
            charge["status"] = "voided" if not charge["amount_captured"] else "captured"
        return 200, dict(charge)

    def do_DELETE(self) -> None:
        time.sleep(self.server.state.latency)
        if not self._provider_route("DELETE", {}):
            self._send(404, {"error": "not_found"})

    def do_PATCH(self) -> None:
        time.sleep(self.server.state.latency)
        body = self._body()
        if body is MALFORMED:
            return self._malformed()
        if not self._provider_route("PATCH", body):
            self._send(404, {"error": "not_found"})


class SandboxServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many clients connecting at once (the default backlog is 5)

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, Handler)
        self.state = SandboxState()


def start_in_thread(host: str = "127.0.0.1", port: int = 0) -> SandboxServer:
    """Start a sandbox on a free port in a background thread (tests, benchmarks)."""
    server = SandboxServer((host, port))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
