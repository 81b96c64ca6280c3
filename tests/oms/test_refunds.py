"""Returns and cancellations of financed (and wallet) orders.

A refund is the merchant's act (a channel key): a financed order's plan shrinks and money
already paid beyond the new total goes to the customer's wallet, in the same transaction
as the order's refunded lines. Cancelling a confirmed financed order ends its plan too.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import transaction
from rest_framework.test import APIClient

from bnpl.models import InstallmentStatus, Plan, PlanStatus
from bnpl.services import installment_apply_payment, locked_plan_installment, plan_receivable
from core.money import Money
from ledger.models import Purpose
from ledger.services import system
from oms import signals
from oms.errors import InvalidTransition
from oms.models import ChannelKind, Order, OrderStatus
from oms.services import channel_rotate_key, order_cancel, order_fulfil
from tests.bnpl.factories import make_product
from tests.factories import approve_kyc, channel_with_key, fund, line, make_customer
from wallet.models import Wallet

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("customer_cards")]


@pytest.fixture
def borrower(customer):
    return approve_kyc(customer)


@pytest.fixture
def product():
    """Pay in 3 monthly, nothing down, 0 %, last installments reduced first."""
    return make_product(code="pay-in-3", min_amount=1_000, max_amount=500_000)


@pytest.fixture
def shop(borrower, web_channel) -> APIClient:
    """The merchant's server: the web channel's key, acting for the borrower."""
    key = channel_rotate_key(channel_id=web_channel.pk)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}", HTTP_X_CUSTOMER_ID=str(borrower.pk))
    return client


def buy(client: APIClient, lines: list[dict]) -> Order:
    """The borrower applies in person (a plan is a credit agreement) through the web shop."""
    response = client.post(
        "/api/v1/orders",
        {
            "payment_method": "installments",
            "plan_product": "pay-in-3",
            "card_payment_method": "pm_card_ok",
            "lines": lines,
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    assert response.json()["status"] == "confirmed"
    return Order.objects.get(pk=response.json()["id"])


def plan_of(order: Order) -> Plan:
    return Plan.objects.get(reference_type="oms.order", reference_id=str(order.pk))


def schedule(plan: Plan) -> list[tuple[int, int, str]]:
    return list(plan.installments.order_by("number").values_list("number", "principal", "status"))


def wallet_balance(customer) -> int:
    return Wallet.objects.get(customer=customer, currency="EUR").account.balance


def pay_installment(plan: Plan, number: int) -> None:
    with transaction.atomic():
        locked, row = locked_plan_installment(plan.installments.get(number=number).pk)
        installment_apply_payment(
            plan=locked,
            installment=row,
            amount=Money(row.outstanding, plan.currency),
            source=system(Purpose.CASH_CLEARING, plan.currency),
            kind="bnpl.installment_paid",
            reference_type="test",
            reference_id=f"pay-{number}",
        )


@pytest.fixture
def refunded_signals():
    got = []

    def receiver(sender, order, amount, lines, **kwargs):
        got.append((order.pk, str(amount), lines))

    signals.order_refunded.connect(receiver, weak=False)
    yield got
    signals.order_refunded.disconnect(receiver)


def test_returned_lines_shrink_the_last_installments_first(
    borrower, customer_api, shop, stock, product, card_processor, refunded_signals
):
    stock("A", 10)
    stock("B", 10)
    order = buy(customer_api, [line("A", 1, "240.00"), line("B", 3, "20.00")])  # 300.00
    order_fulfil(order_id=order.pk)
    plan = plan_of(order)
    assert schedule(plan) == [(1, 10_000, "scheduled"), (2, 10_000, "scheduled"),
                              (3, 10_000, "scheduled")]  # fmt: skip

    response = shop.post(
        f"/api/v1/orders/{order.pk}/refunds",
        {"lines": [{"line_no": 1, "quantity": 1}], "reason": "Returned: too small"},
        format="json",
    )

    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["refunded"] == {"amount": "240.00", "currency": "EUR"}
    assert [(x["line_no"], x["refunded_quantity"]) for x in body["lines"]] == [(1, 1), (2, 0)]
    # 240.00 off the unpaid principal, last installments first: 100 + 100 + 40.
    assert schedule(plan) == [(1, 6_000, "scheduled"), (2, 0, "cancelled"), (3, 0, "cancelled")]
    assert plan_receivable(customer_id=borrower.pk, currency="EUR").balance == 6_000
    assert Plan.objects.get(pk=plan.pk).refunded_amount == 24_000
    assert refunded_signals == [(order.pk, "240.00 EUR", [{"line_no": 1, "quantity": 1}])]


def test_money_paid_beyond_the_new_total_goes_to_the_wallet(
    borrower, customer_api, shop, stock, product, card_processor
):
    stock("A", 10)
    order = buy(customer_api, [line("A", 3, "100.00")])
    order_fulfil(order_id=order.pk)
    plan = plan_of(order)
    pay_installment(plan, 1)
    pay_installment(plan, 2)
    wallet_before = wallet_balance(borrower)

    response = shop.post(
        f"/api/v1/orders/{order.pk}/refunds",
        {"lines": [{"line_no": 1, "quantity": 2}], "reason": "Two returned"},
        format="json",
    )

    assert response.status_code == 200, response.json()
    # 200.00 refunded: installment 3 (100.00 unpaid) is cancelled, the other 100.00 was
    # already paid and goes back to the wallet.
    assert schedule(plan) == [(1, 10_000, "paid"), (2, 10_000, "paid"), (3, 0, "cancelled")]
    assert wallet_balance(borrower) == wallet_before + 10_000
    assert plan_receivable(customer_id=borrower.pk, currency="EUR").balance == 0
    assert Plan.objects.get(pk=plan.pk).status == PlanStatus.COMPLETED


def test_refunding_everything_cancels_the_plan(
    borrower, customer_api, shop, stock, product, card_processor
):
    stock("A", 10)
    order = buy(customer_api, [line("A", 3, "100.00")])
    order_fulfil(order_id=order.pk)
    plan = plan_of(order)
    pay_installment(plan, 1)
    wallet_before = wallet_balance(borrower)

    response = shop.post(
        f"/api/v1/orders/{order.pk}/refunds", {"reason": "Whole order returned"}, format="json"
    )

    assert response.status_code == 200, response.json()
    assert response.json()["refunded"]["amount"] == "300.00"
    assert Plan.objects.get(pk=plan.pk).status == PlanStatus.CANCELLED
    assert wallet_balance(borrower) == wallet_before + 10_000
    assert plan_receivable(customer_id=borrower.pk, currency="EUR").balance == 0
    again = shop.post(f"/api/v1/orders/{order.pk}/refunds", {"reason": "Again"}, format="json")
    assert again.status_code == 400
    assert again.json()["error"]["code"] == "oms.nothing_to_refund"


def test_units_of_one_line_refunded_in_parts_add_up_to_the_line_total(
    borrower, customer_api, shop, stock, product, card_processor
):
    stock("A", 10)
    order = buy(customer_api, [line("A", 3, "33.34")])  # 100.02
    order_fulfil(order_id=order.pk)
    plan = plan_of(order)
    pay_installment(plan, 1)  # 33.34 paid; 66.68 still owed
    wallet_before = wallet_balance(borrower)

    first = shop.post(
        f"/api/v1/orders/{order.pk}/refunds",
        {"lines": [{"line_no": 1, "quantity": 1}], "reason": "One back"},
        format="json",
    )

    assert first.json()["refunded"]["amount"] == "33.34"
    # The unit comes off the unpaid principal, the last installment first.
    assert [row[1:] for row in schedule(plan)[1:]] == [(3_334, "scheduled"), (0, "cancelled")]
    assert plan_receivable(customer_id=borrower.pk, currency="EUR").balance == 3_334
    assert wallet_balance(borrower) == wallet_before

    second = shop.post(
        f"/api/v1/orders/{order.pk}/refunds",
        {"lines": [{"line_no": 1, "quantity": 2}], "reason": "The rest back"},
        format="json",
    )

    assert second.json()["refunded"]["amount"] == "100.02"
    assert Order.objects.get(pk=order.pk).refunded == 10_002
    # Every unit back: the plan refunds its whole amount, nothing is owed any more, and
    # what was paid (the first installment) goes back to the wallet.
    refreshed = Plan.objects.get(pk=plan.pk)
    assert (refreshed.refunded_amount, refreshed.amount) == (10_002, 10_002)
    assert plan_receivable(customer_id=borrower.pk, currency="EUR").balance == 0
    assert wallet_balance(borrower) == wallet_before + 3_334


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"lines": [{"line_no": 9, "quantity": 1}], "reason": "x"}, "lines.0.line_no"),
        ({"lines": [{"line_no": 1, "quantity": 4}], "reason": "x"}, "lines.0.quantity"),
        (
            {
                "lines": [{"line_no": 1, "quantity": 1}, {"line_no": 1, "quantity": 1}],
                "reason": "x",
            },
            "lines.1.line_no",
        ),
        ({"lines": [{"line_no": 1, "quantity": 0}], "reason": "x"}, "lines.0.quantity"),
        ({"lines": [], "reason": "x"}, "lines"),
        ({"lines": [{"line_no": 1, "quantity": 1}]}, "reason"),
    ],
)
def test_bad_refunds_are_refused_and_change_nothing(
    borrower, customer_api, shop, stock, product, card_processor, unchanged_db, body, field
):
    stock("A", 10)
    order = buy(customer_api, [line("A", 3, "100.00")])
    order_fulfil(order_id=order.pk)
    check = unchanged_db()

    response = shop.post(f"/api/v1/orders/{order.pk}/refunds", body, format="json")

    assert response.status_code == 400, response.json()
    assert field in response.json()["error"]["fields"]
    check()


def test_customers_cannot_refund_their_own_orders(
    borrower, customer_api, shop, stock, product, card_processor, unchanged_db
):
    stock("A", 10)
    order = buy(customer_api, [line("A", 1, "100.00")])
    order_fulfil(order_id=order.pk)
    check = unchanged_db()

    response = customer_api.post(
        f"/api/v1/orders/{order.pk}/refunds", {"reason": "Mine"}, format="json"
    )

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "oms.refund_by_merchant_only"
    check()


def test_another_customers_order_is_not_found(
    borrower, customer_api, shop, stock, product, card_processor, unchanged_db
):
    stock("A", 10)
    order = buy(customer_api, [line("A", 1, "100.00")])
    order_fulfil(order_id=order.pk)
    stranger = make_customer()
    _, key = channel_with_key("other-shop", ChannelKind.WEB)
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}", HTTP_X_CUSTOMER_ID=str(stranger.pk))
    check = unchanged_db()

    response = other.post(f"/api/v1/orders/{order.pk}/refunds", {"reason": "x"}, format="json")

    assert response.status_code == 404
    check()


def test_an_unshipped_order_is_cancelled_not_refunded(
    borrower, customer_api, shop, stock, product, card_processor, unchanged_db
):
    stock("A", 10)
    order = buy(customer_api, [line("A", 1, "100.00")])
    check = unchanged_db()

    response = shop.post(f"/api/v1/orders/{order.pk}/refunds", {"reason": "x"}, format="json")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "oms.not_fulfilled"
    check()


def test_a_repeated_refund_request_refunds_once(
    borrower, customer_api, shop, stock, product, card_processor
):
    stock("A", 10)
    order = buy(customer_api, [line("A", 3, "100.00")])
    order_fulfil(order_id=order.pk)
    body = {"lines": [{"line_no": 1, "quantity": 1}], "reason": "One back"}

    first = shop.post(
        f"/api/v1/orders/{order.pk}/refunds", body, format="json", HTTP_IDEMPOTENCY_KEY="r-1"
    )
    replay = shop.post(
        f"/api/v1/orders/{order.pk}/refunds", body, format="json", HTTP_IDEMPOTENCY_KEY="r-1"
    )

    assert first.status_code == replay.status_code == 200
    assert replay.json() == first.json()
    assert Order.objects.get(pk=order.pk).refunded == 10_000


def test_a_wallet_order_is_refunded_to_the_wallet(borrower, shop, stock, card_processor):
    stock("A", 10)
    fund(borrower, "50.00")
    response = shop.post(
        "/api/v1/orders",
        {"payment_method": "wallet", "lines": [line("A", 2, "20.00")]},
        format="json",
    )
    order = Order.objects.get(pk=response.json()["id"])
    order_fulfil(order_id=order.pk)
    before = wallet_balance(borrower)

    refunded = shop.post(
        f"/api/v1/orders/{order.pk}/refunds",
        {"lines": [{"line_no": 1, "quantity": 1}], "reason": "One back"},
        format="json",
    )

    assert refunded.status_code == 200, refunded.json()
    assert wallet_balance(borrower) == before + 2_000


# --- cancelling a confirmed financed order --------------------------------------------


def test_cancelling_before_any_debit_cancels_the_plan_and_returns_the_down_payment(
    borrower, customer_api, shop, stock, card_processor
):
    make_product(
        code="pay-in-3",
        down_payment="percent",
        down_payment_percent=Decimal(25),
        min_amount=1_000,
        max_amount=500_000,
    )
    stock("A", 10)
    order = buy(customer_api, [line("A", 1, "300.00")])
    plan = plan_of(order)
    assert plan.installments.get(number=0).status == InstallmentStatus.PAID
    wallet_before = wallet_balance(borrower)

    order_cancel(order_id=order.pk, reason="Out of stock after all")

    assert Order.objects.get(pk=order.pk).status == OrderStatus.CANCELLED
    assert Plan.objects.get(pk=plan.pk).status == PlanStatus.CANCELLED
    assert wallet_balance(borrower) == wallet_before + 7_500  # the 25 % down payment
    assert plan_receivable(customer_id=borrower.pk, currency="EUR").balance == 0
    assert set(plan.debit_requests.values_list("status", flat=True)) == {"cancelled"}


def test_cancelling_after_a_debit_refunds_the_rest_of_the_plan(
    borrower, customer_api, shop, stock, product, card_processor
):
    stock("A", 10)
    order = buy(customer_api, [line("A", 1, "300.00")])
    plan = plan_of(order)
    pay_installment(plan, 1)
    plan.debit_requests.filter(installment__number=1).update(attempts_made=1)
    wallet_before = wallet_balance(borrower)

    order_cancel(order_id=order.pk, reason="Customer changed their mind")

    assert Order.objects.get(pk=order.pk).status == OrderStatus.CANCELLED
    assert Plan.objects.get(pk=plan.pk).status == PlanStatus.CANCELLED
    assert wallet_balance(borrower) == wallet_before + 10_000
    assert plan_receivable(customer_id=borrower.pk, currency="EUR").balance == 0


def test_staff_refund_a_returned_order_in_full_from_the_admin(
    borrower, customer_api, shop, stock, product, card_processor, admin_client
):
    stock("A", 10)
    order = buy(customer_api, [line("A", 3, "100.00")])
    order_fulfil(order_id=order.pk)

    response = admin_client.post(
        "/admin/oms/order/",
        {"action": "refund_orders", "_selected_action": [order.pk]},
        follow=True,
    )

    assert response.status_code == 200
    assert "Refunded 1 order(s)." in response.content.decode()
    assert Order.objects.get(pk=order.pk).refunded == 30_000
    assert Plan.objects.get(pk=plan_of(order).pk).status == PlanStatus.CANCELLED


def test_a_financed_order_does_not_ship_before_its_down_payment_is_paid(
    borrower, customer_api, shop, stock, card_processor, unchanged_db
):
    make_product(
        code="pay-in-3",
        down_payment="percent",
        down_payment_percent=Decimal(25),
        min_amount=1_000,
        max_amount=500_000,
    )
    stock("A", 10)
    response = customer_api.post(
        "/api/v1/orders",
        {
            "payment_method": "installments",
            "plan_product": "pay-in-3",
            "card_payment_method": "pm_review",  # the card processor reviews the charge
            "lines": [line("A", 1, "300.00")],
        },
        format="json",
    )
    order = Order.objects.get(pk=response.json()["id"])
    assert order.status == OrderStatus.CONFIRMED
    assert plan_of(order).installments.get(number=0).status == InstallmentStatus.SCHEDULED
    check = unchanged_db()

    with pytest.raises(InvalidTransition) as refused:
        order_fulfil(order_id=order.pk)

    assert refused.value.code == "oms.down_payment_unpaid"
    check()


def test_cancelling_an_order_whose_plan_was_paid_off_refunds_it(
    borrower, customer_api, shop, stock, product, card_processor
):
    stock("A", 10)
    order = buy(customer_api, [line("A", 1, "300.00")])
    plan = plan_of(order)
    for number in (1, 2, 3):
        pay_installment(plan, number)
    assert Plan.objects.get(pk=plan.pk).status == PlanStatus.COMPLETED
    wallet_before = wallet_balance(borrower)

    order_cancel(order_id=order.pk, reason="Never shipped")

    assert Order.objects.get(pk=order.pk).status == OrderStatus.CANCELLED
    assert wallet_balance(borrower) == wallet_before + 30_000
    assert Plan.objects.get(pk=plan.pk).refunded_amount == 30_000


def test_a_plan_that_pays_for_an_order_ends_only_with_its_order(
    borrower, customer_api, shop, stock, product, card_processor, unchanged_db
):
    stock("A", 10)
    order = buy(customer_api, [line("A", 1, "300.00")])
    plan = plan_of(order)
    check = unchanged_db()

    refused = customer_api.post(f"/api/v1/bnpl/plans/{plan.pk}/cancel", {}, format="json")

    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "bnpl.plan_ends_with_its_order"
    check()
    # Cancelling the order (not shipped yet) cancels the plan with it.
    cancelled = customer_api.post(
        f"/api/v1/orders/{order.pk}/cancel", {"reason": "Changed my mind"}, format="json"
    )
    assert cancelled.status_code == 200, cancelled.json()
    assert Plan.objects.get(pk=plan.pk).status == PlanStatus.CANCELLED


def test_a_shipped_order_keeps_its_plan_until_its_lines_come_back(
    borrower, customer_api, shop, stock, product, card_processor, unchanged_db
):
    stock("A", 10)
    order = buy(customer_api, [line("A", 1, "300.00")])
    order_fulfil(order_id=order.pk)
    plan = plan_of(order)
    check = unchanged_db()

    plan_cancel = customer_api.post(f"/api/v1/bnpl/plans/{plan.pk}/cancel", {}, format="json")
    order_cancel_ = customer_api.post(
        f"/api/v1/orders/{order.pk}/cancel", {"reason": "Keep the goods"}, format="json"
    )

    assert (plan_cancel.status_code, plan_cancel.json()["error"]["code"]) == (
        409,
        "bnpl.plan_ends_with_its_order",
    )
    assert order_cancel_.status_code == 409
    check()
    assert Plan.objects.get(pk=plan.pk).status == PlanStatus.ACTIVE


@pytest.mark.parametrize("line_no", ["1", 1.0, True])
def test_a_refund_line_number_is_a_json_integer(
    borrower, customer_api, shop, stock, product, card_processor, line_no
):
    stock("A", 10)
    order = buy(customer_api, [line("A", 3, "100.00")])
    order_fulfil(order_id=order.pk)
    response = shop.post(
        f"/api/v1/orders/{order.pk}/refunds",
        {"lines": [{"line_no": line_no, "quantity": 1}], "reason": "Returned"},
        format="json",
    )
    assert response.status_code == 400, response.json()
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert "lines.0.line_no" in error["fields"], error
    assert schedule(plan_of(order)) == [(1, 10_000, "scheduled"), (2, 10_000, "scheduled"),
                                        (3, 10_000, "scheduled")]  # fmt: skip
