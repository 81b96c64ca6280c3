"""Checkout with installments: the order waits on hold for the credit decision.

Real commits (``transaction=True``), the card processor and the lending partner in the
payment sandbox over HTTP. Each step checks the order, its stock reservation, the ledger,
the scheduled debit requests, the signals and ``GET /api/v1/orders/{id}``.
"""

from __future__ import annotations

import json
from datetime import date, datetime, time, timedelta
from decimal import Decimal

import pytest
import requests
from celery import current_app
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework.test import APIClient

from bnpl import signals as bnpl_signals
from bnpl.applications import application_review
from bnpl.models import (
    ApplicationStatus,
    CreditApplication,
    DebitRequest,
    DebitRequestStatus,
    InstallmentStatus,
    Plan,
    PlanStatus,
)
from bnpl.pricing import due_date
from bnpl.quoting import quote_product
from bnpl.services import due_moment, plan_receivable
from bnpl.servicing import borrower_income_aligned_set
from bnpl.tasks import cancel_partner_application, expire_applications
from core import clock
from core.models import AuditEntry
from core.money import Money
from customers.models import Feature
from customers.services import kyc_requirement_set
from ledger.models import Account, Purpose
from oms import services as oms_services
from oms import signals as oms_signals
from oms.models import (
    ChannelKind,
    Order,
    OrderStatus,
    ReservationStatus,
    StockItem,
    StockReservation,
)
from oms.services import LineInput, order_fulfil
from oms.tasks import settle_down_payments
from payments import crypto, reliability
from payments.models import PartnerApplication as PartnerApplicationRecord
from payments.models import Provider, ProviderAccount
from payments.services import provider_webhook_secret_rotate
from payments.webhooks import signature_header
from tests.bnpl.factories import make_product
from tests.factories import (
    approve_kyc,
    channel_with_key,
    fund,
    line,
    make_customer,
    money,
    saved_card,
    token_for,
)

pytestmark = [pytest.mark.django_db(transaction=True)]

MERCHANT = f"{Purpose.MERCHANT}:EUR"
GATEWAY = f"{Purpose.GATEWAY_CLEARING}:EUR"
PROVIDER = f"{Purpose.PROVIDER_CLEARING}:EUR"


def balance(code: str) -> int:
    account = Account.objects.filter(code=code).first()
    return account.balance if account else 0


def owed(customer) -> int:
    """The customer's installment receivable: principal still owed, minor units."""
    return plan_receivable(customer_id=customer.pk, currency="EUR").balance


@pytest.fixture
def eager():
    previous = current_app.conf.task_always_eager
    current_app.conf.task_always_eager = True
    yield
    current_app.conf.task_always_eager = previous


@pytest.fixture
def borrower(customer):
    return approve_kyc(customer)


@pytest.fixture
def product():
    """Pay in 3 monthly, 25 % down at checkout, 0 %, 10.00 to 5000.00."""
    return make_product(
        code="pay-in-3",
        down_payment="percent",
        down_payment_percent=Decimal(25),
        min_amount=1_000,
        max_amount=500_000,
    )


@pytest.fixture
def seen():
    """Every integrator signal sent, as (name, id, extra)."""
    got: list[tuple] = []
    receivers = {
        "order_hold_released": (
            oms_signals.order_hold_released,
            lambda sender, order, **kw: got.append(("order_hold_released", order.pk)),
        ),
        "order_cancelled": (
            oms_signals.order_cancelled,
            lambda sender, order, reason, **kw: got.append(("order_cancelled", order.pk, reason)),
        ),
        "plan_approved": (
            bnpl_signals.plan_approved,
            lambda sender, plan, **kw: got.append(("plan_approved", plan.reference_id)),
        ),
        "plan_declined": (
            bnpl_signals.plan_declined,
            lambda sender, application, reasons, **kw: got.append(
                ("plan_declined", application.reference_id, [r["code"] for r in reasons])
            ),
        ),
    }
    for signal, receiver in receivers.values():
        signal.connect(receiver, weak=False)
    yield got
    for signal, receiver in receivers.values():
        signal.disconnect(receiver)


def checkout(client, price: str = "300.00", *, product: str = "pay-in-3", card="pm_card_ok"):
    body = {"payment_method": "installments", "lines": [line("A", 1, price)]}
    if product is not None:
        body["plan_product"] = product
    if card is not None:
        body["card_payment_method"] = card
    return client.post("/api/v1/orders", body, format="json")


def reserved(sku: str = "A") -> int:
    return StockItem.objects.get(sku=sku).reserved


def reservation_states(order_id: int) -> list[str]:
    return list(StockReservation.objects.filter(order_id=order_id).values_list("status", flat=True))


def assert_scheduled_debits(plan: Plan, *, numbers: list[int], amount_each: int) -> None:
    """One scheduled debit request per later installment: its date, card and own key."""
    rows = list(
        DebitRequest.objects.filter(plan=plan)
        .order_by("installment__number")
        .values_list(
            "installment__number",
            "installment__principal",
            "next_attempt_at",
            "payment_method",
            "idempotency_key",
            "status",
        )
    )
    assert [r[0] for r in rows] == numbers
    assert [r[1] for r in rows] == [amount_each] * len(numbers)
    assert [r[2] for r in rows] == [
        due_moment(due_date(plan.start_date, "monthly", n)) for n in numbers
    ]
    assert {r[3] for r in rows} == {plan.payment_method}
    assert len({r[4] for r in rows}) == len(numbers)
    assert {r[5] for r in rows} == {DebitRequestStatus.SCHEDULED}


# --- approve ----------------------------------------------------------------------------


