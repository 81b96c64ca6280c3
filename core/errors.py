"""The one error type of the product.

Every failure a caller can act on is an ``ApplicationError`` with a stable, dotted
``code`` (``wallet.insufficient_balance``); the API turns it into
``{"error": {"code", "message", "fields"}}`` with the subclass's HTTP status.
"""

from typing import Any


class ApplicationError(Exception):
    code = "application_error"
    status_code = 400
    default_message = "The request could not be carried out."

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        fields: dict[str, list[str]] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.message = message or self.default_message
        if code:
            self.code = code
        self.fields = fields or {}
        self.extra = extra or {}
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class InvalidInput(ApplicationError):
    code = "validation_error"
    status_code = 400
    default_message = "The request has invalid fields."


class NotFound(ApplicationError):
    code = "not_found"
    status_code = 404
    default_message = "Not found."


class PermissionDenied(ApplicationError):
    code = "permission_denied"
    status_code = 403
    default_message = "You may not do this."


class Conflict(ApplicationError):
    code = "conflict"
    status_code = 409
    default_message = "The request conflicts with the current state."


class BusinessRuleViolation(ApplicationError):
    code = "business_rule"
    status_code = 422
    default_message = "The request breaks a business rule."
