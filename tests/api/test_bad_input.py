"""Bad input under /api/: always the JSON error envelope, never a server error or an HTML page
(issue 12 #13)."""

import json
import re

import pytest
import yaml
from django.conf import settings
from django.core.management import call_command
from django.urls import path
from rest_framework.test import APIClient

from config.urls import urlpatterns as project_urlpatterns
from oms.models import ChannelKind
from tests.factories import channel_with_key, line

pytestmark = pytest.mark.django_db

NESTED = "[" * 1000 + "]" * 1000  # 2 KB


def assert_envelope(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert body["error"]["code"] == code, body
    assert set(body["error"]) >= {"code", "message", "fields"}
    return body


@pytest.mark.parametrize(
    "nested",
    [NESTED, '{"a":' * 1000 + "1" + "}" * 1000, '{"email": ' + "[" * 40 + "]" * 40 + "}"],
    ids=["arrays", "objects", "past-the-depth-limit"],
)
@pytest.mark.parametrize("url", ["/api/v1/auth/token", "/api/v1/customers"])
def test_deeply_nested_json_is_a_malformed_request_for_anonymous_callers(api, url, nested):
    response = api.post(url, nested, content_type="application/json")
    assert_envelope(response, 400, "request.malformed")


def test_deeply_nested_json_is_a_malformed_request_on_a_customers_endpoint(customer_api):
    response = customer_api.post("/api/v1/orders", NESTED, content_type="application/json")
    assert_envelope(response, 400, "request.malformed")


def test_json_of_ordinary_depth_still_parses(customer_api):
    response = customer_api.post(
        "/api/v1/bnpl/quotes",
        {"amount": {"amount": "100.00", "currency": "EUR"}, "merchant_categories": ["toys"]},
        format="json",
    )
    assert response.status_code == 200, response.json()


def test_a_body_over_the_size_limit_is_413_in_the_envelope(api):
    body = json.dumps(
        {"email": "a@example.com", "password": "x" * settings.DATA_UPLOAD_MAX_MEMORY_SIZE}
    )
    response = api.post("/api/v1/auth/token", body, content_type="application/json")
    assert_envelope(response, 413, "request.too_large")


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/orders/abc",
        "/api/v1/orders/1.5/cancel",
        "/api/v1/bnpl/plans/x/installments/1/payments",
        "/api/v1/no-such-thing",
        "/api/",
    ],
)
def test_unknown_api_urls_and_non_integer_ids_are_json_404s(customer_api, url):
    assert_envelope(customer_api.get(url), 404, "not_found")
    assert_envelope(customer_api.post(url, {}, format="json"), 404, "not_found")


def test_pages_outside_the_api_keep_their_html_404(client):
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert not response["Content-Type"].startswith("application/json")


def _boom(request):
    raise RuntimeError("a bug")


urlpatterns = [path("api/v1/boom", _boom), *project_urlpatterns]


@pytest.mark.urls(__name__)
def test_a_server_error_under_the_api_is_the_json_envelope():
    client = APIClient(raise_request_exception=False)
    body = assert_envelope(client.get("/api/v1/boom"), 500, "server_error")
    assert "a bug" not in json.dumps(body)


def test_a_page_out_of_range_is_a_documented_404(customer_api):
    assert_envelope(customer_api.get("/api/v1/orders?page=99"), 404, "not_found")
    assert "404" in _operation("/api/v1/orders", "get")["responses"]


def test_an_unknown_renewal_of_is_a_documented_404(customer, stock):
    stock("A", 10)
    _, key = channel_with_key("subs", ChannelKind.SUBSCRIPTIONS)
    channel = APIClient()
    channel.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}", HTTP_X_CUSTOMER_ID=str(customer.pk))
    response = channel.post(
        "/api/v1/orders",
        {"payment_method": "wallet", "lines": [line("A", 1, "1.00")], "renewal_of": 999999},
        format="json",
    )
    assert_envelope(response, 404, "oms.order_not_found")
    assert "404" in _operation("/api/v1/orders", "post")["responses"]