@pytest.mark.usefixtures("customer_cards")
def test_an_approved_order_is_confirmed_with_a_plan_a_charged_down_payment_and_debits(
    borrower, customer_api, stock, product, card_processor, sandbox, seen
):
    stock("A", 10)
    merchant_before = balance(MERCHANT)
    response = checkout(customer_api, "300.00")
    assert response.status_code == 201, response.json()
    body = response.json()
    order = Order.objects.get(pk=body["id"])
    plan = Plan.objects.get(reference_type="oms.order", reference_id=str(order.pk))

    assert (order.status, body["status"]) == (OrderStatus.CONFIRMED, "confirmed")
    assert body["payment_method"] == "installments"
    assert body["credit_decision"]["status"] == "approved"
    assert body["credit_decision"]["decided_by"] == "internal"
    assert body["credit_decision"]["reasons"] == []
    assert body["credit_decision"]["plan"] == plan.pk
    assert reservation_states(order.pk) == [ReservationStatus.ACTIVE]
    assert reserved() == 1

    # The down payment (line 0) was charged on the card now; three debits remain.
    down = plan.installments.get(number=0)
    assert (down.status, down.paid_principal) == (InstallmentStatus.PAID, 7_500)
    [charge] = requests.get(f"{sandbox}/sandbox/charges", timeout=5).json()["data"]
    assert (charge["amount"], charge["status"]) == (7_500, "captured")
    assert_scheduled_debits(plan, numbers=[1, 2, 3], amount_each=7_500)

    # Ledger: the merchant has sold 300.00; the customer owes what is not yet paid.
    assert owed(borrower) == 22_500
    assert balance(MERCHANT) - merchant_before == 30_000
    assert balance(GATEWAY) == 7_500

    assert sorted(seen) == [("order_hold_released", order.pk), ("plan_approved", str(order.pk))]
    polled = customer_api.get(f"/api/v1/orders/{order.pk}").json()
    assert polled["status"] == "confirmed"
    assert polled["credit_decision"]["plan"] == plan.pk
    assert polled["cancel_reason"] == ""


@pytest.mark.usefixtures("customer_cards")
def test_a_declined_down_payment_cancels_the_plan_and_the_order(
    borrower, customer_api, stock, product, card_processor, seen
):
    stock("A", 10)
    merchant_before = balance(MERCHANT)
    body = checkout(customer_api, "300.00", card="pm_decline").json()
    order = Order.objects.get(pk=body["id"])
    plan = Plan.objects.get(reference_id=str(order.pk))

    assert body["status"] == "cancelled"
    assert order.cancel_reason == "Down payment declined (insufficient_funds)"
    assert body["credit_decision"]["status"] == "approved"  # credit was fine; the card not
    assert plan.status == PlanStatus.CANCELLED
    assert set(plan.installments.values_list("status", flat=True)) == {InstallmentStatus.CANCELLED}
    assert set(plan.debit_requests.values_list("status", flat=True)) == {
        DebitRequestStatus.CANCELLED
    }
    assert reservation_states(order.pk) == [ReservationStatus.RELEASED]
    assert reserved() == 0
    # The funding was reversed: nobody owes anybody anything.
    assert owed(borrower) == 0
    assert balance(MERCHANT) == merchant_before
    assert ("order_cancelled", order.pk, order.cancel_reason) in seen


# --- decline ----------------------------------------------------------------------------


@pytest.mark.usefixtures("customer_cards")
def test_a_declined_order_is_cancelled_with_the_reason_and_can_be_paid_another_way(
    customer, customer_api, stock, product, card_processor, seen
):
    stock("A", 10)  # the customer's KYC is still pending
    body = checkout(customer_api, "300.00").json()
    order = Order.objects.get(pk=body["id"])
    assert body["status"] == "cancelled"
    assert order.cancel_reason == "Credit declined (kyc_not_approved)"
    decision = body["credit_decision"]
    assert (decision["status"], decision["plan"]) == ("declined", None)
    assert [r["code"] for r in decision["reasons"]] == ["kyc_not_approved"]
    assert reservation_states(order.pk) == [ReservationStatus.RELEASED]
    assert reserved() == 0
    assert not Plan.objects.exists()
    assert not DebitRequest.objects.exists()
    assert owed(customer) == 0
    assert sorted(seen) == sorted(
        [
            ("order_cancelled", order.pk, "Credit declined (kyc_not_approved)"),
            ("plan_declined", str(order.pk), ["kyc_not_approved"]),
        ]
    )
    assert customer_api.get(f"/api/v1/orders/{order.pk}").json()["status"] == "cancelled"

    # The storefront offers another method: the wallet pays.
    again = customer_api.post(
        "/api/v1/orders",
        {"payment_method": "wallet", "lines": [line("A", 1, "300.00")]},
        format="json",
    )
    assert (again.status_code, again.json()["status"]) == (201, "confirmed")
    assert reserved() == 1


# --- review → approve, review → timeout, withdrawal ---------------------------------------


