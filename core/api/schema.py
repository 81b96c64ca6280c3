"""OpenAPI helpers: every endpoint documents its 4xx answers with the one error shape."""

from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse

from core.api.errors import ErrorSerializer

_DESCRIPTIONS = {
    400: "Invalid input (field-level messages in error.fields), malformed JSON",
    401: "Not authenticated",
    403: "Authenticated but not allowed",
    404: "Not found, or not yours",
    409: "Conflicts with current state (out of stock, idempotency key in use or reused)",
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
    type=str,
    description=(
        "Makes the POST safe to retry: a repeat with the same key and body replays the "
        "first response; the same key with another body is 409 idempotency.key_reused."
    ),
)

__all__ = ["IDEMPOTENCY_KEY_HEADER", "RETRY_AFTER_HEADER", "OpenApiExample", "error_responses"]
