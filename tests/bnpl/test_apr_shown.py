"""A plan that costs money never shows an APR of 0, nor the ceiling as if it were its rate.

8.00 EUR in 2 monthly installments, the first at checkout, with a flat origination fee on
line 1: a 4.00 fee makes the checkout payment 8.00 + 4.00, covering the amount, so the
4.00 after it is a cost with no credit (no finite rate); a 3.99 fee leaves 0.01 lent for a
month at a cost of 3.99 (a rate far beyond 9,999.99 %).
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from bnpl.models import AprStatus, Plan
from tests.bnpl.factories import make_plan, make_product
from tests.factories import make_customer, money, token_for

pytestmark = pytest.mark.django_db

START = date(2026, 1, 10)


def product_with_fee(fee_minor: int):
    return make_product(
        code=f"fee-{fee_minor}",
        installment_count=2,
        down_payment="first_installment",
        origination_fee_flat=fee_minor,
        min_amount=100,
    )


def api_for(customer) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(customer)}")
    return client


@pytest.mark.parametrize(
    ("fee", "status"),
    [(400, AprStatus.NO_FINITE_RATE), (399, AprStatus.ABOVE_CEILING)],
)
def test_quote_and_plan_say_there_is_no_rate_instead_of_showing_zero_or_the_cap(fee, status):
    customer = make_customer()
    api = api_for(customer)
    product = product_with_fee(fee)

    quoted = api.post(
        "/api/v1/bnpl/quotes", {"amount": money("8.00", "EUR")}, format="json"
    ).json()["plans"]
    (offer,) = [plan for plan in quoted if plan["product"]["code"] == product.code]
    assert offer["totals"]["cost"] == money(f"{fee / 100:.2f}", "EUR")
    assert (offer["apr"], offer["apr_status"]) == (None, status)

    plan = make_plan(customer=customer, product=product, amount="8.00", start_date=START)
    plan = Plan.objects.get(pk=plan.pk)
    assert (plan.apr, plan.apr_status) == (None, status)

    shown = api.get(f"/api/v1/bnpl/plans/{plan.pk}").json()
    assert (shown["apr"], shown["apr_status"]) == (None, status)


def test_pages_and_admin_explain_a_missing_rate(client, admin_client):
    customer = make_customer()
    plan = make_plan(customer=customer, product=product_with_fee(400), amount="8.00")
    client.force_login(customer.user)

    for url in ("/plans/", f"/plans/{plan.pk}/"):
        html = client.get(url).content.decode()
        assert 'data-fact="apr">none<small> (the checkout payment already covers' in html
        assert "0%" not in html.split('data-fact="apr">')[1][:20]

    page = admin_client.get(reverse("admin:bnpl_plan_change", args=[plan.pk])).content.decode()
    assert AprStatus.NO_FINITE_RATE.label in page


def test_a_plan_with_a_rate_shows_it():
    plan = make_plan(
        customer=make_customer(),
        amount="1200.00",
        installment_count=12,
        interest_method="declining",
        apr=Decimal("19.99"),
    )
    plan = Plan.objects.get(pk=plan.pk)
    assert (plan.apr, plan.apr_status) == (Decimal("21.93"), AprStatus.RATE)