@pytest.mark.usefixtures("customer_cards")
def test_review_then_staff_approval_releases_the_hold(
    borrower, customer_api, stock, product, card_processor, seen, admin_user
):
    stock("A", 10)
    body = checkout(customer_api, "1000.00").json()  # a new account's large first order
    order = Order.objects.get(pk=body["id"])
    assert body["status"] == "on_hold"
    assert body["credit_decision"]["status"] == "review"
    # The customer is told it is under review; the signal is for the staff who review it.
    assert body["credit_decision"]["reasons"] == []
    staff_view = CreditApplication.objects.get(pk=body["credit_decision"]["application"])
    assert [r["code"] for r in staff_view.reasons] == ["new_account_large_order"]
    assert reservation_states(order.pk) == [ReservationStatus.ACTIVE]
    assert reserved() == 1
    assert not Plan.objects.exists()
    assert not DebitRequest.objects.exists()
    assert (
        requests.get(
            f"{card_processor.base_url.rsplit('/card', 1)[0]}/sandbox/charges", timeout=5
        ).json()["data"]
        == []
    )
    assert seen == []

    application = CreditApplication.objects.get(pk=body["credit_decision"]["application"])
    application_review(
        application_id=application.pk, approve=True, reviewer=admin_user, note="Known buyer"
    )
    order = Order.objects.get(pk=order.pk)
    application = CreditApplication.objects.get(pk=application.pk)
    plan = Plan.objects.get(reference_id=str(order.pk))
    assert order.status == OrderStatus.CONFIRMED
    assert (application.status, application.reviewer) == (ApplicationStatus.APPROVED, admin_user)
    assert AuditEntry.objects.filter(
        action="bnpl.application_reviewed", target_id=str(application.pk), actor=admin_user
    ).exists()
    assert plan.installments.get(number=0).status == InstallmentStatus.PAID
    assert_scheduled_debits(plan, numbers=[1, 2, 3], amount_each=25_000)
    assert owed(borrower) == 75_000
    assert reservation_states(order.pk) == [ReservationStatus.ACTIVE]
    assert ("order_hold_released", order.pk) in seen
    polled = customer_api.get(f"/api/v1/orders/{order.pk}").json()
    assert (polled["status"], polled["credit_decision"]["plan"]) == ("confirmed", plan.pk)


@pytest.mark.usefixtures("customer_cards")
def test_review_then_timeout_cancels_the_order_and_releases_the_stock(
    borrower, customer_api, stock, product, card_processor, seen, eager
):
    stock("A", 10)
    order_id = checkout(customer_api, "1000.00").json()["id"]
    assert expire_applications() == {"expire": 0, "decide": 0}  # not yet due
    assert Order.objects.get(pk=order_id).status == OrderStatus.ON_HOLD

    with clock.travel(timedelta(hours=24, minutes=1)):
        assert expire_applications() == {"expire": 1, "decide": 0}
        assert expire_applications() == {"expire": 0, "decide": 0}  # idempotent
    order = Order.objects.get(pk=order_id)
    application = order.credit_application
    assert order.status == OrderStatus.CANCELLED
    assert order.cancel_reason == "No credit decision in time"
    assert application.status == ApplicationStatus.EXPIRED
    assert [r["code"] for r in application.reasons] == [
        "new_account_large_order",
        "decision_timeout",
    ]
    assert reservation_states(order_id) == [ReservationStatus.RELEASED]
    assert reserved() == 0
    assert not Plan.objects.exists()
    assert owed(borrower) == 0
    assert ("order_cancelled", order_id, "No credit decision in time") in seen
    assert (
        "plan_declined",
        str(order_id),
        ["new_account_large_order", "decision_timeout"],
    ) in seen
    polled = customer_api.get(f"/api/v1/orders/{order_id}").json()
    assert (polled["status"], polled["credit_decision"]["status"]) == ("cancelled", "expired")


@pytest.mark.usefixtures("customer_cards")
def test_cancelling_an_order_on_hold_withdraws_its_application(
    borrower, customer_api, stock, product, card_processor
):
    stock("A", 10)
    order_id = checkout(customer_api, "1000.00").json()["id"]
    response = customer_api.post(f"/api/v1/orders/{order_id}/cancel", {}, format="json")
    assert response.json()["status"] == "cancelled"
    assert response.json()["credit_decision"]["status"] == "cancelled"
    assert reserved() == 0
    # A staff decision that comes too late changes nothing.
    application = Order.objects.get(pk=order_id).credit_application
    with pytest.raises(Exception, match="not in review"):
        application_review(application_id=application.pk, approve=True, reviewer=None)
    assert not Plan.objects.exists()


# --- bad input, other customers -------------------------------------------------------


@pytest.mark.parametrize(
    ("price", "plan_product", "card", "status", "code", "field"),
    [
        ("300.00", "no-such-plan", "pm_card_ok", 400, "bnpl.unknown_product", "plan_product"),
        ("6000.00", "pay-in-3", "pm_card_ok", 400, "bnpl.amount_outside_limits", "plan_product"),
        ("5.00", "pay-in-3", "pm_card_ok", 400, "bnpl.amount_outside_limits", "plan_product"),
        ("300.00", "usd-plan", "pm_card_ok", 400, "bnpl.product_currency_mismatch", "plan_product"),
        ("300.00", "pay-in-3", None, 400, "validation_error", "card_payment_method"),
        ("300.00", None, "pm_card_ok", 400, "validation_error", "plan_product"),
    ],
)
@pytest.mark.usefixtures("customer_cards")
def test_bad_input_is_refused_with_a_stable_code_and_nothing_written(
    borrower, customer_api, stock, product, card_processor, unchanged_db,
    price, plan_product, card, status, code, field,
):  # fmt: skip
    stock("A", 10)
    make_product(code="usd-plan", currency="USD")
    check = unchanged_db()
    response = checkout(customer_api, price, product=plan_product, card=card)
    assert response.status_code == status, response.json()
    error = response.json()["error"]
    assert error["code"] == code
    assert field in error["fields"]
    check()


