from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from rest_framework.test import APIClient

from core import clock
from customers.models import Feature, KycRequirement
from ledger.models import JournalEntry
from oms.models import ChannelKind, Order, OrderStatus
from tests.factories import (
    approve_kyc,
    channel_with_key,
    enable_wallet_bnpl,
    fund,
    line,
    make_customer,
    money,
    token_for,
)
from tests.wallet.conftest import receivable_matches_debts
from wallet import signals
from wallet.models import (
    BnplCustomerProfile,
    BnplWhitelistEntry,
    DebtStatus,
    EligibilityMode,
    Wallet,
    WalletDebt,
)

pytestmark = pytest.mark.django_db


def client_for(customer) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(customer)}")
    return client


def buy(customer, price: str, client=None, **extra):
    client = client or client_for(customer)
    return client.post(
        "/api/v1/orders",
        {"payment_method": "wallet", "lines": [line("ITEM", 1, price)], **extra},
        format="json",
    )


def test_short_balance_becomes_a_debt_and_the_order_is_confirmed(
    bnpl, approved, django_capture_on_commit_callbacks
):
    fund(approved, "30.00")
    created = []
    signals.debt_created.connect(
        lambda sender, debt, **kw: created.append(debt.pk), weak=False, dispatch_uid="t1"
    )
    try:
        with django_capture_on_commit_callbacks(execute=True):
            response = buy(approved, "100.00")
    finally:
        signals.debt_created.disconnect(dispatch_uid="t1")
    assert response.status_code == 201, response.json()
    order = Order.objects.get(pk=response.json()["id"])
    assert order.status == OrderStatus.CONFIRMED
    wallet = Wallet.objects.get(customer=approved)
    assert wallet.balance.minor == 0
    debt = WalletDebt.objects.get()
    assert (debt.principal, debt.status, debt.reference_id) == (
        7000,
        DebtStatus.OUTSTANDING,
        str(order.pk),
    )
    assert debt.due_date == clock.business_date() + timedelta(days=30)
    entry = JournalEntry.objects.get(kind="wallet.bnpl_checkout")
    legs = {p.account.code: p.amount for p in entry.postings.select_related("account")}
    assert legs == {
        f"wallet:{approved.pk}:EUR": 3000,
        f"bnpl:{approved.pk}:EUR": 7000,
        "merchant:EUR": -10000,
    }
    assert created == [debt.pk]
    receivable_matches_debts(approved)


def refusal(response) -> dict[str, str]:
    assert response.status_code == 422, response.json()
    error = response.json()["error"]
    assert error["code"] == "wallet.insufficient_balance"
    assert error["options"] in (["top_up"], ["top_up", "wallet_card"])
    return {r["code"]: r["message"] for r in error["bnpl_reasons"]}


def test_every_refusal_reason_is_named_with_numbers_and_nothing_is_written(
    web_channel, stock, unchanged_db
):
    stock("ITEM", 10)
    enable_wallet_bnpl(
        enabled=False,
        eligibility_mode=EligibilityMode.WHITELIST,
        min_order=20000,
        max_debt_per_user=5000,
    )
    customer = make_customer()
    BnplCustomerProfile.objects.create(customer=customer, auto_deduct=False)
    KycRequirement.objects.create(feature=Feature.WALLET_BNPL, created_at=clock.now())
    fund(customer, "40.00")
    client = client_for(customer)
    check = unchanged_db()
    reasons = refusal(buy(customer, "100.00", client=client))
    check()
    assert reasons == {
        "bnpl_disabled": "Wallet BNPL is switched off.",
        "not_whitelisted": "The customer is not on the BNPL whitelist.",
        "kyc_required": "Wallet BNPL requires an approved KYC; this KYC is pending.",
        "below_min_order": "The cart (100.00 EUR) is below the BNPL minimum (200.00 EUR).",
        "cap_exceeded": "Existing debt 0.00 EUR + new 60.00 EUR = 60.00 EUR exceeds the limit "
        "50.00 EUR.",
        "auto_deduct_opted_out": "The customer opted out of automatic repayment from wallet "
        "credits.",
    }


