from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.generics import ListAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.idempotency import idempotent
from core.api.permissions import IsCustomer
from core.api.schema import IDEMPOTENCY_KEY_HEADER, OpenApiExample, error_responses
from core.errors import InvalidInput, PermissionDenied
from oms import selectors, services
from oms.api.serializers import (
    CancelInputSerializer,
    CheckoutInputSerializer,
    OrderOutputSerializer,
    RefundInputSerializer,
)
from oms.models import Channel, ChannelKind, Order, PaymentMethod


def _caller_channel(request: Request) -> Channel | None:
    return request.auth if isinstance(request.auth, Channel) else None


def _render_created(order: Order) -> tuple[int, dict]:
    # The service hands back the order with its lines and channel in memory: no re-read.
    return status.HTTP_201_CREATED, OrderOutputSerializer(order).data


class OrderListCreateApi(ListAPIView):
    permission_classes = [IsCustomer]
    serializer_class = OrderOutputSerializer

    def get_queryset(self):
        return selectors.orders_for_caller(
            customer=self.request.user.customer, channel=_caller_channel(self.request)
        )

    @extend_schema(
        operation_id="orders_list",
        tags=["orders"],
        responses={200: OrderOutputSerializer(many=True), **error_responses(400, 401, 403, 404)},
    )
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        operation_id="orders_checkout",
        tags=["orders"],
        summary="Place and pay an order in one call",
        parameters=[IDEMPOTENCY_KEY_HEADER],
        request=CheckoutInputSerializer,
        examples=[
            OpenApiExample(
                "Two tees from the wallet",
                request_only=True,
                value={
                    "payment_method": "wallet",
                    "lines": [
                        {
                            "sku": "TEE-BLK-M",
                            "name": "Tee",
                            "quantity": 2,
                            "unit_price": {"amount": "19.99", "currency": "EUR"},
                            "tax": {"amount": "8.40", "currency": "EUR"},
                        }
                    ],
                },
            )
        ],
        responses={
            201: OrderOutputSerializer,
            **error_responses(400, 401, 403, 404, 409, 413, 415, 422),
        },
    )
    def post(self, request: Request) -> Response:
        data = CheckoutInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        if values["payment_method"] == PaymentMethod.INSTALLMENTS and _caller_channel(request):
            # A plan is a loan: the borrower agrees to it with their own credentials. (Klarna
            # and Afterpay carry the customer's consent in the provider's authorization.)
            raise PermissionDenied(
                "An installment plan is a credit agreement: the customer applies with their "
                "own credentials, not a channel's key.",
                code="oms.installments_in_person",
            )
        channel = _caller_channel(request) or self._customer_channel(values.get("channel"))
        lines = [services.LineInput(**line) for line in values["lines"]]
        renewal_of = self._renewed_order(request, values.get("renewal_of"))
        method = values["payment_method"]
        common = {
            "customer": request.user.customer,
            "channel": channel,
            "lines": lines,
            "external_reference": values.get("external_reference"),
            "renewal_of": renewal_of,
            "actor": request.user,
        }
        if method in PaymentMethod.held():
            return self._checkout_held(request, method, values, common)
        return idempotent(
            request,
            render=_render_created,
            perform=lambda claim: (
                services.order_checkout_split(
                    card_payment_method=values["card_payment_method"],
                    idempotency=claim,
                    **common,
                )
                if method == PaymentMethod.WALLET_CARD
                else services.order_checkout(payment_method=method, idempotency=claim, **common)
            ),
        )

    @staticmethod
    def _checkout_held(request: Request, method: str, values: dict, common: dict) -> Response:
        """Installments, Klarna, Afterpay: the order is held, then decided in this request.

        The idempotency key is completed when the order is placed (on hold), so a replay
        answers that snapshot; the first answer shows the order as the decision left it.
        """
        placed: list[Order] = []

        def perform(claim):
            if method == PaymentMethod.INSTALLMENTS:
                order = services.order_checkout_installments(
                    plan_product=values["plan_product"],
                    card_payment_method=values["card_payment_method"],
                    idempotency=claim,
                    **common,
                )
            else:
                order = services.order_checkout_provider(
                    provider=method,
                    authorization_token=values["authorization_token"],
                    idempotency=claim,
                    **common,
                )
            placed.append(order)
            return order

        response = idempotent(request, render=_render_created, perform=perform)
        if placed:
            return Response(OrderOutputSerializer(placed[0]).data, status=status.HTTP_201_CREATED)
        return response

    @staticmethod
    def _renewed_order(request: Request, order_id: int | None) -> Order | None:
        if order_id is None:
            return None
        channel = _caller_channel(request)
        if channel is None:
            raise InvalidInput(
                code="oms.renewal_needs_channel",
                fields={"renewal_of": ["Renewals are placed with the merchant channel's API key."]},
            )
        return selectors.order_for_caller(
            customer=request.user.customer, channel=channel, order_id=order_id
        )

    @staticmethod
    def _customer_channel(code: str | None) -> Channel:
        code = code or settings.DEFAULT_CUSTOMER_CHANNEL
        channel = selectors.channel_for_customer_request(code)
        if channel is None or channel.kind not in (ChannelKind.WEB, ChannelKind.APP):
            raise InvalidInput(
                code="oms.unknown_channel", fields={"channel": [f"No web or app channel {code!r}."]}
            )
        return channel