def test_patching_the_profile_with_nothing_changes_nothing(customer_api):
    response = customer_api.patch("/api/v1/bnpl/profile", {}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json() == {"income_aligned_dates": False}
    request = _schema()["components"]["schemas"]["PatchedBorrowerProfileRequest"]
    assert "required" not in request


def test_every_operation_with_a_body_documents_400_413_and_415():
    for route, operations in _schema()["paths"].items():
        for method, operation in operations.items():
            if "requestBody" in operation:
                missing = {"400", "413", "415"} - set(operation["responses"])
                assert not missing, f"{method.upper()} {route} does not document {missing}"


_SCHEMA: dict = {}


def _schema() -> dict:
    if not _SCHEMA:
        from io import StringIO

        out = StringIO()
        call_command("spectacular", stdout=out)
        _SCHEMA.update(yaml.safe_load(out.getvalue()))
    return _SCHEMA


def _operation(route: str, method: str) -> dict:
    return _schema()["paths"][route][method]


@pytest.mark.parametrize("value", [0, 1, "true", "yes", None])
def test_a_json_boolean_field_takes_only_true_or_false(customer_api, value, unchanged_db):
    check = unchanged_db()
    for method, url, name in [
        ("patch", "/api/v1/bnpl/profile", "income_aligned_dates"),
        ("put", "/api/v1/wallet/auto-deduct", "enabled"),
    ]:
        response = getattr(customer_api, method)(url, {name: value}, format="json")
        assert_envelope(response, 400, "validation_error")
    check()


def test_the_open_filter_of_debts_refuses_what_the_schema_does_not_list(customer_api):
    assert_envelope(customer_api.get("/api/v1/wallet/debts?open=null"), 400, "validation_error")
    assert customer_api.get("/api/v1/wallet/debts?open=1").status_code == 200


def test_a_plans_payment_method_publishes_and_keeps_the_token_pattern():
    request = _schema()["paths"]["/api/v1/bnpl/plans/{plan_id}/payment-method"]["post"]
    ref = request["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    field = _schema()["components"]["schemas"][ref.split("/")[-1]]["properties"]["payment_method"]
    assert field["pattern"] == "^pm_[A-Za-z0-9_]{1,60}$"


def _order(**overrides) -> dict:
    body = {"payment_method": "wallet", "lines": [line("A", 1, "1.00")]}
    for key, value in overrides.items():
        if key.startswith("line_"):
            body["lines"][0][key.removeprefix("line_")] = value
        else:
            body[key] = value
    return body


@pytest.mark.parametrize(
    "overrides",
    [
        {"external_reference": 0},
        {"line_sku": 12},
        {"line_name": 1.5},
        {"line_quantity": "2"},
        {"line_quantity": 2.0},
        {"channel": 0},
    ],
    ids=lambda o: repr(o),
)
def test_a_number_where_the_schema_says_string_or_a_string_for_an_integer_is_refused(
    customer_api, stock, overrides, unchanged_db
):
    stock("A", 10)
    check = unchanged_db()
    response = customer_api.post("/api/v1/orders", _order(**overrides), format="json")
    assert_envelope(response, 400, "validation_error")
    check()


@pytest.mark.parametrize("page_size", ["null", "0", "-1", "1.5"])
def test_a_page_size_that_is_not_a_whole_number_is_refused(customer_api, page_size):
    response = customer_api.get(f"/api/v1/orders?page_size={page_size}")
    assert_envelope(response, 400, "validation_error")
    assert "400" in _operation("/api/v1/orders", "get")["responses"]


def test_a_malformed_idempotency_key_is_refused_on_a_preview_too(customer_api):
    response = customer_api.post(
        "/api/v1/bnpl/plans/999/payoff",
        {"confirm": False},
        format="json",
        HTTP_IDEMPOTENCY_KEY="x" * 256,
    )
    assert_envelope(response, 400, "idempotency.invalid_key")


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("page_size", "9" * 5000),  # int() of it raises: was a 500
        ("page_size", "201"),  # above the published maximum
        ("page", "9" * 5000),
        ("page", "0"),
        ("page", "abc"),
    ],
    ids=lambda v: v[:12],
)
def test_a_page_or_page_size_outside_the_published_bounds_is_refused(customer_api, param, value):
    response = customer_api.get(f"/api/v1/orders?{param}={value}")
    assert_envelope(response, 400, "validation_error")
    assert param in response.json()["error"]["fields"]


def test_page_and_page_size_publish_their_bounds(customer_api):
    parameters = {p["name"]: p["schema"] for p in _operation("/api/v1/orders", "get")["parameters"]}
    assert parameters["page_size"] == {"type": "integer", "minimum": 1, "maximum": 200}
    assert parameters["page"]["minimum"] == 1
    assert parameters["page"]["maximum"] >= 1000
    assert customer_api.get("/api/v1/orders?page_size=200&page=1").status_code == 200


def test_a_string_the_server_trims_to_blank_is_refused_by_the_schema_too(customer_api):
    """The schema's pattern refuses every whitespace str.strip() removes, as the server does."""
    schema = _schema()["components"]["schemas"]["QuoteInputRequest"]
    pattern = schema["properties"]["merchant_categories"]["items"]["pattern"]
    spaces = [chr(c) for c in range(0x3001) if chr(c).isspace()]
    assert "\x1c" in spaces
    assert [s for s in spaces if re.search(pattern, s * 3)] == []
    assert re.search(pattern, " books ")
    body = {"amount": {"amount": "100.00", "currency": "EUR"}, "merchant_categories": ["\x1c"]}
    response = customer_api.post("/api/v1/bnpl/quotes", body, format="json")
    assert_envelope(response, 400, "validation_error")
