"""Saved payment methods: tokenized at the card processor, listed, removed, and accepted
only from their own customer (checkout, a plan's card, extra payments, payoffs)."""

from __future__ import annotations

import pytest
import requests
from rest_framework.test import APIClient

from bnpl.models import CreditApplication, Plan
from core import clock
from core.models import AuditEntry
from oms.models import ChannelKind, Order
from payments import methods
from payments.models import SavedPaymentMethod
from tests.bnpl.factories import make_application, make_plan, make_product
from tests.factories import (
    approve_kyc,
    channel_with_key,
    line,
    make_customer,
    money,
    saved_card,
    saved_cards,
    token_for,
)
from wallet.models import Wallet

pytestmark = pytest.mark.django_db

# A test card number, split so no data file holds it whole (tests/payments/
# test_no_card_numbers.py); the sandbox tokenizes any number that passes the Luhn check.
VISA = "4242" + "4242" * 3
MASTERCARD = "5555" + "5555" + "5555" + "4444"
URL = "/api/v1/payment-methods"
YEAR = clock.now().year + 5  # the processor refuses an expired card


def client_for(customer) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(customer)}")
    return client


def add_card(client, number: str = VISA, *, month: int = 12, year: int = YEAR, **headers):
    body = {"card_number": number, "exp_month": month, "exp_year": year}
    return client.post(URL, body, format="json", headers=headers)


def charges(sandbox) -> list[dict]:
    return requests.get(f"{sandbox}/sandbox/charges", timeout=5).json()["data"]


@pytest.fixture
def other():
    """Another customer, with a saved card of their own."""
    other = make_customer()
    saved_card(other, "pm_theirs")
    return other


# --- saving, listing, removing ----------------------------------------------------------


def test_a_card_is_tokenized_at_the_processor_and_only_the_token_is_kept(
    customer, customer_api, card_processor
):
    response = add_card(customer_api)
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["token"].startswith("pm_")
    assert (body["brand"], body["last4"], body["exp_month"], body["exp_year"]) == (
        "visa",
        "4242",
        12,
        YEAR,
    )
    assert "card_number" not in body
    method = SavedPaymentMethod.objects.get(pk=body["id"])
    assert (method.customer, method.token) == (customer, body["token"])
    assert method.fingerprint.startswith("fp_")
    assert AuditEntry.objects.filter(action="payments.payment_method_saved").count() == 1
    listed = customer_api.get(URL).json()["payment_methods"]
    assert [m["token"] for m in listed] == [body["token"]]


def test_the_same_card_saved_by_two_customers_gets_two_tokens_and_one_fingerprint(
    customer_api, card_processor
):
    first = add_card(customer_api).json()
    second = add_card(client_for(make_customer())).json()
    assert first["token"] != second["token"]
    fingerprints = set(SavedPaymentMethod.objects.values_list("fingerprint", flat=True))
    assert len(fingerprints) == 1


def test_a_retry_with_the_same_idempotency_key_saves_one_card(customer_api, card_processor):
    first = add_card(customer_api, MASTERCARD, **{"Idempotency-Key": "add-card-1"})
    again = add_card(customer_api, MASTERCARD, **{"Idempotency-Key": "add-card-1"})
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json() == again.json()
    assert first.json()["brand"] == "mastercard"
    assert SavedPaymentMethod.objects.count() == 1


@pytest.mark.parametrize(
    ("number", "month"),
    [(VISA, 12), (MASTERCARD, 12), (MASTERCARD, 11)],
    ids=["another-number", "another-year", "another-expiry"],
)
def test_the_same_idempotency_key_with_another_card_is_refused(
    customer_api, card_processor, number, month
):
    first = add_card(customer_api, MASTERCARD, **{"Idempotency-Key": "add-card-1"})
    other = add_card(
        customer_api, number, month=month, year=YEAR + 1, **{"Idempotency-Key": "add-card-1"}
    )
    assert first.status_code == 201
    assert (other.status_code, other.json()["error"]["code"]) == (409, "idempotency.key_reused")
    assert SavedPaymentMethod.objects.count() == 1


def test_a_retry_after_the_card_was_removed_does_not_report_it_saved(customer_api, card_processor):
    first = add_card(customer_api, **{"Idempotency-Key": "add-card-1"})
    assert customer_api.delete(f"{URL}/{first.json()['id']}").status_code == 204
    again = add_card(customer_api, **{"Idempotency-Key": "add-card-1"})
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "payments.payment_method_removed"
    assert customer_api.get(URL).json()["payment_methods"] == []
    fresh = add_card(customer_api, **{"Idempotency-Key": "add-card-2"})
    assert fresh.status_code == 201
    assert [m["id"] for m in customer_api.get(URL).json()["payment_methods"]] == [
        fresh.json()["id"]
    ]