def test_role_mode_admits_members_of_listed_groups(bnpl, approved):
    enable_wallet_bnpl(eligibility_mode=EligibilityMode.ROLE)
    assert "role_not_eligible" in refusal(buy(approved, "10.00"))
    staff = Group.objects.create(name="vip")
    from wallet.bnpl import bnpl_settings

    bnpl_settings().eligible_roles.add(staff)
    approved.user.groups.add(staff)
    assert buy(approved, "10.00").status_code == 201


def test_pilot_five_whitelisted_customers_with_a_cap_of_500(bnpl):
    enable_wallet_bnpl(eligibility_mode=EligibilityMode.WHITELIST, max_debt_per_user=50000)
    pilot = [approve_kyc(make_customer()) for _ in range(5)]
    outsider = approve_kyc(make_customer())
    for customer in pilot:
        BnplWhitelistEntry.objects.create(user=customer.user, added_at=clock.now())
    for customer in pilot:
        assert buy(customer, "300.00").status_code == 201
        assert buy(customer, "200.00").status_code == 201  # exactly at the cap
        reasons = refusal(buy(customer, "0.01"))
        assert reasons == {
            "cap_exceeded": "Existing debt 500.00 EUR + new 0.01 EUR = 500.01 EUR "
            "exceeds the limit 500.00 EUR."
        }
    assert refusal(buy(outsider, "10.00")) == {
        "not_whitelisted": "The customer is not on the BNPL whitelist."
    }
    assert WalletDebt.objects.count() == 10


def test_per_customer_cap_override(bnpl, approved):
    enable_wallet_bnpl(max_debt_per_user=10000)
    BnplCustomerProfile.objects.create(customer=approved, max_debt_override=30000)
    assert buy(approved, "250.00").status_code == 201


def test_switching_to_all_kyc_approved_admits_newly_approved_customers_at_once(bnpl):
    enable_wallet_bnpl(eligibility_mode=EligibilityMode.WHITELIST)
    customer = make_customer()
    assert "not_whitelisted" in refusal(buy(customer, "10.00"))
    enable_wallet_bnpl(eligibility_mode=EligibilityMode.ALL_KYC_APPROVED)
    assert set(refusal(buy(customer, "10.00"))) == {"kyc_not_approved"}
    approve_kyc(customer)
    assert buy(customer, "10.00").status_code == 201


def test_below_min_order_skips_bnpl(bnpl, approved):
    enable_wallet_bnpl(min_order=10000)
    assert refusal(buy(approved, "99.99")) == {
        "below_min_order": "The cart (99.99 EUR) is below the BNPL minimum (100.00 EUR)."
    }


def test_eligibility_policy_hook_can_refuse_a_cart(bnpl, approved, settings):
    settings.WALLET_BNPL_ELIGIBILITY_FILTERS = ["tests.wallet.test_bnpl_checkout.no_big_carts"]
    assert refusal(buy(approved, "60.00")) == {"policy": "No BNPL above 50.00 EUR"}
    assert buy(approved, "50.00").status_code == 201


def no_big_carts(customer, amount):
    return "No BNPL above 50.00 EUR" if amount.minor > 5000 else None


def test_max_debt_policy_hook(bnpl, approved, settings):
    settings.WALLET_BNPL_MAX_DEBT_POLICY = "tests.wallet.test_bnpl_checkout.tier_cap"
    assert "cap_exceeded" in refusal(buy(approved, "20.01"))
    assert buy(approved, "20.00").status_code == 201


def tier_cap(customer, conf):
    return 2000


def test_subscription_renewal_may_use_wallet_bnpl_via_the_channel_key(bnpl, approved):
    _, key = channel_with_key("subs", ChannelKind.SUBSCRIPTIONS)
    channel = APIClient()
    channel.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}", HTTP_X_CUSTOMER_ID=str(approved.pk))
    first = buy(approved, "10.00", client=channel)
    assert first.status_code == 201
    renewal = buy(approved, "10.00", client=channel, renewal_of=first.json()["id"])
    assert renewal.status_code == 201
    assert renewal.json()["renewal_of"] == first.json()["id"]
    assert WalletDebt.objects.filter(wallet__customer=approved).count() == 2
    # A customer's own token cannot place renewals; another customer's order is a 404.
    own = buy(approved, "10.00", renewal_of=first.json()["id"])
    assert own.status_code == 400
    assert own.json()["error"]["fields"]["renewal_of"]
    stranger = approve_kyc(make_customer())
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}", HTTP_X_CUSTOMER_ID=str(stranger.pk))
    assert buy(stranger, "10.00", client=other, renewal_of=first.json()["id"]).status_code == 404


