from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from bnpl import quoting
from bnpl.api.serializers import QuoteInputSerializer, QuoteListOutputSerializer
from core.api.permissions import IsCustomer
from core.api.schema import error_responses


class QuoteApi(APIView):
    """Quotes read and write nothing: a channel acting for a customer may ask too (as at
    checkout)."""

    permission_classes = [IsCustomer]

    @extend_schema(
        operation_id="bnpl_quotes_create",
        tags=["installments"],
        summary="Every installment plan the caller can get for a cart, with full schedules",
        request=QuoteInputSerializer,
        responses={200: QuoteListOutputSerializer, **error_responses(400, 401, 403, 415)},
    )
    def post(self, request: Request) -> Response:
        data = QuoteInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        quotes = quoting.quote_plans(
            customer=request.user.customer,
            amount=data.validated_data["amount"],
            merchant_categories=data.validated_data["merchant_categories"],
        )
        return Response(QuoteListOutputSerializer({"plans": quotes}).data)
