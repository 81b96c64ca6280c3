import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from core.models import AuditEntry
from customers.models import Feature, KycRequirement
from ledger.models import Account, JournalEntry, Purpose
from oms.models import Order, OrderStatus, ReservationStatus, StockItem, StockReservation
from tests.factories import LocationFactory, line, make_customer, money, token_for
from wallet.models import WalletTransaction

pytestmark = pytest.mark.django_db

URL = "/api/v1/orders"


def checkout(client, *lines, **extra):
    return client.post(
        URL, {"payment_method": "wallet", "lines": list(lines), **extra}, format="json"
    )


def wallet_balance(customer) -> int:
    return Account.objects.get(customer=customer, purpose=Purpose.CUSTOMER_WALLET).balance


def test_checkout_pays_from_wallet_reserves_stock_and_posts_one_entry(
    customer, customer_api, stock
):
    tee = stock("TEE", 10)
    response = checkout(
        customer_api,
        line("TEE", 2, "19.99", tax="8.40"),
        line("TEE", 1, "5.00"),
        external_reference="WEB-1",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "confirmed"
    assert body["total"] == money("53.38")
    assert [ln["total"] for ln in body["lines"]] == [money("48.38"), money("5.00")]

    order = Order.objects.get(pk=body["id"])
    assert order.status == OrderStatus.CONFIRMED
    assert order.total == 5338
    assert wallet_balance(customer) == 50000 - 5338
    tee.refresh_from_db()
    assert (tee.on_hand, tee.reserved) == (10, 3)
    assert sum(StockReservation.objects.filter(order=order).values_list("quantity", flat=True)) == 3

    entry = JournalEntry.objects.get(kind="wallet.payment", reference_id=str(order.pk))
    postings = {p.account.code: p.amount for p in entry.postings.select_related("account")}
    assert postings == {f"wallet:{customer.pk}:EUR": 5338, "merchant:EUR": -5338}
    payment = WalletTransaction.objects.get(reference_type="oms.order", reference_id=str(order.pk))
    assert (payment.direction, payment.amount, payment.balance_after) == ("debit", 5338, 44662)
    assert AuditEntry.objects.filter(action="oms.checkout", target_id=str(order.pk)).exists()


def test_checkout_draws_stock_from_locations_in_priority_order(customer_api, stock):
    near = stock("MUG", 2, location=LocationFactory(code="near", priority=1))
    far = stock("MUG", 10, location=LocationFactory(code="far", priority=9))
    assert checkout(customer_api, line("MUG", 5, "1.00")).status_code == 201
    near.refresh_from_db()
    far.refresh_from_db()
    assert (near.reserved, far.reserved) == (2, 3)


def test_insufficient_balance_is_422_with_figures_and_writes_nothing(
    customer_api, stock, unchanged_db
):
    stock("TV", 5)
    check = unchanged_db()
    response = checkout(customer_api, line("TV", 1, "500.01"))
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "wallet.insufficient_balance"
    assert error["shortfall"] == money("0.01")
    assert error["options"] == ["top_up"]
    check()


def test_customer_without_a_wallet_gets_insufficient_balance(api, web_channel, stock):
    stock("TV", 5)
    newcomer = make_customer()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token_for(newcomer)}")
    response = checkout(api, line("TV", 1, "1.00"))
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "wallet.insufficient_balance"


def test_out_of_stock_is_409_naming_the_short_line_and_writes_nothing(
    customer_api, stock, unchanged_db
):
    stock("A", 5)
    stock("B", 1)
    check = unchanged_db()
    response = checkout(customer_api, line("A", 2), line("B", 2), line("UNKNOWN", 1))
    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "oms.out_of_stock"
    assert error["fields"] == {
        "lines.1.quantity": ["Only 1 of B available; 2 requested."],
        "lines.2.quantity": ["Only 0 of UNKNOWN available; 1 requested."],
    }
    check()


def test_kyc_gate_on_wallet_usage(customer, customer_api, stock, unchanged_db):
    stock("A", 5)
    KycRequirement.objects.create(feature=Feature.WALLET_USAGE, created_at=customer.created_at)
    check = unchanged_db()
    response = checkout(customer_api, line("A", 1))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "customers.kyc_required"
    check()


def test_external_reference_is_unique_per_channel(customer_api, stock, unchanged_db):
    stock("A", 5)
    assert checkout(customer_api, line("A", 1), external_reference="R-1").status_code == 201
    check = unchanged_db()
    again = checkout(customer_api, line("A", 1), external_reference="R-1")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "oms.duplicate_external_reference"
    check()


