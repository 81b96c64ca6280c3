"""Request middleware of the project's own."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from core import clock


class BusinessTimeZoneMiddleware:
    """Pages (the customer's and the admin) show times in ``BUSINESS_TIME_ZONE``.

    The date a person reads beside a time is the business date, so the two agree; the API
    (``/api/``) keeps answering in UTC, which machines compare.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info.startswith("/api/"):
            return self.get_response(request)
        with timezone.override(clock.business_tz()):
            return self.get_response(request)
