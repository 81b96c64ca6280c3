"""Races against committed rows: every thread has its own PostgreSQL connection."""

from collections import Counter

import pytest
from rest_framework.test import APIClient

from ledger.models import Account, JournalEntry, Purpose
from oms.models import Order, OrderStatus, StockItem
from tests.factories import fund, line, make_customer, token_for
from wallet.models import WalletTransaction

pytestmark = pytest.mark.django_db(transaction=True)


def client_for(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def test_twenty_threads_paying_from_one_wallet_never_overdraw_it(web_channel, stock, concurrently):
    stock("A", 1000)
    customer = make_customer()
    fund(customer, "95.00")  # room for 9 orders of 10.00
    token = token_for(customer)

    def pay(i: int):
        response = client_for(token).post(
            "/api/v1/orders",
            {"payment_method": "wallet", "lines": [line("A", 1, "10.00")]},
            format="json",
        )
        return response.status_code, response.json()

    results = concurrently(20, pay)
    statuses = Counter(status for status, _ in results)
    assert statuses == {201: 9, 422: 11}, results
    assert all(
        body["error"]["code"] == "wallet.insufficient_balance"
        for status, body in results
        if status == 422
    )

    wallet = Account.objects.get(customer=customer, purpose=Purpose.CUSTOMER_WALLET)
    assert wallet.balance == 500  # 95.00 − 9 × 10.00, never below zero
    paid = {body["id"] for status, body in results if status == 201}
    assert (
        set(Order.objects.filter(status=OrderStatus.CONFIRMED).values_list("pk", flat=True)) == paid
    )
    # Every success paid exactly once: one payment entry and one wallet debit per order.
    payments = Counter(
        JournalEntry.objects.filter(kind="wallet.payment").values_list("reference_id", flat=True)
    )
    assert payments == {str(pk): 1 for pk in paid}
    debits = WalletTransaction.objects.filter(kind="payment")
    assert Counter(debits.values_list("reference_id", flat=True)) == {str(pk): 1 for pk in paid}
    # The running balances recorded on the debits are a strictly decreasing sequence.
    assert sorted(debits.values_list("balance_after", flat=True)) == list(range(500, 9500, 1000))
    assert StockItem.objects.get(sku="A").reserved == 9


def test_twenty_threads_buying_the_last_five_units_sell_exactly_five(
    web_channel, stock, concurrently
):
    item = stock("LAST", 5)
    tokens = []
    for _ in range(20):
        customer = make_customer()
        fund(customer, "50.00")
        tokens.append(token_for(customer))

    def buy(i: int):
        response = client_for(tokens[i]).post(
            "/api/v1/orders",
            {"payment_method": "wallet", "lines": [line("LAST", 1, "10.00")]},
            format="json",
        )
        return response.status_code, response.json()

    results = concurrently(20, buy)
    assert Counter(status for status, _ in results) == {201: 5, 409: 15}, results
    assert all(
        body["error"]["code"] == "oms.out_of_stock" for status, body in results if status == 409
    )
    item.refresh_from_db()
    assert (item.on_hand, item.reserved) == (5, 5)
    assert Order.objects.count() == 5
    assert JournalEntry.objects.filter(kind="wallet.payment").count() == 5


def test_opposite_sku_orders_do_not_deadlock(web_channel, stock, concurrently):
    stock("X", 100)
    stock("Y", 100)
    customer = make_customer()
    fund(customer, "1000.00")
    token = token_for(customer)

    def buy(i: int):
        skus = ("X", "Y") if i % 2 else ("Y", "X")
        response = client_for(token).post(
            "/api/v1/orders",
            {"payment_method": "wallet", "lines": [line(s, 1, "1.00") for s in skus]},
            format="json",
        )
        return response.status_code

    assert concurrently(20, buy) == [201] * 20
    assert set(StockItem.objects.values_list("reserved", flat=True)) == {20}


def test_one_hundred_concurrent_requests_with_one_key_make_one_order(
    web_channel, stock, concurrently
):
    stock("A", 1000)
    customer = make_customer()
    fund(customer, "1000.00")
    token = token_for(customer)
    body = {"payment_method": "wallet", "lines": [line("A", 1, "10.00")]}

    def post(i: int):
        response = client_for(token).post(
            "/api/v1/orders", body, format="json", HTTP_IDEMPOTENCY_KEY="one-key"
        )
        return response.status_code, response.json()

    # PostgreSQL's default max_connections is 100: at most 50 requests hold one at once.
    results = concurrently(100, post, max_connections=50)
    statuses = Counter(status for status, _ in results)
    assert set(statuses) <= {201, 409}, results
    assert statuses[201] >= 1
    assert all(
        body["error"]["code"] == "idempotency.in_progress"
        for status, body in results
        if status == 409
    )
    assert Order.objects.count() == 1
    order_id = Order.objects.get().pk
    assert {body["id"] for status, body in results if status == 201} == {order_id}
    assert JournalEntry.objects.filter(kind="wallet.payment").count() == 1
    # A retry after the dust settles replays the one order.
    retry = client_for(token).post(
        "/api/v1/orders", body, format="json", HTTP_IDEMPOTENCY_KEY="one-key"
    )
    assert (retry.status_code, retry.json()["id"]) == (201, order_id)


def test_checkouts_and_top_ups_of_one_customer_do_not_deadlock(web_channel, stock, concurrently):
    """A top-up locks customer → wallet; a checkout locks the wallet and, at commit, checks
    its order's foreign key to the customer. Locks that change no key (FOR NO KEY UPDATE)
    keep those from waiting on each other."""
    stock("A", 1000)
    customer = make_customer()
    fund(customer, "100.00")
    token = token_for(customer)

    def act(i: int):
        if i % 2:
            fund(customer, "10.00")
            return 201
        return (
            client_for(token)
            .post(
                "/api/v1/orders",
                {"payment_method": "wallet", "lines": [line("A", 1, "10.00")]},
                format="json",
            )
            .status_code
        )

    assert concurrently(20, act) == [201] * 20
    wallet = Account.objects.get(customer=customer, purpose=Purpose.CUSTOMER_WALLET)
    assert wallet.balance == 10000  # 100.00 + 10 × 10.00 − 10 × 10.00
