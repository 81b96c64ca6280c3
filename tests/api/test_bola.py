"""Another customer's objects are never reachable.

Every URL of the API that takes an object id must have a case here. Adding an endpoint
with an id and no case fails ``test_every_object_endpoint_has_a_cross_customer_case``.
"""

from collections.abc import Callable

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

from tests.factories import fund, line, make_customer, token_for

pytestmark = pytest.mark.django_db


def _owned_order(client: APIClient) -> dict:
    response = client.post(
        "/api/v1/orders",
        {"payment_method": "wallet", "lines": [line("BOLA", 1, "1.00")]},
        format="json",
    )
    assert response.status_code == 201
    return {"order_id": response.json()["id"]}


# URL name → (how to create an object owned by the client, the methods to try with it).
CASES: dict[str, tuple[Callable[[APIClient], dict], list[tuple[str, dict]]]] = {
    "order-detail": (_owned_order, [("get", {})]),
    "order-cancel": (_owned_order, [("post", {"reason": "not mine"})]),
}


def _object_endpoints() -> set[str]:
    """Names of API URLs whose path carries an object id."""
    names: set[str] = set()

    def walk(patterns, prefix: str) -> None:
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                walk(pattern.url_patterns, route)
            elif isinstance(pattern, URLPattern) and route.startswith("api/v1/") and "<" in route:
                names.add(pattern.name)

    walk(get_resolver().url_patterns, "")
    return names


def test_every_object_endpoint_has_a_cross_customer_case():
    missing = _object_endpoints() - set(CASES)
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
    kwargs = make(owner_api)
    url = reverse(name, kwargs=kwargs)
    check = unchanged_db()
    for method, body in methods:
        response = getattr(intruder_api, method)(url, body, format="json")
        assert response.status_code == 404, (method, url, response.json())
        assert response.json()["error"]["code"].endswith("not_found")
    check()
    # The owner still reaches it: the 404 is about ownership, not a broken URL.
    for method, body in methods:
        assert getattr(owner_api, method)(url, body, format="json").status_code in {200, 201}
