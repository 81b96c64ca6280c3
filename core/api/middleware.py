"""Everything under ``/api/`` answers in the JSON error envelope, even outside DRF's views:
URL-resolver 404s (``/api/v1/orders/abc``), bodies over the size limit, server errors."""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from core.api.errors import error_body

API_PREFIX = "/api/"

CODES = {
    400: "request.malformed",
    403: "auth.permission_denied",
    404: "not_found",
    405: "request.method_not_allowed",
    413: "request.too_large",
    500: "server_error",
}


def api_error_response(status: int, message: str | None = None) -> JsonResponse:
    code = CODES.get(status, "server_error" if status >= 500 else "request.invalid")
    text = message or HTTPStatus(status).phrase + "."
    return JsonResponse(error_body(code, text), status=status)


class ApiErrorMiddleware:
    """Refuses an oversized body up front (413) and turns any non-JSON error response under
    ``/api/`` into the envelope. Pages outside the API keep Django's own error pages."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # path_info, as the time-zone middleware: the app may be mounted under a SCRIPT_NAME.
        if not request.path_info.startswith(API_PREFIX):
            return self.get_response(request)
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return api_error_response(400, "Content-Length is not a number.")
        if limit is not None and length > limit:
            return api_error_response(413, f"The request body is over {limit} bytes.")
        response = self.get_response(request)
        if response.status_code >= 400 and not response.get("Content-Type", "").startswith(
            "application/json"
        ):
            return _replaced(response)
        return response


# Headers that describe the replaced body; every other one (WWW-Authenticate, Allow,
# Retry-After, Vary, cookies) still holds for the envelope.
_BODY_HEADERS = {"content-type", "content-length", "content-encoding", "content-disposition"}


def _replaced(response: HttpResponse) -> JsonResponse:
    """The envelope for ``response``'s status, keeping its headers and cookies."""
    envelope = api_error_response(response.status_code)
    for name, value in response.items():
        if name.lower() not in _BODY_HEADERS:
            envelope[name] = value
    envelope.cookies = response.cookies
    return envelope