BAD_BODIES = [
    (
        {"payment_method": "wallet", "lines": [line("A", 1, currency="XXX")]},
        "lines.0.unit_price.currency",
    ),
    (
        {"payment_method": "wallet", "lines": [line("A", 1, price="0.00")]},
        "lines.0.unit_price.amount",
    ),
    (
        {"payment_method": "wallet", "lines": [line("A", 1, price="-5.00")]},
        "lines.0.unit_price.amount",
    ),
    (
        {"payment_method": "wallet", "lines": [line("A", 1, price="1.001")]},
        "lines.0.unit_price.amount",
    ),
    ({"payment_method": "wallet", "lines": [line("A", 1, tax="0.001")]}, "lines.0.tax.amount"),
    (
        {
            "payment_method": "wallet",
            "lines": [{**line("A", 1), "unit_price": {"amount": 1.5, "currency": "EUR"}}],
        },
        "lines.0.unit_price.amount",
    ),
    ({"payment_method": "wallet", "lines": [line("A", 0)]}, "lines.0.quantity"),
    ({"payment_method": "wallet", "lines": [line("A", -1)]}, "lines.0.quantity"),
    ({"payment_method": "wallet", "lines": [line("A", 10_001)]}, "lines.0.quantity"),
    ({"payment_method": "wallet", "lines": []}, "lines"),
    ({"payment_method": "wallet"}, "lines"),
    ({"payment_method": "cheque", "lines": [line("A", 1)]}, "payment_method"),
    ({"payment_method": "wallet", "lines": [line("A", 10_000, price="9999999999.99")]}, "lines.0"),
    (
        {"payment_method": "wallet", "lines": [line("A", 1), line("B", 1, currency="USD")]},
        "lines.1.unit_price.currency",
    ),
    ({"payment_method": "wallet", "lines": [line("A", 1)], "channel": "nope"}, "channel"),
    ({"payment_method": "wallet", "lines": "A"}, "lines"),
    (
        {"payment_method": "wallet", "lines": [line("A", 1, price="1e999999")]},
        "lines.0.unit_price.amount",
    ),
    ({"payment_method": "wallet", "lines": ["A"]}, "lines.0"),
]


@pytest.mark.parametrize(("body", "field"), BAD_BODIES)
def test_bad_input_is_400_with_a_field_message_and_writes_nothing(
    customer_api, stock, unchanged_db, body, field
):
    stock("A", 50_000)
    check = unchanged_db()
    response = customer_api.post(URL, body, format="json")
    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert error["code"] in {"validation_error", "oms.invalid_order", "oms.unknown_channel"}
    assert field in error["fields"], error
    assert error["fields"][field]
    assert all(isinstance(message, str) for message in error["fields"][field])
    check()


def test_malformed_json_and_wrong_content_type_are_refused(customer_api, unchanged_db):
    check = unchanged_db()
    bad_json = customer_api.post(URL, "{not json", content_type="application/json")
    assert bad_json.status_code == 400
    assert bad_json.json()["error"]["code"] == "request.malformed"
    form = customer_api.post(URL, "a=b", content_type="application/x-www-form-urlencoded")
    assert form.status_code == 415
    assert form.json()["error"]["code"] == "request.unsupported_media_type"
    check()


def test_anonymous_checkout_is_401(api, unchanged_db):
    check = unchanged_db()
    response = api.post(URL, {"payment_method": "wallet", "lines": [line("A")]}, format="json")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "auth.not_authenticated"
    check()


def _checkout_queries(client, lines: int) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = checkout(client, *[line(f"SKU-{i}", 1, "1.00") for i in range(lines)])
    assert response.status_code == 201, response.json()
    return len(ctx.captured_queries)


def test_checkout_query_count_does_not_grow_with_lines(
    customer_api, stock, django_assert_num_queries
):
    for i in range(50):
        stock(f"SKU-{i}", 10)
    _checkout_queries(customer_api, 1)  # warm up: system accounts are created on first use
    one = _checkout_queries(customer_api, 1)
    with django_assert_num_queries(one):
        checkout(customer_api, *[line(f"SKU-{i}", 1, "1.00") for i in range(50)])
    with django_assert_num_queries(one):
        checkout(customer_api, line("SKU-0", 1, "1.00"))


def test_checkout_query_count_is_pinned(customer_api, stock, django_assert_num_queries):
    stock("A", 10)
    checkout(customer_api, line("A", 1))  # warm up
    # token + user + customer, channel, KYC gate, [savepoint: the test's stand-in for
    # BEGIN] wallet + account lock, stock lock, order, lines, stock update, reservations,
    # ledger accounts read (the merchant found by code), the wallet's account locked (it may
    # not go below zero), entry, postings, balances (the rest locked and moved), wallet
    # transaction, audit, [release]. The response is rendered from the rows in memory.
    with django_assert_num_queries(18):
        checkout(customer_api, line("A", 1))


def test_cancel_releases_stock_and_refunds_the_wallet(customer, customer_api, stock):
    item = stock("A", 5)
    order_id = checkout(customer_api, line("A", 2, "10.00")).json()["id"]
    response = customer_api.post(
        f"{URL}/{order_id}/cancel", {"reason": "changed my mind"}, format="json"
    )
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    item.refresh_from_db()
    assert item.reserved == 0
    assert wallet_balance(customer) == 50000
    assert set(StockReservation.objects.values_list("status", flat=True)) == {
        ReservationStatus.RELEASED
    }
    refund = JournalEntry.objects.get(kind="wallet.refund", reference_id=str(order_id))
    assert sorted(refund.postings.values_list("amount", flat=True)) == [-2000, 2000]
    again = customer_api.post(f"{URL}/{order_id}/cancel", {}, format="json")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "oms.invalid_transition"
    assert wallet_balance(customer) == 50000


def test_fulfil_consumes_the_reserved_units(customer_api, stock):
    from oms.services import order_fulfil

    item = stock("A", 5)
    order_id = checkout(customer_api, line("A", 2)).json()["id"]
    order_fulfil(order_id=order_id)
    item = StockItem.objects.get(pk=item.pk)
    assert (item.on_hand, item.reserved) == (3, 0)
    assert Order.objects.get(pk=order_id).status == OrderStatus.FULFILLED
    cancel = customer_api.post(f"{URL}/{order_id}/cancel", {}, format="json")
    assert cancel.status_code == 409
