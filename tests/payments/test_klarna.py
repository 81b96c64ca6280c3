"""The real Klarna adapter against the payment sandbox, over HTTP, and both against
Klarna's published Payments v1 OpenAPI description."""

from datetime import datetime

import pytest
import requests

from core.money import Money
from payments.adapters.klarna import KlarnaGateway, KlarnaNotSupported, klarna_base_url
from payments.gateway import Decision, GatewayTechnicalError
from payments.sandbox import klarna as sandbox_klarna
from payments.sandbox.klarna import SPEC_PATH, schema_errors

EUR = "EUR"
AUTH = ("PK_sandbox_user", "sandbox-password")


def eur(amount: str) -> Money:
    return Money.parse(amount, EUR)


class RecordingSession(requests.Session):
    """A real session that remembers what the adapter sent."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[dict] = []

    def request(self, method, url, **kwargs):
        self.sent.append(
            {"method": method, "url": url, "json": kwargs.get("json"), **kwargs["headers"]}
        )
        return super().request(method, url, **kwargs)


@pytest.fixture
def klarna_url(sandbox) -> str:
    return f"{sandbox}/klarna"


@pytest.fixture
def gateway(klarna_url) -> KlarnaGateway:
    return KlarnaGateway(
        base_url=klarna_url, username=AUTH[0], password=AUTH[1], session=RecordingSession()
    )


def orders(klarna_url: str) -> list[dict]:
    return requests.get(f"{klarna_url}/sandbox/orders", timeout=5).json()["data"]


def authorize(gateway: KlarnaGateway, token: str, key: str, amount: str = "100.00"):
    return gateway.authorize(
        amount=eur(amount), reference="oms.order:1", payment_method=token, idempotency_key=key
    )


# --- the order's life -----------------------------------------------------------------


def test_authorize_partial_capture_partial_refund_release_the_rest(gateway, klarna_url):
    result = authorize(gateway, "tok_ok_1", "auth-1")
    assert (result.decision, result.authorized, result.captured) == (
        Decision.APPROVED,
        eur("100.00"),
        eur("0.00"),
    )
    order_id = result.provider_reference
    assert result.raw["fraud_status"] == "ACCEPTED"

    captured = gateway.capture(
        provider_reference=order_id, amount=eur("60.00"), idempotency_key="c1"
    )
    assert (captured.decision, captured.status, captured.captured) == (
        Decision.APPROVED,
        "PART_CAPTURED",
        eur("60.00"),
    )
    refunded = gateway.refund(
        provider_reference=order_id, amount=eur("15.00"), idempotency_key="r1"
    )
    assert (refunded.decision, refunded.refunded) == (Decision.APPROVED, eur("15.00"))
    voided = gateway.void(provider_reference=order_id, idempotency_key="v1")
    assert (voided.decision, voided.status) == (Decision.APPROVED, "CAPTURED")
    assert voided.raw["remaining_authorized_amount"] == 0

    [order] = orders(klarna_url)  # Klarna's own record agrees
    assert (order["order_id"], order["order_amount"]) == (order_id, 10000)
    assert (order["captured_amount"], order["refunded_amount"]) == (6000, 1500)
    assert order["status"] == "CAPTURED"
    # Klarna's order management refuses what the order no longer allows: a decline.
    over = gateway.capture(provider_reference=order_id, amount=eur("0.01"), idempotency_key="c2")
    assert (over.decision, over.decline_code) == (Decision.DECLINED, "capture_not_allowed")
    too_much = gateway.refund(
        provider_reference=order_id, amount=eur("50.00"), idempotency_key="r2"
    )
    assert (too_much.decision, too_much.decline_code) == (Decision.DECLINED, "refund_not_allowed")


def test_void_before_any_capture_cancels_the_order(gateway, klarna_url):
    order_id = authorize(gateway, "tok_ok_2", "auth-2").provider_reference
    voided = gateway.void(provider_reference=order_id, idempotency_key="v2")
    assert (voided.decision, voided.status, voided.captured) == (
        Decision.APPROVED,
        "CANCELLED",
        eur("0.00"),
    )
    assert [o["status"] for o in orders(klarna_url)] == ["CANCELLED"]
    assert f"/ordermanagement/v1/orders/{order_id}/cancel" in gateway.http.sent[-2]["url"]


def test_a_rejected_authorization_is_declined_and_creates_no_order(gateway, klarna_url):
    result = authorize(gateway, "tok_reject", "auth-3")
    assert (result.decision, result.decline_code, result.provider_reference) == (
        Decision.DECLINED,
        "rejected",
        None,
    )
    assert result.raw["fraud_status"] == "REJECTED"
    assert orders(klarna_url) == []


def test_a_pending_order_is_held_until_klarna_decides(gateway, klarna_url):
    result = authorize(gateway, "tok_pending", "auth-4")
    assert (result.decision, result.raw["fraud_status"]) == (Decision.PENDING, "PENDING")
    order_id = result.provider_reference
    held = gateway.capture(provider_reference=order_id, amount=eur("1.00"), idempotency_key="c4")
    assert (held.decision, held.decline_code) == (Decision.DECLINED, "capture_not_allowed")
    assert gateway.sync(provider_reference=order_id).decision == Decision.PENDING

    requests.post(  # Klarna's decision (its notification follows)
        f"{klarna_url}/sandbox/orders/{order_id}/fraud-status",
        json={"fraud_status": "ACCEPTED"},
        timeout=5,
    )
    synced = gateway.sync(provider_reference=order_id)
    assert (synced.decision, synced.authorized) == (Decision.APPROVED, eur("100.00"))
    captured = gateway.capture(
        provider_reference=order_id, amount=eur("100.00"), idempotency_key="c5"
    )
    assert (captured.decision, captured.status) == (Decision.APPROVED, "CAPTURED")


def test_a_pending_order_klarna_rejects_syncs_as_declined(gateway, klarna_url):
    order_id = authorize(gateway, "tok_pending_2", "auth-5").provider_reference
    requests.post(
        f"{klarna_url}/sandbox/orders/{order_id}/fraud-status",
        json={"fraud_status": "REJECTED"},
        timeout=5,
    )
    synced = gateway.sync(provider_reference=order_id)
    assert (synced.decision, synced.status) == (Decision.DECLINED, "CANCELLED")


def test_the_authorization_expiry_is_tracked_and_can_be_extended(gateway):
    result = authorize(gateway, "tok_ok_6", "auth-6")
    expires = datetime.fromisoformat(result.raw["expires_at"])
    extended = gateway.extend_authorization(
        provider_reference=result.provider_reference, idempotency_key="ext-6"
    )
    assert extended.decision == Decision.APPROVED
    assert (datetime.fromisoformat(extended.raw["expires_at"]) - expires).days == 7

    expired = authorize(gateway, "tok_expired", "auth-7")
    assert datetime.fromisoformat(expired.raw["expires_at"]) < expires
    assert expired.status == "EXPIRED"
    late = gateway.capture(
        provider_reference=expired.provider_reference, amount=eur("1.00"), idempotency_key="c7"
    )
    assert (late.decision, late.decline_code) == (Decision.DECLINED, "capture_not_allowed")


# --- auth, idempotency, failures ------------------------------------------------------


def test_without_basic_auth_klarna_answers_401_and_the_adapter_fails_technically(klarna_url):
    answer = requests.post(f"{klarna_url}/payments/v1/sessions", json={}, timeout=5)
    assert answer.status_code == 401
    assert set(answer.json()) == {"error_code", "error_messages", "correlation_id"}
    no_credentials = KlarnaGateway(base_url=klarna_url, username="", password="")
    with pytest.raises(GatewayTechnicalError, match="401"):
        authorize(no_credentials, "tok_ok_8", "auth-8")
    assert no_credentials.health() is False
    assert orders(klarna_url) == []


def test_health_reads_a_missing_order_with_good_credentials(gateway):
    assert gateway.health() is True
    assert (
        KlarnaGateway(base_url="http://127.0.0.1:9", username="u", password="p").health() is False
    )


def test_the_same_idempotency_key_gets_the_same_order(gateway, klarna_url):
    first = authorize(gateway, "tok_ok_9", "auth-9")
    again = authorize(gateway, "tok_ok_9", "auth-9")
    assert again.provider_reference == first.provider_reference
    assert len(orders(klarna_url)) == 1
    # A new key for an authorization already used: Klarna no longer has it.
    reused = authorize(gateway, "tok_ok_9", "auth-9b")
    assert (reused.decision, reused.decline_code) == (Decision.DECLINED, "not_found")
    c1 = gateway.capture(
        provider_reference=first.provider_reference, amount=eur("10.00"), idempotency_key="c9"
    )
    c2 = gateway.capture(
        provider_reference=first.provider_reference, amount=eur("10.00"), idempotency_key="c9"
    )
    assert c1.captured == c2.captured == eur("10.00")
    assert orders(klarna_url)[0]["captured_amount"] == 1000


def test_every_write_carries_an_idempotency_key_and_basic_auth(gateway, klarna_url):
    order_id = authorize(gateway, "tok_ok_10", "auth-10").provider_reference
    gateway.capture(provider_reference=order_id, amount=eur("5.00"), idempotency_key="c10")
    gateway.release_authorization(authorization_token="tok_unused", idempotency_key="rel-10")
    writes = requests.get(f"{klarna_url}/sandbox/writes", timeout=5).json()["data"]
    assert [w["idempotency_key"] for w in writes] == ["auth-10", "c10", "rel-10"]
    assert all(s["method"] == "GET" or s["Klarna-Idempotency-Key"] for s in gateway.http.sent)


def test_a_500_is_a_technical_error_and_the_retry_with_the_same_key_places_one_order(
    gateway, klarna_url
):
    with pytest.raises(GatewayTechnicalError):
        authorize(gateway, "tok_error_once", "auth-11")
    assert authorize(gateway, "tok_error_once", "auth-11").decision == Decision.APPROVED
    assert len(orders(klarna_url)) == 1


def test_an_unknown_order_is_declined_not_found(gateway):
    for result in (
        gateway.void(provider_reference="no-such-order", idempotency_key="v-x"),
        gateway.capture(
            provider_reference="no-such-order", amount=eur("1.00"), idempotency_key="c-x"
        ),
    ):
        assert (result.decision, result.decline_code) == (Decision.DECLINED, "no_such_order")
    assert gateway.sync(provider_reference="no-such-order") is None
    assert gateway.sync(idempotency_key="auth-x").decision == Decision.UNKNOWN


def test_releasing_an_authorization_makes_it_unusable(gateway):
    assert gateway.release_authorization(authorization_token="tok_r", idempotency_key="d1")
    assert authorize(gateway, "tok_r", "auth-12").decline_code == "not_found"


def test_off_session_charges_and_saved_cards_are_not_supported(gateway):
    result = gateway.charge_off_session(
        amount=eur("1.00"), reference="x", payment_method="tok", idempotency_key="k"
    )
    assert (result.decision, result.decline_code) == (Decision.DECLINED, "not_supported")
    with pytest.raises(KlarnaNotSupported):
        gateway.save_payment_method(
            card_number="4242424242424242", exp_month=1, exp_year=2030, idempotency_key="k"
        )
    assert gateway.http.sent == []


def test_regional_base_urls():
    assert klarna_base_url("eu", "sandbox") == "https://api.playground.klarna.com"
    assert klarna_base_url("eu", "live") == "https://api.klarna.com"
    assert klarna_base_url("na", "live") == "https://api-na.klarna.com"
    assert klarna_base_url("oc", "sandbox") == "https://api-oc.playground.klarna.com"
    with pytest.raises(ValueError, match="region"):
        klarna_base_url("mars", "live")


# --- Klarna's published description ---------------------------------------------------


def test_the_spec_is_klarnas_published_payments_v1_description():
    first_line = SPEC_PATH.read_text(encoding="utf-8").splitlines()[0]
    assert first_line.startswith("# Source: the public APIs-guru/openapi-directory repository")
    document = sandbox_klarna.spec()
    assert (document["openapi"], document["info"]["title"]) == ("3.0.0", "Klarna Payments API V1")
    # the strict validators the tests use do catch an undocumented field
    assert schema_errors("order", {"order_id": "o", "surprise": 1}, strict=True)
    assert schema_errors("create_order_request", ORDER_BODY) == []
    with_read_only = {**ORDER_BODY, "authorization_token": "t"}  # Klarna's to set, not ours
    assert schema_errors("create_order_request", with_read_only) == []
    assert schema_errors("create_order_request", with_read_only, strict=True, writing=True)


def test_the_adapters_requests_validate_against_the_spec(gateway):
    session = gateway.create_session(
        amount=eur("1234.56"), reference="oms.order:7", idempotency_key="s1"
    )
    authorize(gateway, "tok_ok_13", "auth-13", amount="2000000.01")  # spans two order lines
    session_body, order_body = (s["json"] for s in gateway.http.sent if s["method"] == "POST")
    assert schema_errors("session_create", session_body, strict=True, writing=True) == []
    assert schema_errors("create_order_request", order_body, strict=True, writing=True) == []
    assert order_body["order_amount"] == 200000001  # minor units
    assert sum(line["total_amount"] for line in order_body["order_lines"]) == 200000001
    assert set(session) == {"session_id", "client_token", "payment_method_categories"}


def _post(url: str, body, key: str | None = None) -> requests.Response:
    headers = {"Klarna-Idempotency-Key": key} if key else {}
    return requests.post(url, json=body, auth=AUTH, headers=headers, timeout=5)


ORDER_BODY = {
    "purchase_country": "GB",
    "purchase_currency": "GBP",
    "locale": "en-GB",
    "order_amount": 2500,
    "order_tax_amount": 0,
    "order_lines": [
        {"name": "Running shoe", "quantity": 1, "unit_price": 2500, "total_amount": 2500}
    ],
}


def test_the_sandboxs_payments_answers_validate_against_the_spec(klarna_url):
    api = f"{klarna_url}/payments/v1"
    created = _post(f"{api}/sessions", ORDER_BODY)
    assert created.status_code == 200
    assert schema_errors("merchant_session", created.json(), strict=True) == []
    session_id = created.json()["session_id"]
    read = requests.get(f"{api}/sessions/{session_id}", auth=AUTH, timeout=5)
    assert read.status_code == 200
    assert schema_errors("session_read", read.json(), strict=True) == []
    assert _post(f"{api}/sessions/{session_id}", {"order_amount": 3000}).status_code == 204

    order = _post(f"{api}/authorizations/tok_spec/order", ORDER_BODY, key="o1")
    assert order.status_code == 200
    assert schema_errors("order", order.json(), strict=True) == []
    token = _post(
        f"{api}/authorizations/tok_spec_2/customer-token",
        {
            "description": "Subscription",
            "intended_use": "SUBSCRIPTION",
            "locale": "en-GB",
            "purchase_country": "GB",
            "purchase_currency": "GBP",
        },
    )
    assert token.status_code == 200
    assert schema_errors("customer_token_creation_response", token.json(), strict=True) == []
    released = requests.delete(f"{api}/authorizations/tok_spec_3", auth=AUTH, timeout=5)
    assert (released.status_code, released.content) == (204, b"")
    rejected = _post(f"{api}/authorizations/tok_reject/order", ORDER_BODY)
    assert rejected.status_code == 403
    assert schema_errors("ErrorV2", rejected.json(), strict=True) == []


@pytest.mark.parametrize(
    ("path", "change"),
    [
        ("sessions", {"order_lines": []}),
        ("sessions", {"purchase_country": "GBR"}),
        ("authorizations/tok_x/order", {"order_amount": -1}),
        ("authorizations/tok_x/order", {"order_amount": "25.00"}),
        ("authorizations/tok_x/order", {"order_lines": [{"name": "no price", "quantity": 1}]}),
        ("authorizations/tok_x/order", {"purchase_currency": None}),
    ],
)
def test_an_invalid_payments_request_is_answered_400(klarna_url, path, change):
    body = {k: v for k, v in {**ORDER_BODY, **change}.items() if v is not None}
    answer = _post(f"{klarna_url}/payments/v1/{path}", body)
    assert answer.status_code == 400
    assert answer.json()["error_code"] == "BAD_VALUE"
    assert schema_errors("ErrorV2", answer.json(), strict=True) == []
    assert orders(klarna_url) == []


@pytest.mark.parametrize("path", ["sessions", "sessions/{session}", "authorizations/tok_x/order"])
def test_a_body_that_is_not_json_is_answered_400_in_klarnas_error_shape(klarna_url, path):
    session = _post(f"{klarna_url}/payments/v1/sessions", ORDER_BODY).json()["session_id"]
    answer = requests.post(
        f"{klarna_url}/payments/v1/{path.format(session=session)}",
        data=b'{"order_amount": 25',
        headers={"Content-Type": "application/json"},
        auth=AUTH,
        timeout=5,
    )
    assert answer.status_code == 400
    assert answer.json()["error_code"] == "BAD_REQUEST"
    assert schema_errors("ErrorV2", answer.json(), strict=True) == []
    assert orders(klarna_url) == []


@pytest.mark.parametrize("path", ["sessions", "sessions/{session}"])
def test_a_session_write_without_a_body_is_answered_400(klarna_url, path):
    session = _post(f"{klarna_url}/payments/v1/sessions", ORDER_BODY).json()["session_id"]
    url = f"{klarna_url}/payments/v1/{path.format(session=session)}"
    answer = requests.post(url, auth=AUTH, timeout=5)
    assert answer.status_code == 400
    assert answer.json()["error_code"] == "BAD_REQUEST"
    assert schema_errors("ErrorV2", answer.json(), strict=True) == []
    read = requests.get(f"{klarna_url}/payments/v1/sessions/{session}", auth=AUTH, timeout=5)
    assert read.json()["order_amount"] == ORDER_BODY["order_amount"]


def test_the_body_klarna_requires_is_the_descriptions_required_request_body():
    operations = {
        "createCreditSession": "create_session",
        "updateCreditSession": "update_session",
        "createOrder": "create_order",
        "purchaseToken": "create_customer_token",
    }
    required = {
        operations[operation["operationId"]]
        for path in sandbox_klarna.spec()["paths"].values()
        for operation in path.values()
        if (operation.get("requestBody") or {}).get("required")
    }
    assert required == sandbox_klarna.BODY_REQUIRED


def test_a_card_request_body_that_is_not_json_is_answered_400(sandbox):
    answer = requests.post(
        f"{sandbox}/card/v1/charges",
        data=b"{not json",
        headers={"Authorization": "Bearer sk", "Idempotency-Key": "k"},
        timeout=5,
    )
    assert (answer.status_code, answer.json()) == (400, {"error": "invalid_json"})


def test_the_same_key_on_another_request_is_a_conflict(klarna_url):
    api = f"{klarna_url}/payments/v1"
    assert _post(f"{api}/authorizations/tok_a/order", ORDER_BODY, key="k").status_code == 200
    assert _post(f"{api}/authorizations/tok_b/order", ORDER_BODY, key="k").status_code == 409


@pytest.mark.django_db
def test_a_timed_out_klarna_authorization_is_reconciled_by_replaying_the_same_key(
    sandbox, klarna_account
):
    from payments.processing import payment_authorize, payment_reconcile
    from payments.selectors import payment_amounts

    account = klarna_account
    txn, result = payment_authorize(
        account=account,
        reference_type="oms.order",
        reference_id="77",
        amount=Money(5000, "EUR"),
        payment_method="tok_timeout_77",
        idempotency_key="auth-77",
    )
    assert result.decision == Decision.UNKNOWN
    assert payment_reconcile(transaction_id=txn.pk) == 1
    assert payment_amounts(txn).authorized == Money(5000, "EUR")
    txn.refresh_from_db()
    assert txn.provider_reference
    orders = requests.get(f"{sandbox}/klarna/sandbox/orders", timeout=5).json()["data"]
    assert len(orders) == 1  # the replay found the first order; nothing was placed twice


@pytest.mark.django_db
def test_unsigned_klarna_notifications_are_confirmed_by_reading_the_order_back(
    sandbox, eager_celery, django_capture_on_commit_callbacks, klarna_account
):
    from django.test import Client

    from payments.models import WebhookEvent
    from payments.processing import payment_authorize
    from payments.selectors import payment_amounts

    account = klarna_account
    txn, result = payment_authorize(
        account=account,
        reference_type="oms.order",
        reference_id="88",
        amount=Money(4000, "EUR"),
        payment_method="tok_pending_88",
        idempotency_key="auth-88",
    )
    assert result.decision == Decision.PENDING
    txn.refresh_from_db()
    order_id = txn.provider_reference
    client = Client()

    def notify(event_type: str):
        with django_capture_on_commit_callbacks(execute=True):
            return client.post(
                "/webhooks/klarna/",
                {"order_id": order_id, "event_type": event_type},
                content_type="application/json",
            )

    # Forged notifications while Klarna still says PENDING change nothing, and do not
    # use up the id the real notification will come with.
    assert notify("FRAUD_RISK_REJECTED").status_code == 200
    assert notify("FRAUD_RISK_ACCEPTED").status_code == 200
    assert payment_amounts(txn).authorized.minor == 0
    assert not txn.events.filter(outcome="failed").exists()
    assert set(WebhookEvent.objects.values_list("status", flat=True)) == {"pending"}
    # Klarna accepts; its notification is confirmed by reading the order back.
    requests.post(
        f"{sandbox}/klarna/sandbox/orders/{order_id}/fraud-status",
        json={"fraud_status": "ACCEPTED"},
        timeout=5,
    )
    assert notify("FRAUD_RISK_ACCEPTED").status_code == 200
    assert payment_amounts(txn).authorized == Money(4000, "EUR")
    assert notify("FRAUD_RISK_ACCEPTED").json()["duplicate"] is True
    assert WebhookEvent.objects.get(event_id__endswith="ACCEPTED").status == "processed"
    assert WebhookEvent.objects.get(event_id__endswith="REJECTED").status == "pending"
    too_long = client.post(
        "/webhooks/klarna/",
        {"order_id": "x" * 65, "event_type": "A"},
        content_type="application/json",
    )
    assert too_long.status_code == 400
    bad = client.post("/webhooks/klarna/", {"event_type": "X"}, content_type="application/json")
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "webhooks.malformed_event")