def test_saving_cards_is_throttled_per_customer(customer_api, card_processor):
    """Each save asks the processor: 10 an hour per customer, then 429 with Retry-After."""
    answers = [add_card(customer_api, **{"Idempotency-Key": "add-card-1"}) for _ in range(10)]
    assert [a.status_code for a in answers] == [201] + [200] * 9
    refused = add_card(customer_api, **{"Idempotency-Key": "add-card-1"})
    assert (refused.status_code, refused.json()["error"]["code"]) == (429, "request.throttled")
    assert int(refused["Retry-After"]) > 0
    assert customer_api.get(URL).status_code == 200  # listing is not throttled
    another = add_card(client_for(make_customer()))
    assert another.status_code == 201  # per customer


def test_a_customer_saves_at_most_the_configured_number_of_cards(
    customer, customer_api, card_processor, sandbox, settings
):
    settings.PAYMENTS_MAX_SAVED_CARDS = 3
    saved_cards(customer, "pm_a", "pm_b", "pm_c")
    for headers in ({}, {"Idempotency-Key": "add-card-1"}):
        refused = add_card(customer_api, **headers)
        assert refused.status_code == 422, refused.json()
        assert refused.json()["error"]["code"] == "payments.payment_method_limit"
    assert SavedPaymentMethod.objects.count() == 3
    methods.payment_method_remove(
        customer_id=customer.pk, method_id=SavedPaymentMethod.objects.get(token="pm_a").pk
    )
    assert add_card(customer_api).status_code == 201


def test_tokens_stay_unique_when_the_processor_restarts(customer_api, card_processor):
    """The sandbox numbers its tokens from 1 each time it starts: another customer's card
    saved after a restart still gets a token of its own."""
    from payments.sandbox import server as sandbox_server

    assert add_card(customer_api).status_code == 201
    restarted = sandbox_server.start_in_thread()
    try:
        card_processor.base_url = f"http://127.0.0.1:{restarted.server_address[1]}/card"
        card_processor.save(update_fields=["base_url"])
        response = add_card(client_for(make_customer()))
    finally:
        restarted.shutdown()
        restarted.server_close()
    assert response.status_code == 201, response.json()
    assert SavedPaymentMethod.objects.values("token").distinct().count() == 2


@pytest.mark.parametrize(
    ("number", "month", "year", "status", "code"),
    [
        ("4242424242424241", 12, YEAR, 422, "payments.card_rejected"),  # fails the Luhn check
        (VISA, 1, 2001, 422, "payments.card_rejected"),  # expired
        ("4242 4242", 12, YEAR, 400, "validation_error"),
        (VISA, 13, YEAR, 400, "validation_error"),
    ],
)
def test_card_details_the_processor_refuses_save_nothing(
    customer_api, card_processor, unchanged_db, number, month, year, status, code
):
    check = unchanged_db()
    response = add_card(customer_api, number, month=month, year=year)
    assert response.status_code == status, response.json()
    assert response.json()["error"]["code"] == code
    assert number.replace(" ", "") not in response.content.decode()
    check()


