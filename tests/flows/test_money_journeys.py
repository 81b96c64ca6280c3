"""Every way to pay, end to end over real HTTP: the API served by a live server, the
providers by the payment sandbox, staff shipping from the admin.

A wallet, a wallet + card, an installment, a Klarna and an Afterpay checkout each reach
their settled state; a card payment goes toward an installment; a card answer that never
came is settled by ``payments.reconcile_unknown``. Each checks the order, the payment
amounts and the ledger. ``make test-sqlite`` runs these on SQLite too: the embedded default
moves money the way PostgreSQL does.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
import requests
from celery import current_app
from django.test import Client
from django.urls import reverse

from bnpl.models import InstallmentStatus, Plan
from bnpl.services import plan_receivable
from core import clock
from ledger.models import Account, Purpose
from ledger.selectors import ledger_problems
from oms.models import Order, OrderStatus
from payments import crypto
from payments.models import PaymentTransaction, Provider, ProviderAccount
from payments.selectors import payment_amounts
from payments.tasks import reconcile_unknown
from tests.bnpl.factories import make_product
from tests.factories import approve_kyc, line, money, saved_cards, token_for

pytestmark = pytest.mark.django_db(transaction=True)

MERCHANT = f"{Purpose.MERCHANT}:EUR"
GATEWAY = f"{Purpose.GATEWAY_CLEARING}:EUR"
PROVIDER = f"{Purpose.PROVIDER_CLEARING}:EUR"


def balance(code: str) -> int:
    account = Account.objects.filter(code=code).first()
    return account.balance if account else 0


class Storefront:
    """A customer's storefront talking to the live server over HTTP."""

    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"

    def post(self, path: str, body: dict, key: str | None = None) -> requests.Response:
        headers = {"Idempotency-Key": key} if key else {}
        return self.session.post(f"{self.base}{path}", json=body, headers=headers, timeout=30)

    def get(self, path: str) -> dict:
        response = self.session.get(f"{self.base}{path}", timeout=30)
        assert response.status_code == 200, response.text
        return response.json()

    def order(self, method: str, price: str, key: str, **payment) -> dict:
        response = self.post(
            "/api/v1/orders",
            {"payment_method": method, "lines": [line("A", 1, price)], **payment},
            key=key,
        )
        assert response.status_code == 201, response.text
        return response.json()

    def wallet_balance(self) -> str:
        return self.get("/api/v1/wallet")["wallets"][0]["balance"]["amount"]


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


@pytest.fixture(autouse=True)
def eager():
    previous = current_app.conf.task_always_eager
    current_app.conf.task_always_eager = True
    yield
    current_app.conf.task_always_eager = previous


@pytest.fixture
def shop(customer, stock, card_processor, sandbox, live_server) -> Storefront:
    """A KYC-approved customer with 500.00 in the wallet and saved cards; every provider on
    the sandbox."""
    approve_kyc(customer)
    saved_cards(customer, "pm_card", "pm_card_ok", "pm_timeout")
    stock("A", 50)
    provider_account(Provider.KLARNA, f"{sandbox}/klarna")
    provider_account(Provider.AFTERPAY, f"{sandbox}/afterpay")
    return Storefront(live_server.url, token_for(customer))


@pytest.fixture
def staff(admin_user) -> Client:
    client = Client()
    client.force_login(admin_user)
    return client


def ship(staff: Client, order_id: int) -> None:
    """Staff mark the order fulfilled in the admin: provider payments are captured."""
    response = staff.post(
        reverse("admin:oms_order_changelist"),
        {"action": "fulfil_orders", "_selected_action": [order_id]},
    )
    assert response.status_code == 302
    assert Order.objects.get(pk=order_id).status == OrderStatus.FULFILLED


def payment_of(order_id: int, provider: str) -> PaymentTransaction:
    return PaymentTransaction.objects.get(
        reference_type="oms.order", reference_id=str(order_id), account__provider=provider
    )


def sandbox_charges(sandbox: str) -> list[dict]:
    return requests.get(f"{sandbox}/sandbox/charges", timeout=5).json()["data"]


def test_a_wallet_checkout_is_paid_from_the_balance_and_ships(shop, staff):
    merchant = balance(MERCHANT)
    body = shop.order("wallet", "120.00", "journey-wallet")
    assert body["status"] == "confirmed"
    assert shop.wallet_balance() == "380.00"
    assert balance(MERCHANT) - merchant == 12_000
    ship(staff, body["id"])
    assert shop.get(f"/api/v1/orders/{body['id']}")["status"] == "fulfilled"
    assert balance(MERCHANT) - merchant == 12_000


def test_a_wallet_and_card_checkout_takes_the_balance_then_captures_the_card_at_shipping(
    shop, staff, sandbox
):
    merchant = balance(MERCHANT)
    body = shop.order("wallet_card", "650.00", "journey-split", card_payment_method="pm_card")
    assert body["status"] == "confirmed"
    assert shop.wallet_balance() == "0.00"
    card = payment_of(body["id"], Provider.CARD)
    assert payment_amounts(card).authorized.minor == 15_000
    assert balance(MERCHANT) - merchant == 50_000  # the wallet part; the card's at capture
    [charge] = sandbox_charges(sandbox)
    assert (charge["amount"], charge["status"]) == (15_000, "authorized")

    ship(staff, body["id"])
    assert payment_amounts(card).captured.minor == 15_000
    assert sandbox_charges(sandbox)[0]["amount_captured"] == 15_000
    assert balance(MERCHANT) - merchant == 65_000
    assert balance(GATEWAY) == 15_000  # the processor owes it until it pays out


