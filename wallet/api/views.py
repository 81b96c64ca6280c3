from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.api.idempotency import idempotent
from core.api.permissions import IsCustomerInPerson
from core.api.schema import IDEMPOTENCY_KEY_HEADER, error_responses
from core.errors import InvalidInput
from core.money import Money
from wallet import selectors, services
from wallet.api.serializers import (
    AutoDeductInputSerializer,
    DebtListQuerySerializer,
    DebtOutputSerializer,
    EligibilityOutputSerializer,
    EligibilityQuerySerializer,
    RepayInputSerializer,
    WalletListOutputSerializer,
    WithdrawalInputSerializer,
    WithdrawalOutputSerializer,
)
from wallet.bnpl import bnpl_eligibility, customer_profile, wallet_checkout_verdict


class WalletApi(APIView):
    permission_classes = [IsCustomerInPerson]

    @extend_schema(
        operation_id="wallet_retrieve",
        tags=["wallet"],
        summary="The caller's wallets, one per currency, with balances",
        responses={200: WalletListOutputSerializer, **error_responses(401, 403)},
    )
    def get(self, request: Request) -> Response:
        customer = request.user.customer
        wallets = selectors.wallets_for_customer(customer=customer)
        return Response(
            WalletListOutputSerializer(
                {"wallets": wallets, "auto_deduct": customer_profile(customer).auto_deduct}
            ).data
        )


class AutoDeductApi(APIView):
    permission_classes = [IsCustomerInPerson]

    @extend_schema(
        operation_id="wallet_auto_deduct_set",
        tags=["wallet"],
        summary="Switch automatic repayment of debts from wallet credits on or off",
        request=AutoDeductInputSerializer,
        responses={200: AutoDeductInputSerializer, **error_responses(400, 401, 403)},
    )
    def put(self, request: Request) -> Response:
        data = AutoDeductInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        profile = services.customer_auto_deduct_set(
            customer=request.user.customer,
            enabled=data.validated_data["enabled"],
            actor=request.user,
        )
        return Response({"enabled": profile.auto_deduct})


class DebtListApi(APIView):
    permission_classes = [IsCustomerInPerson]

    @extend_schema(
        operation_id="wallet_debts_list",
        tags=["wallet"],
        summary="The caller's wallet BNPL debts, with interest as of today",
        parameters=[DebtListQuerySerializer],
        responses={200: DebtOutputSerializer(many=True), **error_responses(400, 401, 403)},
    )
    def get(self, request: Request) -> Response:
        query = DebtListQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        debts = selectors.debts_for_customer(
            customer=request.user.customer,
            open_only=query.validated_data.get("open") in {"1", "true"},
        )
        return Response(DebtOutputSerializer(selectors.debt_views(debts), many=True).data)


class DebtRepayApi(APIView):
    permission_classes = [IsCustomerInPerson]

    @extend_schema(
        operation_id="wallet_debt_repay",
        tags=["wallet"],
        summary="Repay part or all of a debt from the wallet balance, interest first",
        parameters=[IDEMPOTENCY_KEY_HEADER],
        request=RepayInputSerializer,
        responses={200: DebtOutputSerializer, **error_responses(400, 401, 403, 404, 409, 415, 422)},
    )
    def post(self, request: Request, debt_id: int) -> Response:
        data = RepayInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        customer = request.user.customer
        debt = selectors.debt_for_customer(customer=customer, debt_id=debt_id)

        def render(result) -> tuple[int, dict]:
            view = selectors.debt_views(
                [selectors.debt_for_customer(customer=customer, debt_id=result.pk)]
            )[0]
            return status.HTTP_200_OK, DebtOutputSerializer(view).data

        return idempotent(
            request,
            render=render,
            perform=lambda claim: services.debt_repay(
                customer_id=customer.pk,
                debt_id=debt.pk,
                amount=data.validated_data["amount"],
                actor=request.user,
                idempotency=claim,
            ),
        )


class EligibilityApi(APIView):
    permission_classes = [IsCustomerInPerson]

    @extend_schema(
        operation_id="wallet_bnpl_eligibility",
        tags=["wallet"],
        summary="Would a wallet checkout of this amount go through, and if not, why",
        parameters=[EligibilityQuerySerializer],
        responses={200: EligibilityOutputSerializer, **error_responses(400, 401, 403)},
    )
    def get(self, request: Request) -> Response:
        query = EligibilityQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        currency = query.validated_data.get("currency") or settings.DEFAULT_CURRENCY
        try:
            amount = Money.parse(query.validated_data["amount"], currency)
        except InvalidInput as exc:
            raise InvalidInput(code=exc.code, fields={"amount": [exc.message]}) from None
        customer = request.user.customer
        wallet = next(
            (
                w
                for w in selectors.wallets_for_customer(customer=customer)
                if w.currency == currency
            ),
            None,
        )
        balance = wallet.balance if wallet else Money.zero(currency)
        verdict = wallet_checkout_verdict(customer=customer, balance=balance, amount=amount)
        # The debt figures, shown even when the balance covers the cart.
        bnpl = verdict.bnpl or bnpl_eligibility(
            customer=customer, cart_total=amount, shortfall=verdict.shortfall
        )
        return Response(
            EligibilityOutputSerializer(
                {
                    "eligible": verdict.eligible,
                    "needs_bnpl": verdict.shortfall.is_positive(),
                    "balance": balance,
                    "shortfall": verdict.shortfall,
                    "existing_debt": bnpl.existing_debt,
                    "max_debt": bnpl.max_debt,
                    "reasons": verdict.reasons,
                    "options": verdict.options,
                }
            ).data
        )


class WithdrawalApi(APIView):
    permission_classes = [IsCustomerInPerson]

    @extend_schema(
        operation_id="wallet_withdraw",
        tags=["wallet"],
        summary="Pay wallet balance out to a bank account",
        parameters=[IDEMPOTENCY_KEY_HEADER],
        request=WithdrawalInputSerializer,
        responses={
            201: WithdrawalOutputSerializer,
            **error_responses(400, 401, 403, 409, 415, 422),
        },
    )
    def post(self, request: Request) -> Response:
        data = WithdrawalInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return idempotent(
            request,
            render=lambda w: (status.HTTP_201_CREATED, WithdrawalOutputSerializer(w).data),
            perform=lambda claim: services.wallet_withdraw(
                customer=request.user.customer,
                amount=data.validated_data["amount"],
                iban=data.validated_data["iban"],
                actor=request.user,
                idempotency=claim,
            ),
        )