@pytest.mark.usefixtures("customer_cards")
def test_without_a_card_processor_a_down_payment_plan_is_refused_before_anything_is_written(
    borrower, customer_api, stock, product, unchanged_db
):
    stock("A", 10)
    check = unchanged_db()
    response = checkout(customer_api, "300.00")
    assert (response.status_code, response.json()["error"]["code"]) == (
        422,
        "payments.provider_unavailable",
    )
    check()


@pytest.mark.usefixtures("customer_cards")
def test_another_customers_order_is_not_found(
    borrower, customer_api, stock, product, card_processor
):
    stock("A", 10)
    order_id = checkout(customer_api, "300.00").json()["id"]
    other = make_customer()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(other)}")
    response = client.get(f"/api/v1/orders/{order_id}")
    assert (response.status_code, response.json()["error"]["code"]) == (
        404,
        "oms.order_not_found",
    )


@pytest.mark.usefixtures("customer_cards")
def test_order_detail_costs_the_same_queries_with_a_plan_as_without(
    borrower, customer_api, stock, product, card_processor, django_assert_num_queries
):
    stock("A", 10)
    financed = checkout(customer_api, "300.00").json()["id"]
    paid = customer_api.post(
        "/api/v1/orders",
        {"payment_method": "wallet", "lines": [line("A", 1, "10.00")]},
        format="json",
    ).json()["id"]
    for order_id in (financed, paid):
        # auth, order with its decision and plan, lines, disputes
        with django_assert_num_queries(4):
            assert customer_api.get(f"/api/v1/orders/{order_id}").status_code == 200
    assert customer_api.get(f"/api/v1/orders/{paid}").json()["credit_decision"] is None
    assert customer_api.get(f"/api/v1/orders/{financed}").json()["total"] == money("300.00")


# --- a lending partner decides ----------------------------------------------------------


@pytest.fixture
def partner(sandbox, live_server, eager, web_channel):
    """A lending partner in the sandbox that notifies the live app, and its product."""
    now = clock.now()
    account = ProviderAccount.objects.create(
        provider=Provider.LENDING_PARTNER,
        enabled=True,
        base_url=f"{sandbox}/partner",
        credentials_encrypted=crypto.encrypt({"secret": "pk_test_partner"}),
        currency="EUR",
        created_at=now,
        updated_at=now,
    )
    secret = provider_webhook_secret_rotate(account_id=account.pk)
    requests.post(
        f"{sandbox}/partner/sandbox/config",
        json={
            "webhook_url": f"{live_server.url}/webhooks/lending_partner/",
            "webhook_secret": secret,
        },
        timeout=5,
    )
    make_product(
        code="partner-12", installment_count=12, decider="partner", partner_account=account
    )
    account.secret = secret
    return account


def partner_customer(email: str):
    customer = approve_kyc(make_customer(email=email))
    saved_card(customer, "pm_card_ok")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(customer)}")
    return customer, client


def test_a_partner_approval_creates_a_partner_funded_plan_on_its_terms(
    partner, sandbox, stock, seen
):
    stock("A", 10)
    customer, client = partner_customer("pia@example.com")
    provider_before = balance(PROVIDER)
    merchant_before = balance(MERCHANT)
    body = checkout(client, "600.00", product="partner-12").json()
    order = Order.objects.get(pk=body["id"])
    plan = Plan.objects.get(reference_id=str(order.pk))
    assert body["status"] == "confirmed"
    assert body["credit_decision"]["decided_by"] == "partner"
    [sent] = requests.get(f"{sandbox}/partner/sandbox/applications", timeout=5).json()["data"]
    assert (plan.funded_by, plan.partner_reference) == ("partner", sent["id"])
    assert plan.terms["apr"] == sent["terms"]["apr"]
    assert plan.terms["installment_count"] == sent["terms"]["installment_count"]
    assert plan.down_payment == 0
    count = plan.terms["installment_count"]
    assert plan.debit_requests.count() == count
    assert sum(plan.installments.values_list("principal", flat=True)) == 60_000
    # The partner pays the merchant; the customer owes us (and we owe the partner).
    assert balance(MERCHANT) - merchant_before == 60_000
    assert balance(PROVIDER) == provider_before
    assert owed(customer) == 60_000
    assert reservation_states(order.pk) == [ReservationStatus.ACTIVE]
    assert ("order_hold_released", order.pk) in seen


def test_a_partner_decline_cancels_the_order_with_the_partners_reasons(partner, stock, seen):
    stock("A", 10)
    customer, client = partner_customer("dan+decline@example.com")
    body = checkout(client, "600.00", product="partner-12").json()
    assert body["status"] == "cancelled"
    assert [r["code"] for r in body["credit_decision"]["reasons"]] == [
        "insufficient_credit_history"
    ]
    assert body["cancel_reason"] == "Credit declined (insufficient_credit_history)"
    assert reserved() == 0
    assert not Plan.objects.exists()
    assert owed(customer) == 0


def test_a_partner_referral_waits_on_hold_until_the_signed_webhook_approves(
    partner, sandbox, stock, seen
):
    stock("A", 10)
    customer, client = partner_customer("rex+refer@example.com")
    body = checkout(client, "600.00", product="partner-12").json()
    order_id = body["id"]
    assert (body["status"], body["credit_decision"]["status"]) == ("on_hold", "referred")
    assert reserved() == 1
    assert not Plan.objects.exists()

    [sent] = requests.get(f"{sandbox}/partner/sandbox/applications", timeout=5).json()["data"]
    decided = requests.post(
        f"{sandbox}/partner/sandbox/applications/{sent['id']}/decide",
        json={"decision": "approve"},
        timeout=15,
    ).json()
    assert decided["webhook_status"] == 200, decided
    order = Order.objects.get(pk=order_id)
    plan = Plan.objects.get(reference_id=str(order_id))
    assert order.status == OrderStatus.CONFIRMED
    assert (plan.funded_by, plan.partner_reference) == ("partner", sent["id"])
    assert plan.debit_requests.count() == plan.terms["installment_count"]
    assert owed(customer) == 60_000
    assert ("order_hold_released", order_id) in seen
    polled = client.get(f"/api/v1/orders/{order_id}").json()
    assert (polled["status"], polled["credit_decision"]["plan"]) == ("confirmed", plan.pk)

    # The same notification again changes nothing.
    requests.post(
        f"{sandbox}/partner/sandbox/applications/{sent['id']}/redeliver", timeout=15
    ).json()
    assert Plan.objects.count() == 1
    assert seen.count(("order_hold_released", order_id)) == 1


