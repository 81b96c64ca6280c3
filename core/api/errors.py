"""One exception handler: every 4xx is ``{"error": {"code", "message", "fields"}}``."""

from __future__ import annotations

import math
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from rest_framework import exceptions, serializers
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import set_rollback

from core.errors import ApplicationError

NON_FIELD = api_settings.NON_FIELD_ERRORS_KEY

# Stable codes for the framework's own exceptions.
DRF_CODES: dict[type[exceptions.APIException], str] = {
    exceptions.ValidationError: "validation_error",
    exceptions.ParseError: "request.malformed",
    exceptions.UnsupportedMediaType: "request.unsupported_media_type",
    exceptions.NotAuthenticated: "auth.not_authenticated",
    exceptions.AuthenticationFailed: "auth.failed",
    exceptions.PermissionDenied: "auth.permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "request.method_not_allowed",
    exceptions.NotAcceptable: "request.not_acceptable",
    exceptions.Throttled: "request.throttled",
}


def flatten_errors(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """``{"lines": [{"quantity": ["…"]}]}`` → ``{"lines.0.quantity": ["…"]}``."""
    if isinstance(detail, dict):
        flat: dict[str, list[str]] = {}
        for key, value in detail.items():
            if key == NON_FIELD and prefix:
                path = prefix  # errors of the nested object as a whole belong to its path
            else:
                path = f"{prefix}.{key}" if prefix else str(key)
            for field, messages in flatten_errors(value, path).items():
                flat.setdefault(field, []).extend(messages)
        return flat
    if isinstance(detail, list):
        if all(not isinstance(item, dict | list) for item in detail):
            return {prefix or NON_FIELD: [str(item) for item in detail]}
        flat = {}
        for index, item in enumerate(detail):
            if item:
                flat.update(flatten_errors(item, f"{prefix}.{index}" if prefix else str(index)))
        return flat
    return {prefix or NON_FIELD: [str(detail)]}


def error_body(
    code: str, message: str, fields: dict[str, list[str]] | None = None, **extra: Any
) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "fields": fields or {}, **extra}}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ApplicationError):
        set_rollback()
        return Response(
            error_body(exc.code, exc.message, exc.fields, **exc.extra), status=exc.status_code
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    if not isinstance(exc, exceptions.APIException):
        return None  # a bug: let Django answer 500 and log it
    set_rollback()
    code = next((c for cls, c in DRF_CODES.items() if isinstance(exc, cls)), "request.invalid")
    headers = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(math.ceil(exc.wait))  # never 0 while still throttled
    if isinstance(exc, exceptions.ValidationError):
        fields = flatten_errors(exc.detail)
        first = next(iter(fields.items()), None)
        message = f"Invalid input: {first[0]}: {first[1][0]}" if first else "Invalid input."
        return Response(error_body(code, message, fields), status=exc.status_code, headers=headers)
    return Response(error_body(code, str(exc.detail)), status=exc.status_code, headers=headers)


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(
        help_text="Stable machine-readable code, e.g. wallet.insufficient_balance"
    )
    message = serializers.CharField(help_text="Human-readable explanation")
    fields = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        help_text="Field path (dotted, e.g. lines.0.quantity) → messages",
    )


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()
