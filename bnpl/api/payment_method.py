"""POST /api/v1/bnpl/plans/{id}/payment-method: the customer's new card for a plan."""

from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from bnpl import debit_controls
from bnpl.models import DebitRequestStatus, Plan
from core.api.fields import StrictCharField
from core.api.permissions import IsCustomerInPerson
from core.api.schema import error_responses
from core.errors import NotFound


@extend_schema_field(
    {"type": "string", "pattern": debit_controls.PAYMENT_METHOD_TOKEN.pattern, "maxLength": 63}
)
class PaymentMethodTokenField(StrictCharField):
    """A saved card's token; ``debit_request_update_payment_method`` refuses any other with
    its own code (bnpl.invalid_payment_method)."""


class PaymentMethodOutputSerializer(serializers.Serializer):
    plan_id = serializers.IntegerField(source="pk")
    payment_method = StrictCharField()
    debits_waiting_for_a_new_method = serializers.IntegerField()


class PlanPaymentMethodApi(APIView):
    """Only the customer in person may change the card their plan is debited from."""

    permission_classes = [IsCustomerInPerson]

    class InputSerializer(serializers.Serializer):
        payment_method = PaymentMethodTokenField(
            max_length=63,
            trim_whitespace=False,
            help_text="The token (pm_…) of one of the caller's saved cards "
            "(GET /api/v1/payment-methods); any other: 422 payments.payment_method_unknown",
        )

    @extend_schema(
        operation_id="bnpl_plan_payment_method_update",
        tags=["installments"],
        summary="Debit a plan's installments from another saved card",
        request=InputSerializer,
        responses={
            200: PaymentMethodOutputSerializer,
            **error_responses(400, 401, 403, 404, 409, 415, 422),
        },
    )
    def post(self, request: Request, plan_id: int) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        # Scoped to the caller: another customer's plan does not exist.
        if not Plan.objects.filter(customer=request.user.customer, pk=plan_id).exists():
            raise NotFound("No such installment plan.", code="bnpl.plan_not_found")
        plan = debit_controls.debit_request_update_payment_method(
            plan_id=plan_id,
            payment_method=data.validated_data["payment_method"],
            actor=request.user,
        )
        waiting = plan.debit_requests.filter(status=DebitRequestStatus.ACTION_REQUIRED).count()
        return Response(
            PaymentMethodOutputSerializer(
                {
                    "pk": plan.pk,
                    "payment_method": plan.payment_method,
                    "debits_waiting_for_a_new_method": waiting,
                }
            ).data
        )