# --- the admin's review queue -------------------------------------------------------


@pytest.mark.usefixtures("customer_cards")
def test_the_admin_review_queue_lists_reviews_and_staff_decline_cancels_the_order(
    borrower, customer_api, stock, product, card_processor, admin_client, admin_user, seen
):
    stock("A", 10)
    held = checkout(customer_api, "1000.00").json()
    approved = checkout(customer_api, "100.00").json()  # decided at once, not in the queue
    application_id = held["credit_decision"]["application"]
    url = reverse("admin:bnpl_creditapplication_changelist")

    queue = admin_client.get(url)
    assert queue.status_code == 200
    assert list(queue.context["cl"].result_list.values_list("id", flat=True)) == [application_id]
    everything = admin_client.get(url, {"queue": "all"})
    assert everything.context["cl"].result_count == 2
    detail = admin_client.get(reverse("admin:bnpl_creditapplication_change", args=[application_id]))
    assert b"new_account_large_order" in detail.content
    assert b"Score 600" in detail.content
    assert "account_age_days: 0 → +0".encode() in detail.content

    admin_client.post(
        url,
        {
            "action": "decline_applications",
            "_selected_action": [application_id, approved["credit_decision"]["application"]],
            "note": "Could not verify the address",
        },
    )
    order = Order.objects.get(pk=held["id"])
    application = CreditApplication.objects.get(pk=application_id)
    assert (application.status, application.reviewer) == (ApplicationStatus.DECLINED, admin_user)
    assert application.reasons[-1] == {
        "code": "staff_declined",
        "message": "Could not verify the address",
    }
    assert order.status == OrderStatus.CANCELLED
    # The customer is told a risk check failed, not the signal nor the reviewer's note.
    assert order.cancel_reason == "Credit declined (risk_check)"
    polled = customer_api.get(f"/api/v1/orders/{order.pk}").json()
    assert polled["credit_decision"]["reasons"] == [
        {"code": "risk_check", "message": "The application did not pass our risk checks."}
    ]
    assert "address" not in str(polled)
    assert reservation_states(order.pk) == [ReservationStatus.RELEASED]
    assert AuditEntry.objects.filter(
        action="bnpl.application_reviewed", target_id=str(application_id), actor=admin_user
    ).exists()
    # The approved one was not in review: refused, unchanged.
    assert Order.objects.get(pk=approved["id"]).status == OrderStatus.CONFIRMED
    assert (
        "plan_declined",
        str(order.pk),
        ["new_account_large_order", "staff_declined"],
    ) in seen


@pytest.mark.usefixtures("customer_cards")
def test_the_admin_approve_action_releases_the_hold(
    borrower, customer_api, stock, product, card_processor, admin_client
):
    stock("A", 10)
    held = checkout(customer_api, "1000.00").json()
    admin_client.post(
        reverse("admin:bnpl_creditapplication_changelist"),
        {
            "action": "approve_applications",
            "_selected_action": [held["credit_decision"]["application"]],
        },
    )
    assert Order.objects.get(pk=held["id"]).status == OrderStatus.CONFIRMED
    assert Plan.objects.filter(reference_id=str(held["id"])).exists()


def test_a_partner_referral_declined_by_the_signed_webhook_cancels_the_order(
    partner, sandbox, stock, seen
):
    stock("A", 10)
    customer, client = partner_customer("ria+refer@example.com")
    order_id = checkout(client, "600.00", product="partner-12").json()["id"]
    [sent] = requests.get(f"{sandbox}/partner/sandbox/applications", timeout=5).json()["data"]
    decided = requests.post(
        f"{sandbox}/partner/sandbox/applications/{sent['id']}/decide",
        json={"decision": "decline"},
        timeout=15,
    ).json()
    assert decided["webhook_status"] == 200, decided
    order = Order.objects.get(pk=order_id)
    assert order.status == OrderStatus.CANCELLED
    assert order.cancel_reason == "Credit declined (affordability)"
    assert order.credit_application.decided_by == "partner"
    assert reservation_states(order_id) == [ReservationStatus.RELEASED]
    assert not Plan.objects.exists()
    assert owed(customer) == 0
    assert ("plan_declined", str(order_id), ["affordability"]) in seen