def test_an_installment_checkout_charges_the_down_payment_and_takes_a_card_payment(
    shop, staff, sandbox, customer
):
    make_product(code="pay-in-3", down_payment="percent", down_payment_percent=Decimal(25))
    merchant = balance(MERCHANT)
    body = shop.order(
        "installments",
        "300.00",
        "journey-installments",
        plan_product="pay-in-3",
        card_payment_method="pm_card_ok",
    )
    assert (body["status"], body["credit_decision"]["status"]) == ("confirmed", "approved")
    plan = Plan.objects.get(reference_type="oms.order", reference_id=str(body["id"]))
    assert plan.installments.get(number=0).status == InstallmentStatus.PAID  # 75.00 down
    assert balance(MERCHANT) - merchant == 30_000
    assert plan_receivable(customer_id=customer.pk, currency="EUR").balance == 22_500

    paid = shop.post(
        f"/api/v1/bnpl/plans/{plan.pk}/installments/1/payments",
        {"amount": money("75.00"), "source": "card"},
        key="journey-installment-1",
    )
    assert paid.status_code == 201, paid.text
    assert (paid.json()["status"], paid.json()["source"]) == ("paid", "card")
    assert paid.json()["installment"]["status"] == "paid"
    assert plan.installments.get(number=1).status == InstallmentStatus.PAID
    assert plan_receivable(customer_id=customer.pk, currency="EUR").balance == 15_000
    assert balance(GATEWAY) == 15_000  # the down payment and the installment, captured
    assert sorted(c["amount_captured"] for c in sandbox_charges(sandbox)) == [7_500, 7_500]
    assert shop.wallet_balance() == "500.00"  # a card payment leaves the wallet alone

    ship(staff, body["id"])  # a financed order ships without a capture
    assert balance(MERCHANT) - merchant == 30_000


def test_a_klarna_checkout_is_authorized_then_captured_at_shipping(shop, staff, sandbox):
    merchant = balance(MERCHANT)
    body = shop.order("klarna", "120.00", "journey-klarna", authorization_token="tok_journey")
    assert body["status"] == "confirmed"
    klarna = payment_of(body["id"], Provider.KLARNA)
    assert payment_amounts(klarna).authorized.minor == 12_000
    assert balance(MERCHANT) == merchant

    ship(staff, body["id"])
    assert payment_amounts(klarna).captured.minor == 12_000
    assert balance(MERCHANT) - merchant == 12_000
    assert balance(PROVIDER) == 12_000
    [order] = requests.get(f"{sandbox}/klarna/sandbox/orders", timeout=5).json()["data"]
    assert (order["status"], order["captured_amount"]) == ("CAPTURED", 12_000)


def test_an_afterpay_checkout_is_authorized_then_captured_at_shipping(shop, staff, sandbox):
    token = requests.post(
        f"{sandbox}/afterpay/v2/checkouts",
        json={"amount": money("120.00"), "merchantReference": "cart-1"},
        auth=("merchant-1", "pw"),
        timeout=5,
    ).json()["token"]
    merchant = balance(MERCHANT)
    body = shop.order("afterpay", "120.00", "journey-afterpay", authorization_token=token)
    assert body["status"] == "confirmed"
    afterpay = payment_of(body["id"], Provider.AFTERPAY)
    assert payment_amounts(afterpay).authorized.minor == 12_000

    ship(staff, body["id"])
    assert payment_amounts(afterpay).captured.minor == 12_000
    assert balance(MERCHANT) - merchant == 12_000
    assert balance(PROVIDER) == 12_000
    payments = requests.get(f"{sandbox}/afterpay/sandbox/payments", timeout=5).json()["data"]
    assert [p["paymentState"] for p in payments] == ["CAPTURED"]


def test_a_card_answer_that_never_came_is_settled_by_the_reconciler(shop, staff, sandbox):
    merchant = balance(MERCHANT)
    body = shop.order("wallet_card", "650.00", "journey-timeout", card_payment_method="pm_timeout")
    assert body["status"] == "new"  # the processor has not answered yet
    card = payment_of(body["id"], Provider.CARD)
    assert payment_amounts(card).authorized.minor == 0

    assert reconcile_unknown() == 0  # a call may still be in flight
    with clock.travel(timedelta(minutes=5)):
        assert reconcile_unknown() == 1  # asked the processor by its key
        assert reconcile_unknown() == 0
    assert Order.objects.get(pk=body["id"]).status == OrderStatus.CONFIRMED
    assert payment_amounts(card).authorized.minor == 15_000
    assert [c["amount"] for c in sandbox_charges(sandbox)] == [15_000]  # charged once
    assert shop.wallet_balance() == "0.00"

    ship(staff, body["id"])
    assert payment_amounts(card).captured.minor == 15_000
    assert balance(MERCHANT) - merchant == 65_000
    assert ledger_problems() == []