def test_a_removed_card_is_not_listed_and_never_accepted_again(
    customer, customer_api, card_processor, stock, unchanged_db
):
    stock("A", 10)
    method = saved_card(customer, "pm_mine")
    assert customer_api.delete(f"{URL}/{method.pk}").status_code == 204
    assert customer_api.get(URL).json()["payment_methods"] == []
    method.refresh_from_db()
    assert method.removed_at is not None  # kept for the history of what used it
    assert customer_api.delete(f"{URL}/{method.pk}").status_code == 404
    check = unchanged_db()
    response = customer_api.post(
        "/api/v1/orders",
        {
            "payment_method": "wallet_card",
            "card_payment_method": "pm_mine",
            "lines": [line("A", 1, "650.00")],
        },
        format="json",
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "payments.payment_method_unknown"
    check()


@pytest.mark.parametrize(
    "payment",
    [
        {"payment_method": "installments", "plan_product": "pay-in-3"},
        {"payment_method": "wallet_card"},
    ],
    ids=["installments", "wallet_card"],
)
def test_a_card_removed_while_the_checkout_runs_is_refused_and_nothing_written(
    customer, customer_api, card_processor, stock, sandbox, monkeypatch, payment
):
    """The customer removes the card between the checkout's first look and its transaction:
    the transaction looks again, under the card's lock, and writes nothing."""
    import oms.services

    approve_kyc(customer)
    make_product(code="pay-in-3", min_amount=1_000, max_amount=500_000)
    stock("A", 10)
    method = saved_card(customer, "pm_mine")
    first_look = oms.services.payment_method_owned

    def then_removed(**kwargs):
        found = first_look(**kwargs)
        if not kwargs.get("lock"):  # a concurrent DELETE lands right after the first look
            methods.payment_method_remove(customer_id=customer.pk, method_id=method.pk)
        return found

    monkeypatch.setattr(oms.services, "payment_method_owned", then_removed)
    response = customer_api.post(
        "/api/v1/orders",
        {**payment, "card_payment_method": "pm_mine", "lines": [line("A", 1, "650.00")]},
        format="json",
    )
    assert response.status_code == 422, response.json()
    assert response.json()["error"]["code"] == "payments.payment_method_unknown"
    assert (Order.objects.count(), CreditApplication.objects.count()) == (0, 0)
    assert Wallet.objects.get(customer=customer).balance.minor == 50_000
    assert charges(sandbox) == []


def test_a_card_an_active_plan_debits_is_kept_until_the_plan_moves(customer, customer_api):
    old, new = saved_card(customer, "pm_old"), saved_card(customer, "pm_new")
    plan = make_plan(customer=customer, amount="300.00", payment_method="pm_old")
    refused = customer_api.delete(f"{URL}/{old.pk}")
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "payments.payment_method_in_use"
    moved = customer_api.post(
        f"/api/v1/bnpl/plans/{plan.pk}/payment-method", {"payment_method": new.token}, format="json"
    )
    assert moved.status_code == 200, moved.json()
    assert customer_api.delete(f"{URL}/{old.pk}").status_code == 204


def test_a_channel_key_may_not_list_add_or_remove_a_customers_cards(customer, unchanged_db):
    method = saved_card(customer, "pm_mine")
    _, key = channel_with_key("app", ChannelKind.APP)
    channel = APIClient()
    channel.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}", HTTP_X_CUSTOMER_ID=str(customer.pk))
    check = unchanged_db()
    assert channel.get(URL).status_code == 403
    assert add_card(channel).status_code == 403
    assert channel.delete(f"{URL}/{method.pk}").status_code == 403
    check()


# --- another customer's token is refused everywhere a card is charged -------------------


@pytest.mark.parametrize("method", ["wallet_card", "installments"])
def test_checkout_refuses_another_customers_card(
    customer, customer_api, card_processor, sandbox, stock, other, unchanged_db, method
):
    approve_kyc(customer)
    make_product(code="pay-in-3", min_amount=1_000, max_amount=500_000)
    stock("A", 10)
    saved_card(customer, "pm_mine")
    body = {
        "payment_method": method,
        "card_payment_method": "pm_theirs",
        "lines": [line("A", 1, "650.00")],
    }
    if method == "installments":
        body["plan_product"] = "pay-in-3"
    check = unchanged_db()
    response = customer_api.post("/api/v1/orders", body, format="json")
    assert response.status_code == 422, response.json()
    error = response.json()["error"]
    assert error["code"] == "payments.payment_method_unknown"
    assert list(error["fields"]) == ["card_payment_method"]
    check()
    assert charges(sandbox) == []


