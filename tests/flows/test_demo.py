"""``make run``'s demo data: seeded once, and every payment method works with it.

The README's demo section names the tokens used here; the payment sandbox stands where
``make run`` starts it.
"""

from __future__ import annotations

import io

import pytest
import requests
from celery import current_app
from django.core.management import call_command
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from payments.models import Provider, ProviderAccount
from tests.factories import line, money

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def eager():
    """Tasks run at once, as make run's worker would run them soon after."""
    previous = current_app.conf.task_always_eager
    current_app.conf.task_always_eager = True
    yield
    current_app.conf.task_always_eager = previous


@pytest.fixture
def demo(sandbox, monkeypatch):
    """The demo data against this test's sandbox; alice's storefront client."""
    monkeypatch.setenv("PAYMENT_SANDBOX_URL", sandbox)
    call_command("seed_demo", stdout=io.StringIO())
    client = APIClient()
    token = Token.objects.get(user__username="alice@example.com")
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


def place(client: APIClient, method: str, sku: str, price: str, **payment) -> dict:
    response = client.post(
        "/api/v1/orders",
        {"payment_method": method, "lines": [line(sku, 1, price)], **payment},
        format="json",
    )
    assert response.status_code == 201, response.json()
    return response.json()


def test_seeding_again_changes_nothing_and_every_provider_has_one_sandbox_account(
    demo, sandbox, unchanged_db
):
    check = unchanged_db()
    call_command("seed_demo", stdout=io.StringIO())
    check()
    accounts = ProviderAccount.objects.values_list("provider", "enabled", "base_url")
    assert sorted(accounts) == sorted(
        [
            (Provider.CARD, True, f"{sandbox}/card"),
            (Provider.KLARNA, True, f"{sandbox}/klarna"),
            (Provider.AFTERPAY, True, f"{sandbox}/afterpay"),
            (Provider.LENDING_PARTNER, True, f"{sandbox}/partner"),
        ]
    )


def test_klarna_and_afterpay_checkouts_work_with_the_demo_data(demo, sandbox):
    klarna = place(demo, "klarna", "SNEAKER-WHT-42", "89.00", authorization_token="tok_demo")
    assert klarna["status"] == "confirmed"
    # Afterpay's token comes from a checkout made at the sandbox with the demo credentials.
    checkout = requests.post(
        f"{sandbox}/afterpay/v2/checkouts",
        json={"amount": money("59.00"), "merchantReference": "demo-cart"},
        auth=("demo", "ap_demo_sandbox"),
        timeout=5,
    )
    assert checkout.status_code == 201, checkout.json()
    afterpay = place(
        demo, "afterpay", "HOODIE-GRY-L", "59.00", authorization_token=checkout.json()["token"]
    )
    assert afterpay["status"] == "confirmed"


def test_the_wallet_split_and_installment_payments_work_with_the_demo_data(demo):
    assert place(demo, "wallet", "MUG-LOGO", "12.00")["status"] == "confirmed"
    split = place(
        demo, "wallet_card", "SNEAKER-WHT-42", "600.00", card_payment_method="pm_card_visa"
    )
    assert split["status"] == "confirmed"
    financed = place(
        demo,
        "installments",
        "HOODIE-GRY-L",
        "90.00",
        plan_product="pay-in-3",
        card_payment_method="pm_card_visa",
    )
    assert (financed["status"], financed["credit_decision"]["status"]) == (
        "confirmed",
        "approved",
    )
    assert demo.get("/api/v1/wallet").json()["wallets"][0]["balance"] == money("0.00")
