"""Another customer's objects are never reachable.

Every URL outside the admin that takes an object id (the API and the customer pages) must
have a case here. Adding one with no case fails
``test_every_object_endpoint_has_a_cross_customer_case``.
"""

from collections.abc import Callable

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from tests.factories import (
    approve_kyc,
    borrow,
    enable_wallet_bnpl,
    fund,
    line,
    make_customer,
    saved_card,
    token_for,
)

pytestmark = pytest.mark.django_db


def _owned_order(owner, client: APIClient) -> dict:
    response = client.post(
        "/api/v1/orders",
        {"payment_method": "wallet", "lines": [line("BOLA", 1, "1.00")]},
        format="json",
    )
    assert response.status_code == 201
    return {"order_id": response.json()["id"]}


def _owned_debt(owner, client: APIClient) -> dict:
    enable_wallet_bnpl()
    approve_kyc(owner)
    client.post(
        "/api/v1/orders",
        {"payment_method": "wallet", "lines": [line("BOLA", 1, "100.00")]},
        format="json",
    )
    return {"debt_id": borrow(owner, "30.00", sku="BOLA")}


def _owned_plan(owner, client: APIClient) -> dict:
    from tests.bnpl.factories import make_plan

    return {"plan_id": make_plan(customer=owner, amount="300.00").pk}


def _owned_payment_method(owner, client: APIClient) -> dict:
    return {"method_id": saved_card(owner, f"pm_bola_{owner.pk}").pk}


def _owned_installment(owner, client: APIClient) -> dict:
    return {**_owned_plan(owner, client), "number": 1}


# URL name → (how to create an object owned by the client, the methods to try with it).
# The page routes are driven with a logged-in session instead of a token.
CASES: dict[str, tuple[Callable[..., dict], list[tuple[str, dict]]]] = {
    "order-detail": (_owned_order, [("get", {})]),
    "order-cancel": (_owned_order, [("post", {"reason": "not mine"})]),
    "order-refund": (_owned_order, [("post", {"reason": "not mine"})]),
    "wallet-debt-repay": (
        _owned_debt,
        [("post", {"amount": {"amount": "1.00", "currency": "EUR"}})],
    ),
    "my-wallet-repay": (_owned_debt, [("post", {"amount": "1.00"})]),
    "bnpl-plan-detail": (_owned_plan, [("get", {})]),
    "bnpl-plan-reschedule": (
        _owned_plan,
        [
            ("post", {"number": 1, "due_date": "2027-01-03"}),
            ("post", {"number": 1, "due_date": "2027-01-03", "confirm": True}),
        ],
    ),
    "bnpl-plan-suggested-dates": (_owned_plan, [("get", {})]),
    "bnpl-installment-payments": (
        _owned_installment,
        [("post", {"amount": {"amount": "1.00", "currency": "EUR"}, "source": "wallet"})],
    ),
    "bnpl-plan-payoff": (
        _owned_plan,
        [("get", {}), ("post", {}), ("post", {"confirm": True})],
    ),
    "bnpl-plan-cancel": (_owned_plan, [("post", {"reason": "not mine"})]),
    "bnpl-plan-payment-method": (_owned_plan, [("post", {"payment_method": "pm_card_visa"})]),
    "payment-method-detail": (_owned_payment_method, [("delete", {})]),
    "my-plan": (_owned_plan, [("get", {})]),
    "my-plan-pay": (_owned_installment, [("post", {"amount": "1.00"})]),
    "my-plan-payoff": (_owned_plan, [("get", {}), ("post", {"expected_total": "300.00"})]),
}
PAGE_ROUTES = {"my-wallet-repay", "my-plan", "my-plan-pay", "my-plan-payoff"}
# URLs with a parameter that names no customer's object, and why.
NOT_CUSTOMER_OBJECTS = {
    "payments-webhook": "the parameter is a provider; callers are authenticated by the "
    "provider's HMAC signature, not as a customer",
}


def _object_endpoints() -> set[str]:
    """Names of API URLs whose path carries an object id."""
    names: set[str] = set()

    def walk(patterns, prefix: str) -> None:
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, route)
            elif (
                isinstance(pattern, URLPattern) and not route.startswith("admin/") and "<" in route
            ):
                names.add(pattern.name)

    walk(get_resolver().url_patterns, "")
    return names