def test_eligibility_endpoint_explains_the_refusal(bnpl, approved):
    enable_wallet_bnpl(max_debt_per_user=5000)
    fund(approved, "10.00")
    client = client_for(approved)
    body = client.get("/api/v1/wallet/bnpl-eligibility", {"amount": "80.00"}).json()
    assert body["eligible"] is False
    assert body["needs_bnpl"] is True
    assert body["shortfall"] == money("70.00")
    assert body["max_debt"] == money("50.00")
    assert [r["code"] for r in body["reasons"]] == ["cap_exceeded"]
    assert body["options"] == ["top_up"]
    covered = client.get("/api/v1/wallet/bnpl-eligibility", {"amount": "5.00"}).json()
    assert (covered["eligible"], covered["needs_bnpl"]) == (True, False)
    bad = client.get("/api/v1/wallet/bnpl-eligibility", {"amount": "1.001"})
    assert bad.status_code == 400
    assert "amount" in bad.json()["error"]["fields"]


def test_a_refusal_for_the_balance_offers_top_up_or_split_pay(bnpl, approved, card_processor):
    enable_wallet_bnpl(max_debt_per_user=5000)
    fund(approved, "10.00")
    client = client_for(approved)
    refused = buy(approved, "80.00", client=client)
    assert refused.status_code == 422
    assert refused.json()["error"]["options"] == ["top_up", "wallet_card"]
    body = client.get("/api/v1/wallet/bnpl-eligibility", {"amount": "80.00"}).json()
    assert (body["eligible"], body["options"]) == (False, ["top_up", "wallet_card"])


def test_split_pay_is_not_offered_without_a_card_processor(bnpl, approved):
    enable_wallet_bnpl(max_debt_per_user=5000)
    fund(approved, "10.00")
    body = client_for(approved).get("/api/v1/wallet/bnpl-eligibility", {"amount": "80.00"})
    assert body.json()["options"] == ["top_up"]


@pytest.mark.parametrize("amount", ["5.00", "80.00"])  # covered by the balance, or not
def test_eligibility_applies_the_kyc_gate_checkout_applies_and_names_it(
    bnpl, card_processor, amount
):
    customer = make_customer()  # KYC pending
    KycRequirement.objects.create(feature=Feature.WALLET_USAGE, created_at=clock.now())
    enable_wallet_bnpl(eligibility_mode=EligibilityMode.WHITELIST)
    BnplWhitelistEntry.objects.create(user=customer.user, added_at=clock.now())
    fund(customer, "10.00")
    client = client_for(customer)
    body = client.get("/api/v1/wallet/bnpl-eligibility", {"amount": amount}).json()
    refused = buy(customer, amount, client=client)
    assert (refused.status_code, refused.json()["error"]["code"]) == (
        403,
        "customers.kyc_required",
    )
    assert body["eligible"] is False
    assert body["reasons"][0] == {
        "code": "customers.kyc_required",
        "message": refused.json()["error"]["message"],
    }
    assert body["options"] == []


def test_split_pay_is_offered_only_when_the_card_account_serves_the_carts_categories(
    bnpl, approved, card_processor
):
    card_processor.merchant_categories = ["books"]
    card_processor.save(update_fields=["merchant_categories"])
    enable_wallet_bnpl(max_debt_per_user=5000)
    fund(approved, "10.00")
    client = client_for(approved)

    def options(category: str) -> list[str]:
        body = {
            "payment_method": "wallet",
            "lines": [line("ITEM", 1, "80.00", merchant_category=category)],
        }
        refused = client.post("/api/v1/orders", body, format="json")
        assert refused.status_code == 422, refused.json()
        return refused.json()["error"]["options"]

    assert options("electronics") == ["top_up"]
    assert options("books") == ["top_up", "wallet_card"]
