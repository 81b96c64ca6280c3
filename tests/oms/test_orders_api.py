import pytest
from rest_framework.test import APIClient

from oms.models import ChannelKind
from tests.factories import channel_with_key, fund, line, make_customer, token_for

pytestmark = pytest.mark.django_db


def place(client, sku="A", **extra):
    response = client.post(
        "/api/v1/orders",
        {"payment_method": "wallet", "lines": [line(sku, 1, "1.00")], **extra},
        format="json",
    )
    assert response.status_code == 201, response.json()
    return response.json()["id"]


def channel_client(key: str, customer) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}", HTTP_X_CUSTOMER_ID=str(customer.pk))
    return client


def test_a_customer_lists_and_reads_only_their_own_orders(customer, customer_api, stock):
    stock("A", 10)
    mine = place(customer_api)
    other = make_customer()
    fund(other, "10.00")
    other_api = APIClient()
    other_api.credentials(HTTP_AUTHORIZATION=f"Token {token_for(other)}")
    theirs = place(other_api)

    listed = customer_api.get("/api/v1/orders").json()
    assert [o["id"] for o in listed["results"]] == [mine]
    assert customer_api.get(f"/api/v1/orders/{mine}").status_code == 200
    response = customer_api.get(f"/api/v1/orders/{theirs}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "oms.order_not_found"


def test_a_channel_key_acts_for_the_named_customer_and_sees_only_its_own_orders(
    customer, customer_api, stock
):
    stock("A", 10)
    web_order = place(customer_api)
    _, pos_key = channel_with_key("pos", ChannelKind.POS)
    pos = channel_client(pos_key, customer)
    pos_order = place(pos, external_reference="POS-1")

    assert [o["id"] for o in pos.get("/api/v1/orders").json()["results"]] == [pos_order]
    assert pos.get(f"/api/v1/orders/{web_order}").status_code == 404
    assert pos.get(f"/api/v1/orders/{pos_order}").json()["channel"] == "pos"
    # The customer's own token sees orders of every channel.
    assert {o["id"] for o in customer_api.get("/api/v1/orders").json()["results"]} == {
        web_order,
        pos_order,
    }


def test_channel_key_authentication_failures(customer, stock):
    _, key = channel_with_key("app", ChannelKind.APP)
    for credentials, detail in [
        ({"HTTP_AUTHORIZATION": "Api-Key ch_nope_nope"}, "Unknown or inactive"),
        (
            {"HTTP_AUTHORIZATION": f"Api-Key {key}x", "HTTP_X_CUSTOMER_ID": str(customer.pk)},
            "Unknown or inactive",
        ),
        ({"HTTP_AUTHORIZATION": f"Api-Key {key}"}, "X-Customer-Id"),
        (
            {"HTTP_AUTHORIZATION": f"Api-Key {key}", "HTTP_X_CUSTOMER_ID": "999999"},
            "Unknown customer",
        ),
        ({"HTTP_AUTHORIZATION": f"Api-Key {key}", "HTTP_X_CUSTOMER_ID": "²"}, "X-Customer-Id"),
    ]:
        client = APIClient()
        client.credentials(**credentials)
        response = client.get("/api/v1/orders")
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "auth.failed"
        assert detail in response.json()["error"]["message"]


def test_staff_without_a_customer_profile_cannot_use_customer_endpoints(admin_client):
    response = admin_client.get("/api/v1/orders")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "auth.permission_denied"