@pytest.mark.usefixtures("customer_cards")
def test_an_application_left_undecided_by_a_crash_is_decided_by_the_periodic_job(
    borrower, stock, product, card_processor, web_channel, eager, seen
):
    """The hold committed, then the process died before deciding: the job decides it."""
    stock("A", 10)
    lines = [
        LineInput(
            sku="A", name="A", quantity=1, unit_price=Money.parse("100.00", "EUR"),
            tax=Money.zero("EUR"),
        )
    ]  # fmt: skip
    quote = quote_product(
        customer=borrower, product=product, amount=lines[0].total, merchant_categories=[]
    )
    order = oms_services._hold_for_credit(
        customer=borrower,
        channel=web_channel,
        lines=lines,
        total=lines[0].total,
        quote=quote,
        card_payment_method="pm_card_ok",
        external_reference=None,
        renewal_of=None,
        actor=None,
        idempotency=None,
    )
    assert expire_applications() == {"expire": 0, "decide": 0}  # may be in flight
    with clock.travel(timedelta(minutes=6)):
        assert expire_applications() == {"expire": 0, "decide": 1}
    order = Order.objects.get(pk=order.pk)
    assert order.status == OrderStatus.CONFIRMED
    assert order.credit_application.status == ApplicationStatus.APPROVED
    assert Plan.objects.get(reference_id=str(order.pk)).installments.get(number=0).status == (
        InstallmentStatus.PAID
    )
    assert ("order_hold_released", order.pk) in seen


@pytest.mark.usefixtures("customer_cards")
def test_a_retry_with_the_same_idempotency_key_places_one_order_and_one_application(
    borrower, customer_api, stock, product, card_processor, sandbox
):
    stock("A", 10)
    body = {
        "payment_method": "installments",
        "plan_product": "pay-in-3",
        "card_payment_method": "pm_card_ok",
        "lines": [line("A", 1, "300.00")],
    }
    first = customer_api.post("/api/v1/orders", body, format="json", HTTP_IDEMPOTENCY_KEY="i-1")
    again = customer_api.post("/api/v1/orders", body, format="json", HTTP_IDEMPOTENCY_KEY="i-1")
    assert first.status_code == again.status_code == 201
    assert first.json()["status"] == "confirmed"
    # The key was completed when the order was placed: the replay shows that snapshot.
    assert (again.json()["id"], again.json()["status"]) == (first.json()["id"], "on_hold")
    assert again.headers["Idempotent-Replayed"] == "true"
    assert (Order.objects.count(), CreditApplication.objects.count(), Plan.objects.count()) == (
        1,
        1,
        1,
    )
    assert len(requests.get(f"{sandbox}/sandbox/charges", timeout=5).json()["data"]) == 1


@pytest.mark.usefixtures("customer_cards")
def test_installments_behind_kyc_refuse_a_pending_customer_before_anything_is_written(
    customer, customer_api, stock, product, card_processor, admin_user, unchanged_db
):
    stock("A", 10)
    kyc_requirement_set(feature=Feature.INSTALLMENTS, required=True, actor=admin_user)
    check = unchanged_db()
    response = checkout(customer_api, "300.00")
    assert (response.status_code, response.json()["error"]["code"]) == (
        403,
        "customers.kyc_required",
    )
    check()


@pytest.mark.usefixtures("customer_cards")
def test_a_channel_cannot_open_a_plan_in_a_customers_name(
    borrower, stock, product, card_processor, unchanged_db
):
    stock("A", 10)
    _, key = channel_with_key("shop-app", ChannelKind.APP)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}", HTTP_X_CUSTOMER_ID=str(borrower.pk))
    check = unchanged_db()

    response = checkout(client, "300.00")

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "oms.installments_in_person"
    check()


@pytest.mark.usefixtures("customer_cards")
def test_a_down_payment_rejected_after_a_card_review_cancels_the_plan_and_the_order(
    borrower, customer_api, stock, product, card_processor, sandbox, live_server, eager, seen
):
    stock("A", 10)
    secret = provider_webhook_secret_rotate(account_id=card_processor.pk)
    requests.post(
        f"{sandbox}/sandbox/config",
        json={"webhook_url": f"{live_server.url}/webhooks/card/", "webhook_secret": secret},
        timeout=5,
    )
    body = checkout(customer_api, "300.00", card="pm_review").json()
    order_id = body["id"]
    assert body["status"] == "confirmed"  # credit approved; the card is under review
    plan = Plan.objects.get(reference_id=str(order_id))
    assert plan.installments.get(number=0).status == InstallmentStatus.SCHEDULED
    assert settle_down_payments() == 0  # too young to look at

    [charge] = requests.get(f"{sandbox}/sandbox/charges", timeout=5).json()["data"]
    reviewed = requests.post(
        f"{sandbox}/sandbox/charges/{charge['id']}/review",
        json={"decision": "reject"},
        timeout=15,
    ).json()
    assert reviewed["webhook_status"] == 200, reviewed
    with clock.travel(timedelta(minutes=16)):
        assert settle_down_payments() == 1
        assert settle_down_payments() == 0  # settled: nothing left to look at
    order = Order.objects.get(pk=order_id)
    assert order.status == OrderStatus.CANCELLED
    assert order.cancel_reason.startswith("Down payment declined")
    assert Plan.objects.get(pk=plan.pk).status == PlanStatus.CANCELLED
    assert reservation_states(order_id) == [ReservationStatus.RELEASED]
    assert owed(borrower) == 0
    assert ("order_cancelled", order_id, order.cancel_reason) in seen


@pytest.mark.usefixtures("customer_cards")
def test_a_financed_order_ships_without_a_capture(
    borrower, customer_api, stock, product, card_processor, sandbox
):
    stock("A", 10)
    order_id = checkout(customer_api, "300.00").json()["id"]
    order_fulfil(order_id=order_id)
    assert Order.objects.get(pk=order_id).status == OrderStatus.FULFILLED
    assert reservation_states(order_id) == [ReservationStatus.CONSUMED]
    assert StockItem.objects.get(sku="A").on_hand == 9
    [charge] = requests.get(f"{sandbox}/sandbox/charges", timeout=5).json()["data"]
    assert charge["amount"] == 7_500  # only the down payment was ever charged


