"""Liveness and readiness probes."""

from __future__ import annotations

from celery import current_app
from django.db import connection
from django.http import HttpRequest, JsonResponse

from core import readiness


def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up and answering."""
    return JsonResponse({"status": "ok"})


def _check_database() -> dict[str, str]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any failure means not ready
        return {"status": "error", "detail": f"{type(exc).__name__}: {exc}"}
    return {"status": "ok", "vendor": connection.vendor}


def _check_broker() -> dict[str, str]:
    try:
        with current_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
            transport = conn.transport_cls
    except Exception as exc:
        return {"status": "error", "detail": f"{type(exc).__name__}: {exc}"}
    return {"status": "ok", "transport": str(transport)}


def readyz(request: HttpRequest) -> JsonResponse:
    """Ready to serve: the database and the Celery broker are reachable.

    Checks registered by other apps (``core.readiness``) are added; only gating ones
    can make the answer 503. Details (error text, versions) are shown to staff only.
    """
    checks = {"database": _check_database(), "broker": _check_broker()}
    gating = set(checks)
    for check in readiness.registered():
        try:
            checks[check.name] = check.run()
        except Exception as exc:  # a broken check reports itself, it does not crash /readyz
            checks[check.name] = {"status": "error", "detail": f"{type(exc).__name__}: {exc}"}
        if check.gating:
            gating.add(check.name)
    ready = all(checks[name]["status"] == "ok" for name in gating)
    if not (request.user.is_authenticated and request.user.is_staff):
        # Error text names hosts and users: others learn only which check failed.
        checks = {name: {"status": check["status"]} for name, check in checks.items()}
    return JsonResponse(
        {"status": "ok" if ready else "error", "checks": checks}, status=200 if ready else 503
    )