def test_a_channel_may_not_charge_another_customers_card_for_its_customer(
    customer, card_processor, sandbox, stock, other, unchanged_db
):
    stock("A", 10)
    _, key = channel_with_key("app", ChannelKind.APP)
    channel = APIClient()
    channel.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}", HTTP_X_CUSTOMER_ID=str(customer.pk))
    check = unchanged_db()
    response = channel.post(
        "/api/v1/orders",
        {
            "payment_method": "wallet_card",
            "card_payment_method": "pm_theirs",
            "lines": [line("A", 1, "650.00")],
        },
        format="json",
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "payments.payment_method_unknown"
    check()
    assert charges(sandbox) == []


def test_a_plan_cannot_be_switched_to_another_customers_card(
    customer, customer_api, other, unchanged_db
):
    saved_card(customer, "pm_mine")
    plan = make_plan(customer=customer, amount="300.00", payment_method="pm_mine")
    check = unchanged_db()
    response = customer_api.post(
        f"/api/v1/bnpl/plans/{plan.pk}/payment-method",
        {"payment_method": "pm_theirs"},
        format="json",
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "payments.payment_method_unknown"
    assert list(response.json()["error"]["fields"]) == ["payment_method"]
    check()
    assert Plan.objects.get(pk=plan.pk).payment_method == "pm_mine"


@pytest.fixture
def plan_on_their_card(customer, other):
    """A plan whose card is another customer's token, as a switch before cards were bound
    to customers left it."""
    plan = make_plan(customer=customer, amount="300.00", payment_method="pm_mine_before")
    Plan.objects.filter(pk=plan.pk).update(payment_method="pm_theirs")
    return Plan.objects.get(pk=plan.pk)


def test_an_extra_payment_never_charges_another_customers_card(
    customer_api, card_processor, sandbox, plan_on_their_card, unchanged_db
):
    check = unchanged_db()
    response = customer_api.post(
        f"/api/v1/bnpl/plans/{plan_on_their_card.pk}/installments/1/payments",
        {"amount": money("25.00"), "source": "card"},
        format="json",
    )
    assert response.status_code == 422, response.json()
    assert response.json()["error"]["code"] == "payments.payment_method_unknown"
    check()
    assert charges(sandbox) == []


def test_a_payoff_never_charges_another_customers_card(
    customer_api, card_processor, sandbox, plan_on_their_card, unchanged_db
):
    check = unchanged_db()
    response = customer_api.post(
        f"/api/v1/bnpl/plans/{plan_on_their_card.pk}/payoff",
        {"confirm": True, "source": "card"},
        format="json",
    )
    assert response.status_code == 422, response.json()
    assert response.json()["error"]["code"] == "payments.payment_method_unknown"
    check()
    assert charges(sandbox) == []


def test_the_customers_own_card_still_pays(
    customer, customer_api, card_processor, sandbox, plan_on_their_card
):
    saved_card(customer, "pm_mine")
    moved = customer_api.post(
        f"/api/v1/bnpl/plans/{plan_on_their_card.pk}/payment-method",
        {"payment_method": "pm_mine"},
        format="json",
    )
    assert moved.status_code == 200, moved.json()
    response = customer_api.post(
        f"/api/v1/bnpl/plans/{plan_on_their_card.pk}/installments/1/payments",
        {"amount": money("25.00"), "source": "card"},
        format="json",
    )
    assert response.status_code == 201, response.json()
    assert [c["amount"] for c in charges(sandbox)] == [2500]


def backfill() -> None:
    from importlib import import_module

    from django.apps import apps

    import_module("bnpl.migrations.0006_saved_cards_from_plans").backfill(apps, None)


def legacy_plan(customer, token: str) -> Plan:
    """A plan from before cards were bound to customers: on ``token``, saved by nobody."""
    plan = make_plan(customer=customer, amount="300.00", payment_method=f"pm_new_{customer.pk}")
    Plan.objects.filter(pk=plan.pk).update(payment_method=token)
    SavedPaymentMethod.objects.filter(customer=customer).delete()
    return plan


def test_plans_from_before_the_binding_get_their_customers_card_unless_it_was_shared():
    alone, first, second = make_customer(), make_customer(), make_customer()
    legacy_plan(alone, "pm_alone")
    legacy_plan(first, "pm_shared")
    legacy_plan(second, "pm_shared")
    backfill()
    saved = dict(SavedPaymentMethod.objects.values_list("token", "customer_id"))
    assert saved == {"pm_alone": alone.pk}
    backfill()  # again: nothing new
    assert SavedPaymentMethod.objects.count() == 1


def test_the_backfill_saves_no_token_another_customer_applied_with():
    """A token is shared when two customers used it in plans and applications together,
    whatever the application's status: here one declined application and one plan."""
    victim, taker = make_customer(), make_customer()
    make_application(
        customer=victim, product=make_product(), payment_method="pm_x", status="declined"
    )
    legacy_plan(taker, "pm_x")
    backfill()
    assert not SavedPaymentMethod.objects.filter(token="pm_x").exists()


def test_listing_costs_the_same_queries_for_one_card_as_for_many(customer, customer_api):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    saved_card(customer, "pm_first")
    with CaptureQueriesContext(connection) as one:
        assert len(customer_api.get(URL).json()["payment_methods"]) == 1
    for n in range(5):
        saved_card(customer, f"pm_more_{n}")
    with CaptureQueriesContext(connection) as many:
        assert len(customer_api.get(URL).json()["payment_methods"]) == 6
    assert len(one) == len(many)


def test_the_schema_documents_every_answer_of_saving_a_card(tmp_path):
    import yaml
    from django.core.management import call_command

    path = tmp_path / "schema.yml"
    call_command("spectacular", "--file", str(path))
    operation = yaml.safe_load(path.read_text())["paths"][URL]["post"]
    assert {"200", "201", "400", "409", "422", "429", "503"} <= set(operation["responses"])
    assert "Retry-After" in operation["responses"]["429"]["headers"]
    for code in ("payments.token_taken", "idempotency.key_reused", "payment_method_limit"):
        assert code in operation["description"]
