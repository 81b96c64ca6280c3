from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.permissions import IsCustomer
from core.api.schema import error_responses
from wallet import selectors
from wallet.api.serializers import WalletListOutputSerializer


class WalletApi(APIView):
    permission_classes = [IsCustomer]

    @extend_schema(
        operation_id="wallet_retrieve",
        tags=["wallet"],
        summary="The caller's wallets, one per currency, with balances",
        responses={200: WalletListOutputSerializer, **error_responses(401, 403)},
    )
    def get(self, request: Request) -> Response:
        wallets = selectors.wallets_for_customer(customer=request.user.customer)
        return Response(WalletListOutputSerializer({"wallets": wallets}).data)
