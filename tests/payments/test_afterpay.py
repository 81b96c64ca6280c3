"""The real Afterpay adapter against the payment sandbox, over HTTP."""

from datetime import datetime, timedelta

import pytest
import requests

from core.money import Money
from payments.adapters.afterpay import AfterpayGateway, AfterpayOperationNotSupported
from payments.gateway import Decision, GatewayTechnicalError
from payments.reliability import with_retries
from payments.sandbox import afterpay as sandbox_afterpay


def eur(amount: str) -> Money:
    return Money.parse(amount, "EUR")


class RecordingSession(requests.Session):
    """A real session that keeps what went on the wire."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, str, dict | None]] = []

    def request(self, method, url, *args, **kwargs):
        self.sent.append((method, url, kwargs.get("json")))
        return super().request(method, url, *args, **kwargs)

    def bodies(self, path_end: str) -> list[dict]:
        return [body for _, url, body in self.sent if url.endswith(path_end)]


@pytest.fixture
def wire():
    return RecordingSession()


@pytest.fixture
def gateway(sandbox, wire):
    return AfterpayGateway(
        base_url=f"{sandbox}/afterpay",
        merchant_id="merchant-1",
        secret_key="sk_afterpay_sandbox",
        session=wire,
    )


def payments(sandbox) -> list[dict]:
    return requests.get(f"{sandbox}/afterpay/sandbox/payments", timeout=5).json()["data"]


def checkout(gateway, amount: Money, reference: str = "oms.order:1") -> str:
    body = gateway.create_checkout(
        amount=amount,
        reference=reference,
        confirm_url="https://shop.example/afterpay/confirm",
        cancel_url="https://shop.example/afterpay/cancel",
    )
    assert body["redirectCheckoutUrl"].endswith(body["token"])
    return body["token"]


def test_configuration_gives_the_order_limits_and_health(gateway, sandbox):
    assert gateway.order_limits() == (eur("1.00"), eur("2000.00"))
    requests.post(
        f"{sandbox}/afterpay/sandbox/config",
        json={"minimumAmount": "35.00", "maximumAmount": "1500.00"},
        timeout=5,
    )
    assert gateway.order_limits() == (eur("35.00"), eur("1500.00"))
    assert gateway.health() is True


def test_wrong_or_missing_credentials_are_refused(sandbox):
    response = requests.get(f"{sandbox}/afterpay/v2/configuration", timeout=5)
    assert response.status_code == 401
    assert set(response.json()) == {"errorCode", "errorId", "message", "httpStatusCode"}
    unreachable = AfterpayGateway(
        base_url="http://127.0.0.1:9/afterpay", merchant_id="m", secret_key="s"
    )
    assert unreachable.health() is False


def test_checkout_auth_partial_capture_partial_refund_void_the_rest(gateway, sandbox):
    token = checkout(gateway, eur("100.00"))
    auth = gateway.authorize(
        amount=eur("100.00"), reference="oms.order:1", payment_method=token, idempotency_key="a-1"
    )
    assert (auth.decision, auth.status, auth.authorized) == (
        Decision.APPROVED,
        "AUTH_APPROVED",
        eur("100.00"),
    )
    expires = datetime.fromisoformat(auth.raw["expires"])
    created = datetime.fromisoformat(auth.raw["created"])
    assert expires - created == timedelta(days=13)  # the auth's life, tracked
    order_id = auth.provider_reference

    captured = gateway.capture(
        provider_reference=order_id, amount=eur("60.00"), idempotency_key="c-1"
    )
    assert (captured.decision, captured.status, captured.captured) == (
        Decision.APPROVED,
        "PARTIALLY_CAPTURED",
        eur("60.00"),
    )
    refund = gateway.refund(provider_reference=order_id, amount=eur("15.00"), idempotency_key="r-1")
    assert refund.decision == Decision.APPROVED
    assert refund.raw["refundId"]
    voided = gateway.void(provider_reference=order_id, idempotency_key="v-1")
    assert (voided.decision, voided.status) == (Decision.APPROVED, "CAPTURED")

    synced = gateway.sync(provider_reference=order_id)
    assert (synced.authorized, synced.captured, synced.refunded) == (
        eur("100.00"),
        eur("60.00"),
        eur("15.00"),
    )
    assert gateway.sync(provider_reference=f"token:{token}").provider_reference == order_id
    [payment] = payments(sandbox)  # the provider's own record agrees
    assert payment["openToCaptureAmount"] == {"amount": "0.00", "currency": "EUR"}
    assert [e["type"] for e in payment["events"]] == ["AUTH_APPROVED", "CAPTURED", "VOIDED"]
    assert payment["events"][2]["amount"]["amount"] == "40.00"
    assert [r["amount"]["amount"] for r in payment["refunds"]] == ["15.00"]

    late = gateway.capture(provider_reference=order_id, amount=eur("0.01"), idempotency_key="c-2")
    assert (late.decision, late.decline_code) == (Decision.DECLINED, "payment_captured")
    too_much = gateway.refund(
        provider_reference=order_id, amount=eur("45.01"), idempotency_key="r-2"
    )
    assert (too_much.decision, too_much.decline_code) == (Decision.DECLINED, "invalid_amount")


def test_amounts_travel_as_decimal_strings(gateway, wire):
    token = checkout(gateway, eur("12.30"))
    auth = gateway.authorize(
        amount=eur("12.30"), reference="oms.order:7", payment_method=token, idempotency_key="a-7"
    )
    gateway.capture(
        provider_reference=auth.provider_reference, amount=eur("2.05"), idempotency_key="c-7"
    )
    [checkout_body] = wire.bodies("/v2/checkouts")
    [auth_body] = wire.bodies("/v2/payments/auth")
    [capture_body] = wire.bodies("/capture")
    assert checkout_body["amount"] == {"amount": "12.30", "currency": "EUR"}
    assert auth_body == {
        "requestId": "a-7",
        "token": token,
        "merchantReference": "oms.order:7",
        "amount": {"amount": "12.30", "currency": "EUR"},
    }
    assert capture_body == {"requestId": "c-7", "amount": {"amount": "2.05", "currency": "EUR"}}


def test_a_decline_is_an_answer(gateway, sandbox):
    result = gateway.authorize(
        amount=eur("50.00"),
        reference="oms.order:2",
        payment_method="tok_decline",
        idempotency_key="a-2",
    )
    assert (result.decision, result.status, result.decline_code) == (
        Decision.DECLINED,
        "AUTH_DECLINED",
        "auth_declined",
    )
    assert result.authorized == eur("0.00")
    unknown = gateway.authorize(
        amount=eur("50.00"),
        reference="oms.order:2",
        payment_method="tok_nope",
        idempotency_key="a-3",
    )
    assert (unknown.decision, unknown.decline_code) == (Decision.DECLINED, "invalid_token")
    [payment] = payments(sandbox)
    assert payment["paymentState"] == "AUTH_DECLINED"


def test_a_capture_repeated_with_its_request_id_captures_once(gateway, sandbox, wire):
    token = checkout(gateway, eur("80.00"))
    order_id = gateway.authorize(
        amount=eur("80.00"), reference="oms.order:3", payment_method=token, idempotency_key="a-3"
    ).provider_reference
    first = gateway.capture(provider_reference=order_id, amount=eur("30.00"), idempotency_key="c-3")
    again = gateway.capture(provider_reference=order_id, amount=eur("30.00"), idempotency_key="c-3")
    assert len(wire.bodies("/capture")) == 2  # both went out
    assert first.raw == again.raw
    [payment] = payments(sandbox)
    assert [e["type"] for e in payment["events"]].count("CAPTURED") == 1
    assert payment["openToCaptureAmount"]["amount"] == "50.00"


def test_an_auth_without_an_answer_is_reversed_and_so_declined(gateway, sandbox, wire):
    token = checkout(gateway, eur(sandbox_afterpay.SLOW_AMOUNT))
    result = gateway.authorize(
        amount=eur(sandbox_afterpay.SLOW_AMOUNT),
        reference="oms.order:4",
        payment_method=token,
        idempotency_key="a-4",
    )
    assert (result.decision, result.decline_code) == (Decision.DECLINED, "timeout_reversed")
    assert result.raw["reversed"] is True
    assert wire.bodies(f"/v2/payments/token:{token}/reversal") == [None]
    [payment] = payments(sandbox)  # the auth was made, then reversed: nothing is held
    assert (payment["reversed"], payment["paymentState"]) == (True, "VOIDED")
    assert payment["openToCaptureAmount"]["amount"] == "0.00"
    # Asking by request id alone cannot be answered by Afterpay: no guess is recorded.
    assert gateway.sync(idempotency_key="a-4").decision == Decision.UNKNOWN
    assert gateway.sync(provider_reference=f"token:{token}").status == "VOIDED"
    nothing = gateway.capture(
        provider_reference=payment["id"], amount=eur("1.00"), idempotency_key="c-4"
    )
    assert (nothing.decision, nothing.decline_code) == (Decision.DECLINED, "payment_voided")


def test_a_500_is_retried_with_the_same_request_id_and_authorizes_once(gateway, sandbox, wire):
    result = with_retries(
        lambda: gateway.authorize(
            amount=eur("20.00"),
            reference="oms.order:5",
            payment_method="tok_error_once",
            idempotency_key="a-5",
        ),
        sleep=lambda _: None,
    )
    assert result.decision == Decision.APPROVED
    assert [b["requestId"] for b in wire.bodies("/v2/payments/auth")] == ["a-5", "a-5"]
    assert len(payments(sandbox)) == 1


def test_a_500_that_persists_is_a_technical_error(gateway, sandbox):
    with pytest.raises(GatewayTechnicalError):
        gateway.authorize(
            amount=eur("20.00"),
            reference="oms.order:6",
            payment_method="tok_error_once",
            idempotency_key="a-6",
        )
    assert payments(sandbox) == []


def test_off_session_charges_and_saved_cards_are_not_offered(gateway):
    result = gateway.charge_off_session(
        amount=eur("5.00"), reference="oms.order:8", payment_method="tok", idempotency_key="x-1"
    )
    assert (result.decision, result.decline_code) == (Decision.DECLINED, "not_supported")
    with pytest.raises(AfterpayOperationNotSupported):
        gateway.save_payment_method(
            card_number="4242424242424242", exp_month=1, exp_year=2030, idempotency_key="x-2"
        )