def _installment_checkout_queries(client, lines: int) -> int:
    body = {
        "payment_method": "installments",
        "plan_product": "pay-in-3",
        "card_payment_method": "pm_card_ok",
        "lines": [line(f"SKU-{i}", 1, "5.00") for i in range(lines)],
    }
    with CaptureQueriesContext(connection) as ctx:
        response = client.post("/api/v1/orders", body, format="json")
    assert response.json()["status"] == "confirmed", response.json()
    return len(ctx.captured_queries)


@pytest.mark.usefixtures("customer_cards")
def test_installment_checkout_queries_do_not_grow_with_lines(
    borrower, customer_api, stock, product, card_processor, settings
):
    settings.BNPL_HISTORY_MULTIPLIER = 100  # repeated orders: no risk signal
    settings.BNPL_VELOCITY_MAX_24H = 100
    for i in range(20):
        stock(f"SKU-{i}", 10)
    _installment_checkout_queries(customer_api, 2)  # warm up: system accounts on first use
    one = _installment_checkout_queries(customer_api, 2)
    assert _installment_checkout_queries(customer_api, 20) == one


def test_a_partner_that_does_not_answer_keeps_the_order_on_hold_until_the_timeout(
    web_channel, stock, eager, seen
):
    stock("A", 10)
    now = clock.now()
    down = ProviderAccount.objects.create(
        provider=Provider.LENDING_PARTNER,
        enabled=True,
        base_url="http://127.0.0.1:9/partner",  # nothing listens
        credentials_encrypted=crypto.encrypt({"secret": "pk_test_partner"}),
        currency="EUR",
        created_at=now,
        updated_at=now,
    )
    make_product(code="partner-12", installment_count=12, decider="partner", partner_account=down)
    customer, client = partner_customer("olga@example.com")
    body = checkout(client, "600.00", product="partner-12").json()
    assert (body["status"], body["credit_decision"]["status"]) == ("on_hold", "pending")
    assert reserved() == 1

    with clock.travel(timedelta(hours=24, minutes=1)):
        assert expire_applications()["expire"] == 1
    order = Order.objects.get(pk=body["id"])
    assert (order.status, order.cancel_reason) == (
        OrderStatus.CANCELLED,
        "No credit decision in time",
    )
    assert order.credit_application.status == ApplicationStatus.EXPIRED
    assert reserved() == 0
    assert not Plan.objects.exists()
    assert owed(customer) == 0


def test_an_opted_in_customer_gets_due_dates_after_their_income_days(
    web_channel, stock, card_processor
):
    def at(day: date) -> datetime:
        return datetime.combine(day, time(12), tzinfo=clock.business_tz())

    stock("A", 10)
    make_product(code="aligned-3", down_payment="first_installment", cash_flow_aware=True)
    with clock.travel_to(at(date(2026, 7, 1))):
        customer = approve_kyc(make_customer())
        saved_card(customer, "pm_card_ok")
    for day in (date(2026, 8, 15), date(2026, 9, 15), date(2026, 10, 15)):
        with clock.travel_to(at(day)):
            fund(customer, "100.00")
    borrower_income_aligned_set(customer=customer, enabled=True)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(customer)}")
    with clock.travel_to(at(date(2026, 11, 1))):
        body = checkout(client, "300.00", product="aligned-3").json()
    assert body["status"] == "confirmed", body
    plan = Plan.objects.get(pk=body["credit_decision"]["plan"])
    # Line 1 was charged at checkout; lines 2 and 3 fall the day after the income day.
    assert list(plan.installments.order_by("number").values_list("due_date", flat=True)) == [
        date(2026, 11, 1),
        date(2026, 12, 16),
        date(2027, 1, 16),
    ]
    assert list(
        plan.debit_requests.order_by("installment__number").values_list(
            "next_attempt_at", flat=True
        )
    ) == [due_moment(date(2026, 12, 16)), due_moment(date(2027, 1, 16))]


# --- an application that ends while the partner has it ------------------------------------


def partner_applications(sandbox) -> list[dict]:
    return requests.get(f"{sandbox}/partner/sandbox/applications", timeout=5).json()["data"]


def partner_decide(sandbox, partner_id: str, decision: str = "approve") -> requests.Response:
    return requests.post(
        f"{sandbox}/partner/sandbox/applications/{partner_id}/decide",
        json={"decision": decision},
        timeout=15,
    )


def signed_approval(live_server, partner, application: dict, event_id: str) -> int:
    """A validly signed approval for ``application``, POSTed to the live app."""
    event = {
        "id": event_id,
        "type": "application.approved",
        "data": {
            **application,
            "status": "approved",
            "terms": {
                "installment_count": 12,
                "frequency": "monthly",
                "apr": "19.99",
                "fees": {"origination": 600, "per_installment": 99},
            },
            "funding": {"amount": 60_000, "status": "funded"},
        },
    }
    body = json.dumps(event).encode()
    return requests.post(
        f"{live_server.url}/webhooks/lending_partner/",
        data=body,
        headers={
            "Content-Type": "application/json",
            "Webhook-Signature": signature_header(partner.secret, body),
        },
        timeout=15,
    ).status_code


def open_breaker() -> reliability.CircuitBreaker:
    breaker = reliability.breaker_for(Provider.LENDING_PARTNER)
    for _ in range(breaker.failure_threshold):
        breaker._after(ok=False)
    return breaker


