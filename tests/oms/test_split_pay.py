"""Split payment: the wallet balance first, the rest authorized on a card (over HTTP)."""

import pytest
import requests

from ledger.models import Account, Purpose
from oms.models import Order, OrderStatus, StockItem
from oms.services import order_fulfil
from payments.selectors import payment_amounts, transaction_for
from tests.factories import line, money

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("customer_cards")]


def split(client, price: str, card: str = "pm_card"):
    return client.post(
        "/api/v1/orders",
        {
            "payment_method": "wallet_card",
            "card_payment_method": card,
            "lines": [line("A", 1, price)],
        },
        format="json",
    )


def wallet_balance(customer) -> int:
    return Account.objects.get(customer=customer, purpose=Purpose.CUSTOMER_WALLET).balance


def charges(sandbox) -> list[dict]:
    return requests.get(f"{sandbox}/sandbox/charges", timeout=5).json()["data"]


def test_wallet_first_then_the_card_and_the_card_is_captured_at_fulfilment(
    customer, customer_api, stock, card_processor, sandbox
):
    stock("A", 10)
    response = split(customer_api, "650.00")  # 500.00 in the wallet, 150.00 on the card
    assert response.status_code == 201, response.json()
    order = Order.objects.get(pk=response.json()["id"])
    assert order.status == OrderStatus.CONFIRMED
    assert wallet_balance(customer) == 0
    txn = transaction_for(reference_type="oms.order", reference_id=str(order.pk), provider="card")
    assert payment_amounts(txn).authorized.minor == 15000
    [charge] = charges(sandbox)
    assert (charge["amount"], charge["status"]) == (15000, "authorized")
    order_fulfil(order_id=order.pk)
    assert Order.objects.get(pk=order.pk).status == OrderStatus.FULFILLED
    assert payment_amounts(txn).captured.minor == 15000
    assert charges(sandbox)[0]["amount_captured"] == 15000


def test_a_declined_card_cancels_the_order_and_gives_the_wallet_part_back(
    customer, customer_api, stock, card_processor, sandbox
):
    item = stock("A", 10)
    response = split(customer_api, "650.00", card="pm_decline")
    assert response.status_code == 422
    error = response.json()["error"]
    assert (error["code"], error["decline_code"]) == (
        "payments.card_declined",
        "insufficient_funds",
    )
    order = Order.objects.get(pk=error["order_id"])
    assert order.status == OrderStatus.CANCELLED
    assert "insufficient_funds" in order.cancel_reason
    assert wallet_balance(customer) == 50000  # nothing half-paid
    item.refresh_from_db()
    assert item.reserved == 0


def test_without_a_card_processor_nothing_is_written(customer_api, stock, unchanged_db):
    stock("A", 10)
    check = unchanged_db()
    response = split(customer_api, "650.00")
    assert (response.status_code, response.json()["error"]["code"]) == (
        422,
        "payments.provider_unavailable",
    )
    check()


def test_a_card_token_is_required_with_wallet_card(customer_api, stock, unchanged_db):
    stock("A", 10)
    check = unchanged_db()
    response = customer_api.post(
        "/api/v1/orders",
        {"payment_method": "wallet_card", "lines": [line("A", 1, "1.00")]},
        format="json",
    )
    assert response.status_code == 400
    assert "card_payment_method" in response.json()["error"]["fields"]
    check()


def test_a_wallet_that_covers_it_all_needs_no_card_call(
    customer, customer_api, stock, card_processor, sandbox
):
    stock("A", 10)
    response = split(customer_api, "20.00")
    assert response.json()["status"] == "confirmed"
    assert wallet_balance(customer) == 48000
    assert charges(sandbox) == []
    assert StockItem.objects.get(sku="A").reserved == 1
    assert response.json()["total"] == money("20.00")


def test_cancelling_a_confirmed_split_order_returns_the_wallet_part_and_voids_the_card(
    customer, customer_api, stock, card_processor, sandbox
):
    stock("A", 10)
    order_id = split(customer_api, "650.00").json()["id"]
    response = customer_api.post(f"/api/v1/orders/{order_id}/cancel", {}, format="json")
    assert response.status_code == 200
    assert wallet_balance(customer) == 50000
    [charge] = charges(sandbox)
    assert charge["status"] == "voided"
    txn = transaction_for(reference_type="oms.order", reference_id=str(order_id), provider="card")
    assert payment_amounts(txn).capturable.minor == 0


