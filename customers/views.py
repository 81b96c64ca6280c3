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


def throttled_login(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """``view`` (a login view) refuses locked-out sign-ins and counts failed ones."""

    @functools.wraps(view)
    def login(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if request.method != "POST":
            return view(request, *args, **kwargs)
        ip = throttling.client_ip(request)
        username = request.POST.get("username", "")
        wait = throttling.login_wait(ip=ip, username=username)
        if wait is not None:
            return locked_out(request, wait)
        response = view(request, *args, **kwargs)
        signed_in = (
            response.status_code == 302
            and request.user.is_authenticated
            and request.user.get_username().lower() == username.strip().lower()
        )
        if signed_in:
            throttling.login_succeeded(ip=ip, username=username)
        else:
            throttling.login_failed(ip=ip, username=username)
        return response

    return login