def test_cancelling_an_order_referred_to_the_partner_cancels_it_there(
    partner, sandbox, stock, seen, live_server
):
    stock("A", 10)
    customer, client = partner_customer("wes+refer@example.com")
    order_id = checkout(client, "600.00", product="partner-12").json()["id"]
    merchant_before = balance(MERCHANT)

    cancelled = client.post(f"/api/v1/orders/{order_id}/cancel", {}, format="json").json()

    assert (cancelled["status"], cancelled["credit_decision"]["status"]) == (
        "cancelled",
        "cancelled",
    )
    [sent] = partner_applications(sandbox)
    assert sent["status"] == "cancelled"
    record = PartnerApplicationRecord.objects.get()
    assert (record.status, record.cancel_state) == ("cancelled", "cancelled")
    # The partner cannot decide it any more; an approval notified anyway changes nothing.
    assert partner_decide(sandbox, sent["id"]).status_code == 409
    assert signed_approval(live_server, partner, sent, "evt_after_withdraw") == 200
    record.refresh_from_db()
    assert record.status == "cancelled"
    assert [r["decision"] for r in record.ignored_reports] == ["approved"]
    assert not Plan.objects.exists()
    assert Order.objects.get(pk=order_id).status == OrderStatus.CANCELLED
    assert balance(MERCHANT) == merchant_before
    assert owed(customer) == 0


def test_an_expired_referral_is_cancelled_at_the_partner(partner, sandbox, stock, seen):
    stock("A", 10)
    customer, client = partner_customer("eva+refer@example.com")
    order_id = checkout(client, "600.00", product="partner-12").json()["id"]

    with clock.travel(timedelta(hours=24, minutes=1)):
        assert expire_applications()["expire"] == 1

    order = Order.objects.get(pk=order_id)
    assert (order.status, order.credit_application.status) == (OrderStatus.CANCELLED, "expired")
    [sent] = partner_applications(sandbox)
    assert sent["status"] == "cancelled"
    assert "timed out" in sent["cancel_reason"]
    assert partner_decide(sandbox, sent["id"]).status_code == 409
    assert PartnerApplicationRecord.objects.get().status == "cancelled"
    assert not Plan.objects.exists()
    assert owed(customer) == 0


def test_a_partner_approval_after_the_expiry_is_cancelled_at_the_partner(
    partner, sandbox, stock, seen
):
    stock("A", 10)
    customer, client = partner_customer("lou+refer@example.com")
    order_id = checkout(client, "600.00", product="partner-12").json()["id"]
    merchant_before = balance(MERCHANT)
    breaker = open_breaker()  # the cancel sent at expiry does not get through
    with clock.travel(timedelta(hours=24, minutes=1)):
        assert expire_applications()["expire"] == 1
    assert PartnerApplicationRecord.objects.get().cancel_state == "requested"
    breaker._after(ok=True)
    [sent] = partner_applications(sandbox)

    decided = partner_decide(sandbox, sent["id"]).json()

    assert decided["webhook_status"] == 200, decided
    [sent] = partner_applications(sandbox)
    assert (sent["status"], sent["funding"]["status"]) == ("cancelled", "reversed")
    record = PartnerApplicationRecord.objects.get()
    assert (record.status, record.cancel_state, record.funded_without_plan) == (
        "cancelled",
        "cancelled",
        False,
    )
    application = Order.objects.get(pk=order_id).credit_application
    assert application.status == ApplicationStatus.EXPIRED
    assert AuditEntry.objects.filter(
        action="bnpl.partner_decision_ignored", target_id=str(application.pk)
    ).exists()
    assert not AuditEntry.objects.filter(action="bnpl.partner_funded_without_plan").exists()
    assert not Plan.objects.exists()
    assert balance(MERCHANT) == merchant_before
    assert owed(customer) == 0


def test_a_partner_that_funded_and_refuses_to_cancel_is_flagged_for_finance(
    partner, sandbox, stock, seen
):
    stock("A", 10)
    requests.post(
        f"{sandbox}/partner/sandbox/config", json={"refuse_cancel_funded": True}, timeout=5
    )
    customer, client = partner_customer("kim+refer@example.com")
    order_id = checkout(client, "600.00", product="partner-12").json()["id"]
    merchant_before = balance(MERCHANT)
    breaker = open_breaker()
    client.post(f"/api/v1/orders/{order_id}/cancel", {}, format="json")
    breaker._after(ok=True)
    [sent] = partner_applications(sandbox)

    decided = partner_decide(sandbox, sent["id"]).json()

    assert decided["webhook_status"] == 200, decided
    [sent] = partner_applications(sandbox)
    assert (sent["status"], sent["funding"]["status"]) == ("approved", "funded")
    record = PartnerApplicationRecord.objects.get()
    assert (record.status, record.cancel_state) == ("approved", "refused")
    assert record.funded_without_plan
    assert record.flagged
    application = Order.objects.get(pk=order_id).credit_application
    [flag] = AuditEntry.objects.filter(action="bnpl.partner_funded_without_plan")
    assert flag.target_id == str(application.pk)
    assert (flag.changes["funded_amount"], flag.changes["partner_reference"]) == (
        60_000,
        sent["id"],
    )
    # Sent again (the notification redelivered, the task rerun): audited once.
    requests.post(f"{sandbox}/partner/sandbox/applications/{sent['id']}/redeliver", timeout=15)
    cancel_partner_application(application.pk, "again")
    assert AuditEntry.objects.filter(action="bnpl.partner_funded_without_plan").count() == 1
    # No plan and no ledger entry stand for the partner's funding.
    assert not Plan.objects.exists()
    assert balance(MERCHANT) == merchant_before
    assert owed(customer) == 0
    assert Order.objects.get(pk=order_id).status == OrderStatus.CANCELLED
