"""Plan servicing races against committed rows: threads with their own connections."""

from collections import Counter
from datetime import date

import pytest
from rest_framework.test import APIClient

from bnpl.models import Installment, Plan, PlanStatus
from bnpl.services import plan_receivable
from tests.bnpl.factories import make_plan
from tests.factories import ChannelFactory, fund, make_customer, money, token_for
from wallet.models import Wallet

pytestmark = pytest.mark.django_db(transaction=True)


def client_for(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def wallet_balance(customer) -> int:
    return Wallet.objects.select_related("account").get(customer=customer).account.balance


@pytest.fixture
def borrower():
    ChannelFactory(code="web")
    customer = make_customer()
    fund(customer, "500.00")
    plan = make_plan(customer=customer, amount="300.00", start_date=date(2026, 12, 1))
    return customer, plan, token_for(customer)


def test_concurrent_extra_payments_never_overpay_an_installment(concurrently, borrower):
    customer, plan, token = borrower
    url = f"/api/v1/bnpl/plans/{plan.pk}/installments/1/payments"

    def pay(i: int):
        response = client_for(token).post(url, {"amount": money("30.00")}, format="json")
        return response.status_code, response.json()

    results = concurrently(10, pay)

    # 100.00 owed: three payments of 30.00 fit, a fourth would overpay.
    assert Counter(status for status, _ in results) == {201: 3, 400: 7}, results
    assert {body["error"]["code"] for status, body in results if status == 400} == {
        "bnpl.overpayment"
    }
    first = Installment.objects.get(plan=plan, number=1)
    assert (first.paid, first.outstanding) == (9_000, 1_000)
    assert wallet_balance(customer) == 50_000 - 9_000
    assert plan_receivable(customer_id=customer.pk, currency="EUR").balance == 30_000 - 9_000


def test_payoff_racing_extra_payments_pays_exactly_what_is_owed(concurrently, borrower):
    customer, plan, token = borrower

    def act(i: int):
        client = client_for(token)
        if i == 0:
            response = client.post(
                f"/api/v1/bnpl/plans/{plan.pk}/payoff", {"confirm": True}, format="json"
            )
        else:
            response = client.post(
                f"/api/v1/bnpl/plans/{plan.pk}/installments/{i}/payments",
                {"amount": money("40.00")},
                format="json",
            )
        return response.status_code, response.json()

    results = concurrently(4, act)

    assert results[0][0] == 200, results[0]
    for status, body in results[1:]:
        # Before the payoff: paid; after it: the plan is complete.
        assert status == 201 or body["error"]["code"] == "bnpl.plan_not_active", body
    assert Plan.objects.get(pk=plan.pk).status == PlanStatus.COMPLETED
    assert plan_receivable(customer_id=customer.pk, currency="EUR").balance == 0
    assert wallet_balance(customer) == 50_000 - 30_000