def test_every_object_endpoint_has_a_cross_customer_case():
    missing = _object_endpoints() - set(CASES) - set(NOT_CUSTOMER_OBJECTS)
    assert not missing, f"add a cross-customer case to CASES for: {sorted(missing)}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_another_customers_object_is_404_and_untouched(name, web_channel, stock, unchanged_db):
    from django.urls import reverse

    stock("BOLA", 100)
    owner, intruder = make_customer(), make_customer()
    for customer in (owner, intruder):
        fund(customer, "100.00")
    owner_api, intruder_api = APIClient(), APIClient()
    owner_api.credentials(HTTP_AUTHORIZATION=f"Token {token_for(owner)}")
    intruder_api.credentials(HTTP_AUTHORIZATION=f"Token {token_for(intruder)}")

    make, methods = CASES[name]
    kwargs = make(owner, owner_api)
    url = reverse(name, kwargs=kwargs)
    page = name in PAGE_ROUTES
    if page:
        owner_api, intruder_api = APIClient(), APIClient()
        owner_api.force_login(owner.user)
        intruder_api.force_login(intruder.user)
    send = {} if page else {"format": "json"}
    check = unchanged_db()
    for method, body in methods:
        response = getattr(intruder_api, method)(url, body, **send)
        assert response.status_code == 404, (method, url, response.content)
        if not page:
            assert response.json()["error"]["code"].endswith("not_found")
    check()
    # The owner still reaches it (it may refuse for other reasons, e.g. an empty wallet):
    # the 404 is about ownership, not a broken URL.
    for method, body in methods:
        assert getattr(owner_api, method)(url, body, **send).status_code != 404


# --- collections without an id: each caller sees and adds only their own ---------------


def _client(customer) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(customer)}")
    return client


def test_listing_payment_methods_shows_only_the_callers(web_channel):
    owner, intruder = make_customer(), make_customer()
    saved_card(owner, "pm_owner")
    mine = saved_card(intruder, "pm_intruder")
    listed = _client(intruder).get("/api/v1/payment-methods").json()["payment_methods"]
    assert [(m["id"], m["token"]) for m in listed] == [(mine.pk, "pm_intruder")]


def test_another_customers_token_never_becomes_or_pays_for_the_caller(
    web_channel, stock, card_processor, sandbox, unchanged_db
):
    from core.errors import Conflict
    from payments import methods

    stock("BOLA", 10)
    owner, intruder = make_customer(), make_customer()
    fund(intruder, "10.00")
    saved_card(owner, "pm_owner")
    intruder_api, owner_api = _client(intruder), _client(owner)
    check = unchanged_db()
    with pytest.raises(Conflict) as taken:  # the create path never re-homes a token
        methods.payment_method_record(customer_id=intruder.pk, token="pm_owner")
    assert taken.value.code == "payments.token_taken"
    response = intruder_api.post(
        "/api/v1/orders",
        {
            "payment_method": "wallet_card",
            "card_payment_method": "pm_owner",
            "lines": [line("BOLA", 1, "50.00")],
        },
        format="json",
    )
    assert (response.status_code, response.json()["error"]["code"]) == (
        422,
        "payments.payment_method_unknown",
    )
    check()
    # Saving a card gives the caller a token of their own, never the owner's.
    body = {"card_number": "4242" * 4, "exp_month": 12, "exp_year": 2090}
    created = intruder_api.post("/api/v1/payment-methods", body, format="json")
    assert created.status_code == 201, created.json()
    assert created.json()["token"] != "pm_owner"
    assert [
        m["token"] for m in owner_api.get("/api/v1/payment-methods").json()["payment_methods"]
    ] == ["pm_owner"]


@pytest.mark.parametrize("method", ["get", "post"])
def test_a_channel_may_not_list_or_add_a_customers_payment_methods(method, unchanged_db):
    from oms.models import ChannelKind
    from tests.factories import channel_with_key

    customer = make_customer()
    saved_card(customer, "pm_owner")
    _, key = channel_with_key("bola-shop", ChannelKind.WEB)
    channel = APIClient()
    channel.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}", HTTP_X_CUSTOMER_ID=str(customer.pk))
    check = unchanged_db()
    body = {"card_number": "4242" * 4, "exp_month": 12, "exp_year": 2090}
    response = getattr(channel, method)("/api/v1/payment-methods", body, format="json")
    assert response.status_code == 403
    assert "pm_owner" not in response.content.decode()
    check()
