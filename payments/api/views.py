"""The customer's saved cards: list, add (tokenized at the card processor), remove.

Only the customer with their own credentials; a channel key is 403. Another customer's
method id is a 404.
"""

from __future__ import annotations

import re

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import ScopedRateThrottle
from rest_framework.views import APIView

from core.api.errors import ErrorSerializer
from core.api.permissions import IsCustomerInPerson
from core.api.schema import RETRY_AFTER_HEADER, error_responses
from core.errors import InvalidInput
from payments import methods, selectors
from payments.api.serializers import (
    SavedPaymentMethodInputSerializer,
    SavedPaymentMethodListOutputSerializer,
    SavedPaymentMethodOutputSerializer,
)

TAGS = ["payment methods"]
_KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")
KEY_HEADER = OpenApiParameter(
    name="Idempotency-Key",
    location=OpenApiParameter.HEADER,
    required=False,
    type=str,
    description="Makes the POST safe to retry: the processor is asked under this key, so a "
    "repeat returns the card already saved (200) instead of a second one; the same key with "
    "another card is 409 idempotency.key_reused.",
)
UNAVAILABLE = OpenApiResponse(
    ErrorSerializer, description="The card processor is unavailable (payments.provider_unavailable)"
)


class CardSaveThrottle(ScopedRateThrottle):
    """Saving cards, per customer, on the shared cache (``PAYMENT_METHOD_SAVE_RATE``): each
    save asks the processor, so a stolen session cannot test card numbers at speed."""

    def allow_request(self, request: Request, view: APIView) -> bool:
        if request.method != "POST":
            return True
        return super().allow_request(request, view)


class PaymentMethodListApi(APIView):
    permission_classes = [IsCustomerInPerson]
    throttle_classes = [CardSaveThrottle]
    throttle_scope = "payment_methods"

    @extend_schema(
        operation_id="payment_methods_list",
        tags=TAGS,
        summary="The caller's saved cards (removed ones are not listed)",
        responses={200: SavedPaymentMethodListOutputSerializer, **error_responses(401, 403)},
    )
    def get(self, request: Request) -> Response:
        rows = selectors.payment_methods_for_customer(customer_id=request.user.customer.pk)
        return Response(SavedPaymentMethodListOutputSerializer({"payment_methods": rows}).data)

    @extend_schema(
        operation_id="payment_methods_create",
        tags=TAGS,
        summary="Save a card: the number goes to the card processor, the token comes back",
        description="422 payments.card_rejected when the processor refuses the details "
        "(number, expiry); 422 payments.payment_method_limit when the customer already has "
        "PAYMENTS_MAX_SAVED_CARDS (10) saved cards. 409 idempotency.key_reused: the "
        "Idempotency-Key saved another card; 409 payments.payment_method_removed: the card "
        "saved under this key was removed since (save it again with a new key); 409 "
        "payments.token_taken: the processor's token is another customer's. 429 "
        "request.throttled past PAYMENT_METHOD_SAVE_RATE (10 an hour) per customer "
        "(Retry-After, seconds).",
        parameters=[KEY_HEADER, RETRY_AFTER_HEADER],
        request=SavedPaymentMethodInputSerializer,
        responses={
            200: SavedPaymentMethodOutputSerializer,
            201: SavedPaymentMethodOutputSerializer,
            **error_responses(400, 401, 403, 409, 415, 422, 429),
            503: UNAVAILABLE,
        },
    )
    def post(self, request: Request) -> Response:
        data = SavedPaymentMethodInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        key = request.headers.get("Idempotency-Key")
        if key is not None and not _KEY_RE.match(key):
            raise InvalidInput(
                "Idempotency-Key must be 1 to 255 visible ASCII characters.",
                code="idempotency.invalid_key",
                fields={"Idempotency-Key": ["1 to 255 visible ASCII characters."]},
            )
        method, created = methods.payment_method_save(
            customer_id=request.user.customer.pk,
            card_number=data.validated_data["card_number"],
            exp_month=data.validated_data["exp_month"],
            exp_year=data.validated_data["exp_year"],
            request_key=key,
            actor=request.user,
        )
        return Response(
            SavedPaymentMethodOutputSerializer(method).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class PaymentMethodDetailApi(APIView):
    permission_classes = [IsCustomerInPerson]

    @extend_schema(
        operation_id="payment_methods_remove",
        tags=TAGS,
        summary="Remove a saved card; it is never accepted again",
        description="409 payments.payment_method_in_use while an active installment plan or "
        "a pending credit application is debited from it: move the plan to another card "
        "first (POST /api/v1/bnpl/plans/{id}/payment-method).",
        responses={204: None, **error_responses(401, 403, 404, 409)},
    )
    def delete(self, request: Request, method_id: int) -> Response:
        methods.payment_method_remove(
            customer_id=request.user.customer.pk, method_id=method_id, actor=request.user
        )
        return Response(status=status.HTTP_204_NO_CONTENT)
