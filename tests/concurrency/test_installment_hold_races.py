"""Races on an order held for its credit decision: threads with their own connections."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from bnpl.applications import application_expire, application_review
from bnpl.models import ApplicationStatus, CreditApplication, Plan, PlanStatus
from bnpl.services import plan_receivable
from core import clock
from core.errors import ApplicationError
from oms.models import Order, OrderStatus, ReservationStatus, StockReservation
from oms.services import order_cancel
from tests.bnpl.factories import make_product
from tests.factories import (
    ChannelFactory,
    StockItemFactory,
    approve_kyc,
    line,
    make_customer,
    saved_card,
    token_for,
)

pytestmark = pytest.mark.django_db(transaction=True)


def held_order(customer) -> Order:
    """A 1000.00 order of a new account: held for staff review."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(customer)}")
    body = client.post(
        "/api/v1/orders",
        {
            "payment_method": "installments",
            "plan_product": "pay-in-3",
            "card_payment_method": "pm_card_ok",
            "lines": [line("ITEM", 1, "1000.00")],
        },
        format="json",
    ).json()
    assert body["status"] == "on_hold", body
    return Order.objects.get(pk=body["id"])


@pytest.fixture
def setup(card_processor):
    ChannelFactory(code="web")
    StockItemFactory(sku="ITEM", on_hand=100)
    make_product(
        code="pay-in-3",
        down_payment="percent",
        down_payment_percent=Decimal(25),
        max_amount=500_000,
    )
    customer = approve_kyc(make_customer())
    saved_card(customer, "pm_card_ok")
    return customer


def outcome(order_id: int) -> tuple[str, str, bool, list[str]]:
    order = Order.objects.get(pk=order_id)
    application = CreditApplication.objects.get(pk=order.credit_application_id)
    reservations = list(
        StockReservation.objects.filter(order=order).values_list("status", flat=True)
    )
    return order.status, application.status, Plan.objects.exists(), reservations


def test_a_staff_approval_racing_the_customers_cancel_has_one_winner(setup, concurrently):
    order = held_order(setup)
    application_id = order.credit_application_id

    def act(i: int):
        try:
            if i == 0:
                application_review(application_id=application_id, approve=True, reviewer=None)
            else:
                order_cancel(order_id=order.pk, reason="Changed my mind")
        except ApplicationError as exc:
            return exc.code
        return "ok"

    results = sorted(concurrently(2, act))
    state = outcome(order.pk)
    plan = Plan.objects.first()
    if state[1] == ApplicationStatus.CANCELLED:
        # The cancel came first: the approval finds the application closed.
        assert state == (OrderStatus.CANCELLED, ApplicationStatus.CANCELLED, False,
                         [ReservationStatus.RELEASED])  # fmt: skip
        assert results == ["bnpl.application_not_open", "ok"]
    elif results == ["bnpl.charge_in_flight", "ok"]:
        # Approved; the cancel came while the down payment was being charged: refused.
        assert state == (OrderStatus.CONFIRMED, ApplicationStatus.APPROVED, True,
                         [ReservationStatus.ACTIVE])  # fmt: skip
    else:
        # Approved, then cancelled: the order's cancel ends its plan too.
        assert results == ["ok", "ok"]
        assert state == (OrderStatus.CANCELLED, ApplicationStatus.APPROVED, True,
                         [ReservationStatus.RELEASED])  # fmt: skip
        assert plan.status == PlanStatus.CANCELLED
    assert plan_receivable(customer_id=setup.pk, currency="EUR").balance == (
        75_000 if state[0] == OrderStatus.CONFIRMED else 0
    )


def test_an_expiry_racing_a_staff_decline_decides_once(setup, concurrently):
    customer = setup
    order = held_order(customer)
    application_id = order.credit_application_id

    def act(i: int):
        try:
            if i == 0:
                application_expire(application_id=application_id)
            else:
                application_review(
                    application_id=application_id, approve=False, reviewer=None, note="no"
                )
        except ApplicationError as exc:
            return exc.code
        return "ok"

    # The clock is moved once, around the race: the threads share it.
    with clock.travel(timedelta(hours=25)):
        results = concurrently(2, act)
    status, application_status, has_plan, reservations = outcome(order.pk)
    assert (status, has_plan, reservations) == (
        OrderStatus.CANCELLED,
        False,
        [ReservationStatus.RELEASED],
    )
    assert application_status in (ApplicationStatus.EXPIRED, ApplicationStatus.DECLINED)
    assert Counter(results)["ok"] >= 1
    assert plan_receivable(customer_id=customer.pk, currency="EUR").balance == 0
