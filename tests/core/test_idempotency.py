from datetime import timedelta

import pytest

from core import clock
from core.models import IdempotencyRecord
from oms.models import Order
from tests.factories import line

pytestmark = pytest.mark.django_db

BODY = {"payment_method": "wallet", "lines": [line("A", 1, "10.00")]}


def post(client, key, body=BODY):
    return client.post("/api/v1/orders", body, format="json", HTTP_IDEMPOTENCY_KEY=key)


def test_a_repeat_replays_the_stored_response(customer_api, stock):
    stock("A", 10)
    first = post(customer_api, "k-1")
    second = post(customer_api, "k-1")
    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second["Idempotent-Replayed"] == "true"
    assert Order.objects.count() == 1


def test_same_key_with_another_body_is_409(customer_api, stock, unchanged_db):
    stock("A", 10)
    post(customer_api, "k-1")
    check = unchanged_db()
    other = post(customer_api, "k-1", {**BODY, "lines": [line("A", 2, "10.00")]})
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency.key_reused"
    check()


def test_keys_are_scoped_per_caller(customer_api, stock, api, web_channel):
    from tests.factories import fund, make_customer, token_for

    stock("A", 10)
    other = make_customer()
    fund(other, "50.00")
    api.credentials(HTTP_AUTHORIZATION=f"Token {token_for(other)}")
    assert post(customer_api, "shared").status_code == 201
    assert post(api, "shared").status_code == 201
    assert Order.objects.count() == 2


def test_a_failed_request_frees_its_key(customer_api, stock):
    stock("A", 10)
    big = {**BODY, "lines": [line("A", 1, "900.00")]}
    assert post(customer_api, "k-2", big).status_code == 422
    assert not IdempotencyRecord.objects.filter(key="k-2").exists()
    assert post(customer_api, "k-2", BODY).status_code == 201


def test_a_claim_still_running_is_409_and_a_dead_one_is_taken_over(customer_api, customer, stock):
    stock("A", 10)
    IdempotencyRecord.objects.create(
        scope=f"user:{customer.user.pk}",
        key="k-3",
        method="POST",
        path="/api/v1/orders",
        fingerprint=__import__("core.idempotency", fromlist=["x"]).fingerprint(
            "POST", "/api/v1/orders", BODY
        ),
        claim_token="00000000-0000-0000-0000-000000000000",
        locked_at=clock.now(),
        created_at=clock.now(),
    )
    running = post(customer_api, "k-3")
    assert running.status_code == 409
    assert running.json()["error"]["code"] == "idempotency.in_progress"
    with clock.travel(timedelta(minutes=5)):
        taken_over = post(customer_api, "k-3")
    assert taken_over.status_code == 201
    assert Order.objects.count() == 1


def test_invalid_key_is_400(customer_api):
    response = post(customer_api, "x" * 256)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "idempotency.invalid_key"


def test_two_channels_acting_for_one_customer_do_not_share_keys(customer, stock):
    from rest_framework.test import APIClient

    from oms.models import ChannelKind
    from tests.factories import channel_with_key

    stock("A", 10)
    body = {"payment_method": "wallet", "lines": [line("A", 1, "5.00")]}
    answers = []
    for code in ("shop-a", "shop-b"):
        _, key = channel_with_key(code, ChannelKind.WEB)
        client = APIClient()
        client.credentials(
            HTTP_AUTHORIZATION=f"Api-Key {key}",
            HTTP_X_CUSTOMER_ID=str(customer.pk),
            HTTP_IDEMPOTENCY_KEY="order-1",
        )
        answers.append(client.post("/api/v1/orders", body, format="json"))

    assert [a.status_code for a in answers] == [201, 201]
    assert [a.json()["channel"] for a in answers] == ["shop-a", "shop-b"]
    assert Order.objects.count() == 2