@pytest.mark.parametrize(
    ("outcome", "status", "wallet_after"),
    [("succeeded", OrderStatus.CONFIRMED, 0), ("failed", OrderStatus.CANCELLED, 50000)],
)
def test_a_pending_card_settles_the_order_when_its_outcome_is_recorded(
    customer,
    customer_api,
    stock,
    card_processor,
    django_capture_on_commit_callbacks,
    outcome,
    status,
    wallet_after,
):
    from core.money import Money
    from payments.models import EventKind, Outcome, Source
    from payments.services import payment_event_record

    stock("A", 10)
    first = split(customer_api, "650.00", card="pm_review")
    assert (first.status_code, first.json()["status"]) == (201, "new")
    order_id = first.json()["id"]
    txn = transaction_for(reference_type="oms.order", reference_id=str(order_id), provider="card")
    with django_capture_on_commit_callbacks(execute=True):  # as the webhook would
        payment_event_record(
            transaction_id=txn.pk,
            kind=EventKind.AUTHORIZATION,
            outcome=Outcome(outcome),
            amount=Money(15000, "EUR"),
            idempotency_key=f"order:{order_id}:card:result",
            source=Source.WEBHOOK,
        )
    assert Order.objects.get(pk=order_id).status == status
    assert wallet_balance(customer) == wallet_after


def test_an_open_circuit_cancels_the_order_and_returns_the_wallet_part(
    customer, customer_api, stock, card_processor
):
    from payments import reliability

    stock("A", 10)
    breaker = reliability.breaker_for("card")
    for _ in range(breaker.failure_threshold):  # as after repeated failures
        breaker._after(ok=False)
    response = split(customer_api, "650.00")
    assert (response.status_code, response.json()["error"]["code"]) == (
        422,
        "payments.provider_unavailable",
    )
    order = Order.objects.get(pk=response.json()["error"]["order_id"])
    assert order.status == OrderStatus.CANCELLED
    assert wallet_balance(customer) == 50000


def test_the_sweep_settles_an_order_a_crash_left_behind(
    customer, stock, card_processor, web_channel
):
    from datetime import timedelta

    from core import clock
    from core.money import Money
    from oms.services import LineInput, _split_begin, split_orders_settle

    stock("A", 10)
    order, _ = _split_begin(
        customer=customer,
        channel=web_channel,
        lines=[LineInput("A", "A", 1, Money(65000, "EUR"), Money.zero("EUR"))],
        total=Money(65000, "EUR"),
        card_payment_method="pm_card_visa",
        external_reference=None,
        renewal_of=None,
        actor=None,
    )  # then the process died
    assert wallet_balance(customer) == 0
    assert split_orders_settle() == 0  # too recent to judge
    with clock.travel(timedelta(minutes=20)):
        assert split_orders_settle() == 1
    assert Order.objects.get(pk=order.pk).status == OrderStatus.CANCELLED
    assert wallet_balance(customer) == 50000


def test_a_retry_after_a_pending_answer_replays_instead_of_ordering_again(
    customer_api, stock, card_processor
):
    stock("A", 10)
    body = {
        "payment_method": "wallet_card",
        "card_payment_method": "pm_review",
        "lines": [line("A", 1, "650.00")],
    }
    first = customer_api.post("/api/v1/orders", body, format="json", HTTP_IDEMPOTENCY_KEY="split-1")
    again = customer_api.post("/api/v1/orders", body, format="json", HTTP_IDEMPOTENCY_KEY="split-1")
    assert first.json()["id"] == again.json()["id"]
    assert Order.objects.count() == 1


def test_the_card_accounts_limits_and_categories_are_enforced(
    customer_api, stock, card_processor, unchanged_db
):
    stock("A", 10)
    card_processor.max_order = 60000
    card_processor.merchant_categories = ["apparel"]
    card_processor.save()
    check = unchanged_db()
    too_big = split(customer_api, "650.00")
    assert too_big.status_code == 422
    assert "at most 600.00 EUR" in too_big.json()["error"]["message"]
    wrong_category = customer_api.post(
        "/api/v1/orders",
        {
            "payment_method": "wallet_card",
            "card_payment_method": "pm_card",
            "lines": [line("A", 1, "10.00", merchant_category="alcohol")],
        },
        format="json",
    )
    assert "does not serve alcohol" in wrong_category.json()["error"]["message"]
    check()
