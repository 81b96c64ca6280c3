"""Sign-in pages (the customer login and the admin login) behind the sign-in throttle."""

from __future__ import annotations

import functools
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from customers import throttling


def locked_out(request: HttpRequest, wait: int) -> HttpResponse:
    """The page a locked-out sign-in gets: 429, with how long to wait."""
    response = TemplateResponse(
        request,
        "registration/locked_out.html",
        {"minutes": throttling.minutes(wait), "login_url": request.path},
        status=429,
    )
    response["Retry-After"] = str(wait)
    return response


def unavailable(request: HttpRequest) -> HttpResponse:
    """The page a sign-in gets while the throttle cannot count it: 503, try again shortly."""
    response = TemplateResponse(
        request, "registration/sign_in_unavailable.html", {"login_url": request.path}, status=503
    )
    response["Retry-After"] = "30"
    return response


def throttled_login(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """``view`` (a login view) counts each sign-in first and refuses those past a limit."""

    @functools.wraps(view)
    def login(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if request.method != "POST":
            return view(request, *args, **kwargs)
        username = request.POST.get("username", "")
        try:
            attempt = throttling.login_attempt(ip=throttling.client_ip(request), username=username)
        except throttling.ThrottleUnavailable:
            return unavailable(request)
        if attempt.wait is not None:
            return locked_out(request, attempt.wait)
        response = view(request, *args, **kwargs)
        signed_in = (
            response.status_code == 302
            and request.user.is_authenticated
            and throttling.normalize_username(request.user.get_username())
            == throttling.normalize_username(username)
        )
        if signed_in:
            throttling.login_succeeded(attempt)
        return response

    return login