class OrderDetailApi(APIView):
    permission_classes = [IsCustomer]

    @extend_schema(
        operation_id="orders_retrieve",
        tags=["orders"],
        responses={200: OrderOutputSerializer, **error_responses(401, 403, 404)},
    )
    def get(self, request: Request, order_id: int) -> Response:
        order = selectors.order_for_caller(
            customer=request.user.customer, channel=_caller_channel(request), order_id=order_id
        )
        return Response(OrderOutputSerializer(order).data)


class OrderCancelApi(APIView):
    permission_classes = [IsCustomer]

    @extend_schema(
        operation_id="orders_cancel",
        tags=["orders"],
        summary="Cancel an order that has not shipped; stock is released and the wallet refunded",
        request=CancelInputSerializer,
        responses={200: OrderOutputSerializer, **error_responses(400, 401, 403, 404, 409, 415)},
    )
    def post(self, request: Request, order_id: int) -> Response:
        data = CancelInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        channel = _caller_channel(request)
        order = selectors.order_for_caller(
            customer=request.user.customer, channel=channel, order_id=order_id
        )
        services.order_cancel(
            order_id=order.pk,
            reason=data.validated_data["reason"],
            actor=request.user,
            actor_label=f"channel:{channel.code}" if channel else "customer",
        )
        order = selectors.order_for_caller(
            customer=request.user.customer, channel=channel, order_id=order_id
        )
        return Response(OrderOutputSerializer(order).data)


class OrderRefundApi(APIView):
    """Returns: the merchant's systems (a channel key) refund returned lines."""

    permission_classes = [IsCustomer]

    @extend_schema(
        operation_id="orders_refund",
        tags=["orders"],
        summary="Refund returned lines of a fulfilled order (installment plan or wallet)",
        description="Channel keys only: a refund is the merchant's act. A financed order's "
        "plan shrinks (last installments first, or re-spread, as its product says) and money "
        "already paid beyond the new total goes to the customer's wallet.",
        parameters=[IDEMPOTENCY_KEY_HEADER],
        request=RefundInputSerializer,
        responses={200: OrderOutputSerializer, **error_responses(400, 401, 403, 404, 409, 415)},
    )
    def post(self, request: Request, order_id: int) -> Response:
        channel = _caller_channel(request)
        # Someone else's order is not found, whoever asks; then only a merchant may refund.
        order = selectors.order_for_caller(
            customer=request.user.customer, channel=channel, order_id=order_id
        )
        if channel is None:
            raise PermissionDenied(
                "Refunds are made by the merchant's systems, with a channel key.",
                code="oms.refund_by_merchant_only",
            )
        data = RefundInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        lines = data.validated_data.get("lines")
        return idempotent(
            request,
            render=lambda refunded: (200, OrderOutputSerializer(refunded).data),
            perform=lambda claim: services.order_refund(
                order_id=order.pk,
                lines=None if lines is None else [services.RefundLine(**line) for line in lines],
                reason=data.validated_data["reason"],
                actor=request.user,
                actor_label=f"channel:{channel.code}",
                idempotency=claim,
            ),
        )
