"""Klarna and Afterpay: the order waits on hold while the provider decides.

Klarna's fraud review (``PENDING``) is decided in the sandbox and notified to the app the way
Klarna does it (an unsigned push naming the order, read back from Klarna). Real commits,
tasks run at once.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import requests
from celery import current_app
from django.test import Client

from core import clock
from core.money import Money
from ledger.models import Account, Purpose
from oms import signals as oms_signals
from oms.models import Order, OrderStatus, ReservationStatus, StockItem, StockReservation
from oms.services import order_fulfil
from oms.tasks import expire_provider_holds
from payments import crypto
from payments.models import PaymentTransaction, Provider, ProviderAccount
from payments.processing import gateway_for
from payments.selectors import payment_amounts
from tests.factories import line

pytestmark = pytest.mark.django_db(transaction=True)

MERCHANT = f"{Purpose.MERCHANT}:EUR"
PROVIDER = f"{Purpose.PROVIDER_CLEARING}:EUR"


def balance(code: str) -> int:
    account = Account.objects.filter(code=code).first()
    return account.balance if account else 0


@pytest.fixture(autouse=True)
def eager():
    previous = current_app.conf.task_always_eager
    current_app.conf.task_always_eager = True
    yield
    current_app.conf.task_always_eager = previous


def provider_account(provider: str, base_url: str) -> ProviderAccount:
    now = clock.now()
    return ProviderAccount.objects.create(
        provider=provider,
        enabled=True,
        base_url=base_url,
        credentials_encrypted=crypto.encrypt({"id": "merchant-1", "secret": "pw"}),
        created_at=now,
        updated_at=now,
    )


@pytest.fixture
def klarna(sandbox):
    return provider_account(Provider.KLARNA, f"{sandbox}/klarna")


@pytest.fixture
def afterpay(sandbox):
    return provider_account(Provider.AFTERPAY, f"{sandbox}/afterpay")


@pytest.fixture
def seen():
    got: list[tuple] = []

    def released(sender, order, **kw):
        got.append(("released", order.pk))

    def cancelled(sender, order, reason, **kw):
        got.append(("cancelled", order.pk, reason))

    oms_signals.order_hold_released.connect(released, weak=False)
    oms_signals.order_cancelled.connect(cancelled, weak=False)
    yield got
    oms_signals.order_hold_released.disconnect(released)
    oms_signals.order_cancelled.disconnect(cancelled)


def pay(client, method: str, token: str, price: str = "120.00"):
    return client.post(
        "/api/v1/orders",
        {"payment_method": method, "authorization_token": token, "lines": [line("A", 1, price)]},
        format="json",
    )


def klarna_order_id(order_id: int) -> str:
    return PaymentTransaction.objects.get(
        reference_type="oms.order", reference_id=str(order_id)
    ).provider_reference


def klarna_decides(sandbox: str, klarna_order: str, fraud_status: str) -> None:
    """Klarna decides its review, then pushes its notification to the app."""
    decided = requests.post(
        f"{sandbox}/klarna/sandbox/orders/{klarna_order}/fraud-status",
        json={"fraud_status": fraud_status},
        timeout=5,
    )
    assert decided.status_code == 200, decided.json()
    pushed = Client().post(
        "/webhooks/klarna/",
        {"order_id": klarna_order, "event_type": f"FRAUD_RISK_{fraud_status}"},
        content_type="application/json",
    )
    assert pushed.status_code == 200, pushed.json()


def reservation_states(order_id: int) -> list[str]:
    return list(StockReservation.objects.filter(order_id=order_id).values_list("status", flat=True))


def test_klarna_pending_review_holds_the_order_until_accepted_then_captures_at_fulfilment(
    customer, customer_api, stock, klarna, sandbox, seen
):
    stock("A", 10)
    merchant_before = balance(MERCHANT)
    response = pay(customer_api, "klarna", "tok_pending_1")
    assert response.status_code == 201, response.json()
    order_id = response.json()["id"]
    assert (response.json()["status"], response.json()["credit_decision"]) == ("on_hold", None)
    assert reservation_states(order_id) == [ReservationStatus.ACTIVE]
    txn = PaymentTransaction.objects.get(reference_type="oms.order", reference_id=str(order_id))
    assert payment_amounts(txn).authorized.minor == 0  # Klarna has not decided
    assert balance(MERCHANT) == merchant_before
    assert seen == []
    assert customer_api.get(f"/api/v1/orders/{order_id}").json()["status"] == "on_hold"

    klarna_decides(sandbox, klarna_order_id(order_id), "ACCEPTED")
    order = Order.objects.get(pk=order_id)
    assert order.status == OrderStatus.CONFIRMED
    assert payment_amounts(txn).authorized.minor == 12_000
    assert payment_amounts(txn).captured.minor == 0  # captured when the goods ship
    assert balance(MERCHANT) == merchant_before
    assert seen == [("released", order_id)]
    assert customer_api.get(f"/api/v1/orders/{order_id}").json()["status"] == "confirmed"

    order_fulfil(order_id=order_id)
    assert Order.objects.get(pk=order_id).status == OrderStatus.FULFILLED
    assert payment_amounts(txn).captured.minor == 12_000
    assert balance(MERCHANT) - merchant_before == 12_000
    assert balance(PROVIDER) == 12_000  # Klarna owes the merchant until it pays out
    assert reservation_states(order_id) == [ReservationStatus.CONSUMED]
    [klarna_order] = requests.get(f"{sandbox}/klarna/sandbox/orders", timeout=5).json()["data"]
    assert (klarna_order["status"], klarna_order["captured_amount"]) == ("CAPTURED", 12_000)


def test_klarna_pending_review_rejected_cancels_the_order_and_releases_the_stock(
    customer, customer_api, stock, klarna, sandbox, seen
):
    stock("A", 10)
    order_id = pay(customer_api, "klarna", "tok_pending_2").json()["id"]
    klarna_decides(sandbox, klarna_order_id(order_id), "REJECTED")
    order = Order.objects.get(pk=order_id)
    assert order.status == OrderStatus.CANCELLED
    assert order.cancel_reason == "Klarna declined the payment (cancelled)"
    assert reservation_states(order_id) == [ReservationStatus.RELEASED]
    assert StockItem.objects.get(sku="A").reserved == 0
    assert seen == [("cancelled", order_id, order.cancel_reason)]
    polled = customer_api.get(f"/api/v1/orders/{order_id}").json()
    assert (polled["status"], polled["cancel_reason"]) == ("cancelled", order.cancel_reason)

    # The same notification again changes nothing.
    Client().post(
        "/webhooks/klarna/",
        {"order_id": klarna_order_id(order_id), "event_type": "FRAUD_RISK_REJECTED"},
        content_type="application/json",
    )
    assert len(seen) == 1


def test_klarna_accepting_at_once_confirms_and_a_cancellation_voids(
    customer, customer_api, stock, klarna, sandbox, seen
):
    stock("A", 10)
    body = pay(customer_api, "klarna", "tok_ok_3").json()
    assert body["status"] == "confirmed"
    cancelled = customer_api.post(f"/api/v1/orders/{body['id']}/cancel", {}, format="json")
    assert cancelled.json()["status"] == "cancelled"
    [klarna_order] = requests.get(f"{sandbox}/klarna/sandbox/orders", timeout=5).json()["data"]
    assert klarna_order["status"] == "CANCELLED"
    assert StockItem.objects.get(sku="A").reserved == 0
    assert seen == [("released", body["id"]), ("cancelled", body["id"], "Cancelled by customer")]


def test_klarna_refusing_at_once_cancels_the_order_with_the_reason(
    customer, customer_api, stock, klarna, seen
):
    stock("A", 10)
    body = pay(customer_api, "klarna", "tok_reject").json()
    assert body["status"] == "cancelled"
    assert body["cancel_reason"] == "Klarna declined the payment (rejected)"
    assert StockItem.objects.get(sku="A").reserved == 0


def test_afterpay_authorizes_at_checkout_and_captures_at_fulfilment(
    customer, customer_api, stock, afterpay, sandbox, seen
):
    stock("A", 10)
    token = gateway_for(afterpay).create_checkout(
        amount=Money.parse("120.00", "EUR"),
        reference="cart:1",
        confirm_url="https://shop.example/confirm",
        cancel_url="https://shop.example/cancel",
    )["token"]
    body = pay(customer_api, "afterpay", token).json()
    assert body["status"] == "confirmed"
    order_fulfil(order_id=body["id"])
    txn = PaymentTransaction.objects.get(reference_type="oms.order", reference_id=str(body["id"]))
    assert payment_amounts(txn).captured.minor == 12_000
    declined = pay(customer_api, "afterpay", "tok_decline").json()
    assert declined["status"] == "cancelled"
    assert declined["cancel_reason"].startswith("Afterpay / Clearpay declined the payment")


@pytest.mark.parametrize("method", ["klarna", "afterpay"])
def test_a_provider_checkout_needs_an_authorization_token_and_an_enabled_account(
    customer_api, stock, unchanged_db, method
):
    stock("A", 10)
    check = unchanged_db()
    missing = customer_api.post(
        "/api/v1/orders",
        {"payment_method": method, "lines": [line("A", 1, "10.00")]},
        format="json",
    )
    assert missing.status_code == 400
    assert "authorization_token" in missing.json()["error"]["fields"]
    unavailable = pay(customer_api, method, "tok_ok")
    assert (unavailable.status_code, unavailable.json()["error"]["code"]) == (
        422,
        "payments.provider_unavailable",
    )
    check()


def test_a_review_klarna_never_decides_is_cancelled_after_the_timeout_and_a_late_yes_voided(
    customer, customer_api, stock, klarna, sandbox, seen
):
    stock("A", 10)
    order_id = pay(customer_api, "klarna", "tok_pending_9").json()["id"]
    assert expire_provider_holds() == 0
    with clock.travel(timedelta(hours=24, minutes=1)):
        assert expire_provider_holds() == 1
        assert expire_provider_holds() == 0
    order = Order.objects.get(pk=order_id)
    assert (order.status, order.cancel_reason) == (
        OrderStatus.CANCELLED,
        "No decision from Klarna in time",
    )
    assert reservation_states(order_id) == [ReservationStatus.RELEASED]

    klarna_decides(sandbox, klarna_order_id(order_id), "ACCEPTED")  # too late
    assert Order.objects.get(pk=order_id).status == OrderStatus.CANCELLED
    [klarna_order] = requests.get(f"{sandbox}/klarna/sandbox/orders", timeout=5).json()["data"]
    assert klarna_order["status"] == "CANCELLED"  # the late authorization was voided
    assert seen == [("cancelled", order_id, "No decision from Klarna in time")]
