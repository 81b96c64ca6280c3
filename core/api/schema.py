"""OpenAPI helpers: every endpoint documents its 4xx answers with the one error shape."""

from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse

from core.api.errors import ErrorSerializer
from core.api.idempotency import VISIBLE_ASCII

_DESCRIPTIONS = {
    400: "Invalid input (field-level messages in error.fields), malformed JSON",
    401: "Not authenticated",
    403: "Authenticated but not allowed",
    404: "Not found, or not yours",
    409: "Conflicts with current state (out of stock, idempotency key in use or reused)",
    413: "The request body is over the size limit (request.too_large)",
    415: "Content type is not application/json",
    422: "Breaks a business rule (e.g. wallet.insufficient_balance)",
    429: "Too many attempts (request.throttled); retry after Retry-After seconds",
    503: "Temporarily unavailable (e.g. auth.sign_in_unavailable); try again shortly",
}


def error_responses(*statuses: int) -> dict[int, OpenApiResponse]:
    return {
        status: OpenApiResponse(ErrorSerializer, description=_DESCRIPTIONS[status])
        for status in statuses
    }


RETRY_AFTER_HEADER = OpenApiParameter(
    name="Retry-After",
    location=OpenApiParameter.HEADER,
    type=int,
    response=[429],
    description="Seconds to wait before trying again.",
)

IDEMPOTENCY_KEY_HEADER = OpenApiParameter(
    name="Idempotency-Key",
    location=OpenApiParameter.HEADER,
    required=False,
    type={"type": "string", "pattern": VISIBLE_ASCII, "minLength": 1, "maxLength": 255},
    description=(
        "Makes the POST safe to retry: a repeat with the same key and body replays the "
        "first response; the same key with another body is 409 idempotency.key_reused."
    ),
)

# Answers any operation that reads a body can give, whatever its view: the parser's and the
# size limit's (core.api.parsers, core.api.middleware).
BODY_ERRORS = (400, 413, 415)


def document_body_errors(result: dict, generator, request, public) -> dict:
    """drf-spectacular post-processing hook: every operation with a request body documents
    the body's own failures (malformed or too deeply nested JSON, too large, not JSON)."""
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict) or "requestBody" not in operation:
                continue
            responses = operation.setdefault("responses", {})
            for status in BODY_ERRORS:
                responses.setdefault(
                    str(status),
                    {
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                        },
                        "description": _DESCRIPTIONS[status],
                    },
                )
    return result


__all__ = [
    "BODY_ERRORS",
    "IDEMPOTENCY_KEY_HEADER",
    "RETRY_AFTER_HEADER",
    "OpenApiExample",
    "document_body_errors",
    "error_responses",
]
