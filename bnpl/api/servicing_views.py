"""The customer's installment plans: live schedules, date changes, extra payments, early
payoff, cancellation and the income-aligned dates opt-in.

Every plan is looked up through ``bnpl.selectors.plan_for_customer`` (or a service scoped
with ``customer_id``): another customer's plan is a 404. Only the customer in person may
use these endpoints; a channel acting for them may not.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from bnpl import selectors, servicing
from bnpl.api.servicing_serializers import (
    BorrowerProfileSerializer,
    ExtraPaymentInputSerializer,
    ExtraPaymentOutputSerializer,
    PayoffInputSerializer,
    PayoffOutputSerializer,
    PlanCancelInputSerializer,
    PlanListOutputSerializer,
    PlanOutputSerializer,
    RescheduleInputSerializer,
    RescheduleOutputSerializer,
    SuggestedDatesOutputSerializer,
)
from bnpl.models import BorrowerProfile
from core.api.idempotency import idempotency_key, idempotent
from core.api.permissions import IsCustomerInPerson
from core.api.schema import IDEMPOTENCY_KEY_HEADER, error_responses

TAGS = ["installments"]


def _plan_data(customer, plan_id: int) -> dict:
    plan = selectors.plan_for_customer(customer=customer, plan_id=plan_id)
    return PlanOutputSerializer(selectors.plan_view(plan)).data


class PlanListApi(APIView):
    permission_classes = [IsCustomerInPerson]

    @extend_schema(
        operation_id="bnpl_plans_list",
        tags=TAGS,
        summary="The caller's installment plans with their live schedules",
        responses={200: PlanListOutputSerializer, **error_responses(401, 403)},
    )
    def get(self, request: Request) -> Response:
        plans = selectors.plans_for_customer(customer=request.user.customer)
        return Response(PlanListOutputSerializer({"plans": selectors.plan_views(plans)}).data)


class PlanDetailApi(APIView):
    permission_classes = [IsCustomerInPerson]

    @extend_schema(
        operation_id="bnpl_plans_retrieve",
        tags=TAGS,
        summary="One plan: every installment paid, due, overdue or scheduled, and totals",
        responses={200: PlanOutputSerializer, **error_responses(401, 403, 404)},
    )
    def get(self, request: Request, plan_id: int) -> Response:
        return Response(_plan_data(request.user.customer, plan_id))


class PlanRescheduleApi(APIView):
    permission_classes = [IsCustomerInPerson]

    @extend_schema(
        operation_id="bnpl_plans_reschedule",
        tags=TAGS,
        summary="Move an installment's due date: preview the new schedule, then confirm it",
        parameters=[IDEMPOTENCY_KEY_HEADER],
        request=RescheduleInputSerializer,
        responses={
            200: RescheduleOutputSerializer,
            **error_responses(400, 401, 403, 404, 409, 415, 422),
        },
    )
    def post(self, request: Request, plan_id: int) -> Response:
        data = RescheduleInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        customer = request.user.customer
        plan = selectors.plan_for_customer(customer=customer, plan_id=plan_id)
        args = {
            "plan_id": plan.pk,
            "number": data.validated_data["number"],
            "new_date": data.validated_data["due_date"],
            "customer_id": customer.pk,
        }

        def render(result: servicing.Reschedule) -> tuple[int, dict]:
            body = {
                **result.__dict__,
                "plan": selectors.plan_view(result.plan, installments=result.installments),
            }
            return status.HTTP_200_OK, RescheduleOutputSerializer(body).data

        if not data.validated_data["confirm"]:
            idempotency_key(request)  # documented on the operation: a bad one is refused
            code, body = render(servicing.plan_reschedule_preview(**args))
            return Response(body, status=code)
        return idempotent(
            request,
            render=render,
            perform=lambda claim: servicing.plan_reschedule(
                **args, actor=request.user, idempotency=claim
            ),
        )


class PlanSuggestedDatesApi(APIView):
    permission_classes = [IsCustomerInPerson]

    @extend_schema(
        operation_id="bnpl_plans_suggested_dates",
        tags=TAGS,
        summary="Due dates aligned with the caller's income days, and how they were inferred",
        responses={200: SuggestedDatesOutputSerializer, **error_responses(401, 403, 404)},
    )
    def get(self, request: Request, plan_id: int) -> Response:
        customer = request.user.customer
        plan = selectors.plan_for_customer(customer=customer, plan_id=plan_id)
        inference, suggestions = selectors.plan_suggested_dates(plan=plan)
        opted_in = BorrowerProfile.objects.filter(
            customer=customer, income_aligned_dates=True
        ).exists()
        return Response(
            SuggestedDatesOutputSerializer(
                {
                    "income": inference,
                    "income_aligned_dates": opted_in,
                    "cash_flow_aware": plan.product.cash_flow_aware,
                    "suggestions": suggestions,
                }
            ).data
        )


class InstallmentPaymentApi(APIView):
    permission_classes = [IsCustomerInPerson]

    @extend_schema(
        operation_id="bnpl_installments_pay",
        tags=TAGS,
        summary="Pay toward one installment from the wallet or the plan's card",
        parameters=[IDEMPOTENCY_KEY_HEADER],
        request=ExtraPaymentInputSerializer,
        responses={
            201: ExtraPaymentOutputSerializer,
            202: ExtraPaymentOutputSerializer,
            **error_responses(400, 401, 403, 404, 409, 415, 422),
        },
    )
    def post(self, request: Request, plan_id: int, number: int) -> Response:
        data = ExtraPaymentInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        customer = request.user.customer
        plan = selectors.plan_for_customer(customer=customer, plan_id=plan_id)

        def render(result: servicing.ExtraPayment) -> tuple[int, dict]:
            fresh = selectors.plan_for_customer(customer=customer, plan_id=plan.pk)
            view = selectors.plan_view(fresh)
            body = {
                "status": result.status,
                "source": result.source,
                "amount": result.amount,
                "payment_transaction_id": result.payment_transaction_id,
                "installment": next(i for i in view.installments if i.number == number),
                "plan": view,
            }
            code = status.HTTP_201_CREATED if result.status == "paid" else status.HTTP_202_ACCEPTED
            return code, ExtraPaymentOutputSerializer(body).data

        return idempotent(
            request,
            render=render,
            perform=lambda claim: servicing.installment_pay(
                plan_id=plan.pk,
                number=number,
                amount=data.validated_data["amount"],
                source=data.validated_data["source"],
                customer_id=customer.pk,
                actor=request.user,
                idempotency=claim,
            ),
        )


class PlanPayoffApi(APIView):
    permission_classes = [IsCustomerInPerson]

    @extend_schema(
        operation_id="bnpl_plans_payoff_quote",
        tags=TAGS,
        summary="What paying the whole plan off today costs (unearned interest removed)",
        responses={200: PayoffOutputSerializer, **error_responses(401, 403, 404, 409)},
    )
    def get(self, request: Request, plan_id: int) -> Response:
        return self._preview(request, plan_id)

    def _preview(self, request: Request, plan_id: int) -> Response:
        customer = request.user.customer
        plan = selectors.plan_for_customer(customer=customer, plan_id=plan_id)
        quote = servicing.plan_payoff_preview(plan_id=plan.pk, customer_id=customer.pk)
        body = {
            "confirmed": False,
            "status": "quoted",
            "quote": quote,
            "plan": selectors.plan_view(plan),
        }
        return Response(PayoffOutputSerializer(body).data)

    @extend_schema(
        operation_id="bnpl_plans_payoff",
        tags=TAGS,
        summary="Pay the whole plan off from the wallet or the card (confirm: false previews)",
        parameters=[IDEMPOTENCY_KEY_HEADER],
        request=PayoffInputSerializer,
        responses={
            200: PayoffOutputSerializer,
            202: PayoffOutputSerializer,
            **error_responses(400, 401, 403, 404, 409, 415, 422),
        },
    )
    def post(self, request: Request, plan_id: int) -> Response:
        data = PayoffInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        if not data.validated_data["confirm"]:
            idempotency_key(request)  # documented on the operation: a bad one is refused
            return self._preview(request, plan_id)
        customer = request.user.customer
        plan = selectors.plan_for_customer(customer=customer, plan_id=plan_id)

        def render(result: servicing.Payoff) -> tuple[int, dict]:
            fresh = selectors.plan_for_customer(customer=customer, plan_id=plan.pk)
            body = {
                "confirmed": True,
                "status": result.status,
                "quote": result.quote,
                "plan": selectors.plan_view(fresh),
            }
            code = status.HTTP_200_OK if result.status == "paid" else status.HTTP_202_ACCEPTED
            return code, PayoffOutputSerializer(body).data

        return idempotent(
            request,
            render=render,
            perform=lambda claim: servicing.plan_pay_off(
                plan_id=plan.pk,
                source=data.validated_data["source"],
                expected_total=data.validated_data.get("expected_total"),
                customer_id=customer.pk,
                actor=request.user,
                idempotency=claim,
            ),
        )


class PlanCancelApi(APIView):
    permission_classes = [IsCustomerInPerson]

    @extend_schema(
        operation_id="bnpl_plans_cancel",
        tags=TAGS,
        summary="Cancel a plan before its first installment debit; the down payment returns",
        parameters=[IDEMPOTENCY_KEY_HEADER],
        request=PlanCancelInputSerializer,
        responses={200: PlanOutputSerializer, **error_responses(400, 401, 403, 404, 409, 415)},
    )
    def post(self, request: Request, plan_id: int) -> Response:
        data = PlanCancelInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        customer = request.user.customer
        plan = selectors.plan_for_customer(customer=customer, plan_id=plan_id)
        return idempotent(
            request,
            render=lambda result: (status.HTTP_200_OK, _plan_data(customer, result.pk)),
            perform=lambda claim: servicing.plan_cancel(
                plan_id=plan.pk,
                customer_id=customer.pk,
                actor=request.user,
                reason=data.validated_data["reason"],
                idempotency=claim,
            ),
        )


class BorrowerProfileApi(APIView):
    permission_classes = [IsCustomerInPerson]

    @extend_schema(
        operation_id="bnpl_profile_retrieve",
        tags=TAGS,
        summary="The caller's installment settings",
        responses={200: BorrowerProfileSerializer, **error_responses(401, 403)},
    )
    def get(self, request: Request) -> Response:
        profile = BorrowerProfile.objects.filter(customer=request.user.customer).first()
        return Response({"income_aligned_dates": bool(profile and profile.income_aligned_dates)})

    @extend_schema(
        operation_id="bnpl_profile_update",
        tags=TAGS,
        summary="Opt in or out of due dates aligned with the caller's income days",
        request=BorrowerProfileSerializer,
        responses={200: BorrowerProfileSerializer, **error_responses(400, 401, 403, 415)},
    )
    def patch(self, request: Request) -> Response:
        return self._update(request, partial=True)

    def _update(self, request: Request, *, partial: bool) -> Response:
        data = BorrowerProfileSerializer(data=request.data, partial=partial)
        data.is_valid(raise_exception=True)
        if "income_aligned_dates" not in data.validated_data:  # PATCH {}: nothing to change
            return self.get(request)
        profile = servicing.borrower_income_aligned_set(
            customer=request.user.customer,
            enabled=data.validated_data["income_aligned_dates"],
            actor=request.user,
        )
        return Response({"income_aligned_dates": profile.income_aligned_dates})

    @extend_schema(
        operation_id="bnpl_profile_set",
        tags=TAGS,
        summary="Opt in or out of due dates aligned with the caller's income days",
        request=BorrowerProfileSerializer,
        responses={200: BorrowerProfileSerializer, **error_responses(400, 401, 403, 415)},
    )
    def post(self, request: Request) -> Response:
        return self._update(request, partial=False)
