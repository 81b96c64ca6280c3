"""The envelope middleware: keyed on path_info, and keeping the replaced response's headers."""

import json

from django.http import HttpResponse
from django.test import RequestFactory

from core.api.middleware import ApiErrorMiddleware


def _through(response: HttpResponse, path: str, **extra) -> HttpResponse:
    return ApiErrorMiddleware(lambda request: response)(RequestFactory().get(path, **extra))


def test_a_replaced_error_keeps_its_headers_and_cookies():
    original = HttpResponse("Unauthorized", status=401, content_type="text/plain")
    original["WWW-Authenticate"] = 'Token realm="api"'
    original["Retry-After"] = "30"
    original.set_cookie("seen", "1")
    response = _through(original, "/api/v1/orders")
    assert response["Content-Type"] == "application/json"
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Token realm="api"'
    assert response["Retry-After"] == "30"
    assert response.cookies["seen"].value == "1"
    assert json.loads(response.content)["error"]["code"] == "request.invalid"


def test_the_api_is_recognised_under_a_script_name():
    """Mounted at /oms, request.path is /oms/api/...; path_info is what the app routes."""
    original = HttpResponse("<h1>Not Found</h1>", status=404)
    response = _through(original, "/api/v1/nothing", SCRIPT_NAME="/oms")
    assert response["Content-Type"] == "application/json"
    assert json.loads(response.content)["error"]["code"] == "not_found"
    page = _through(HttpResponse("<h1>Not Found</h1>", status=404), "/oms/api/x")
    assert page["Content-Type"].startswith("text/html")  # not the API
