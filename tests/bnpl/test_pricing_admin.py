"""Back-office screens for plan products and promotions: amounts in major units, audited."""

from datetime import datetime
from decimal import Decimal

import pytest

from bnpl.models import PlanProduct, Promotion
from core import clock
from core.models import AuditEntry

pytestmark = pytest.mark.django_db

PRODUCT_ADD = "/admin/bnpl/planproduct/add/"
PROMOTION_ADD = "/admin/bnpl/promotion/add/"


def product_form(**overrides) -> dict:
    return {
        "code": "pay-in-12",
        "name": "Pay in 12",
        "active": "on",
        "currency": "EUR",
        "min_amount": "50.00",
        "max_amount": "5000.00",
        "installment_count": "12",
        "frequency": "monthly",
        "down_payment": "none",
        "down_payment_percent": "0",
        "interest_method": "declining",
        "apr": "19.99",
        "origination_fee_flat": "2.50",
        "origination_fee_percent": "0",
        "installment_fee": "0.99",
        "late_fee_amount": "5.00",
        "late_fee_grace_days": "3",
        "late_fee_cap_installment": "0",
        "late_fee_cap_plan_percent": "25",
        "refund_allocation": "last_first",
        "reschedule_max_days": "14",
        "reschedule_max_count": "2",
        "reschedule_fee": "0",
        "decider": "internal",
        "partner_account": "",
    } | overrides


def test_staff_add_a_product_in_major_units_and_the_addition_is_audited(admin_client):
    response = admin_client.post(PRODUCT_ADD, product_form())
    assert response.status_code == 302, response.context["adminform"].form.errors
    product = PlanProduct.objects.get(code="pay-in-12")
    assert (product.min_amount, product.max_amount) == (5000, 500000)
    assert (product.origination_fee_flat, product.installment_fee, product.late_fee_amount) == (
        250,
        99,
        500,
    )
    assert product.apr == Decimal("19.99")
    assert product.created_at is not None
    assert AuditEntry.objects.filter(action="admin.add", target_id=str(product.pk)).exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"interest_method": "flat", "apr": "0"}, "cannot be priced"),
        ({"interest_method": "zero", "apr": "5"}, "cannot be priced"),
        ({"down_payment": "first_installment", "installment_count": "1"}, "cannot be priced"),
        ({"installment_fee": "0.999"}, "at most 2 decimal place"),
    ],
)
def test_products_whose_terms_cannot_be_priced_are_refused(
    admin_client, unchanged_db, overrides, message
):
    check = unchanged_db()
    response = admin_client.post(PRODUCT_ADD, product_form(**overrides))
    assert response.status_code == 200
    assert message in response.content.decode()
    check()


def test_change_form_previews_the_schedule_of_a_sample_amount(admin_client):
    admin_client.post(PRODUCT_ADD, product_form())
    product = PlanProduct.objects.get(code="pay-in-12")
    with clock.travel_to(datetime(2026, 1, 31, 12, tzinfo=clock.business_tz())):
        page = admin_client.get(f"/admin/bnpl/planproduct/{product.pk}/change/").content.decode()
    # 1,000.00 EUR at 19.99 %: the first month's interest is 1000 × 0.1999 / 12 = 16.66;
    # line 1 also carries the 2.50 origination fee and the 0.99 installment fee.
    assert "1000.00 EUR over 12 line(s)" in page
    assert "<td>1</td><td>2026-02-28</td>" in page
    assert "16.66 EUR" in page
    assert "3.49 EUR" in page
    # The money fields show major units again.
    assert 'value="2.50"' in page


def test_staff_add_a_promotion_with_categories_and_tiers(admin_client):
    admin_client.post(PRODUCT_ADD, product_form())
    product = PlanProduct.objects.get(code="pay-in-12")
    response = admin_client.post(
        PROMOTION_ADD,
        {
            "code": "gadgets-0",
            "name": "Gadgets at 0 %",
            "active": "on",
            "kind": "zero_interest",
            "apr": "0",
            "merchant_categories": "gadgets, electronics, gadgets",
            "customer_tiers": ["gold", "platinum"],
            "products": [product.pk],
            "valid_from_0": "2026-01-01",
            "valid_from_1": "00:00:00",
            "valid_until_0": "",
            "valid_until_1": "",
            "priority": "10",
        },
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    promo = Promotion.objects.get(code="gadgets-0")
    assert promo.merchant_categories == ["electronics", "gadgets"]
    assert promo.customer_tiers == ["gold", "platinum"]
    assert list(promo.products.all()) == [product]
    assert AuditEntry.objects.filter(action="admin.add", target_id=str(promo.pk)).exists()


def test_only_a_reduced_apr_promotion_has_an_apr(admin_client, unchanged_db):
    check = unchanged_db()
    response = admin_client.post(
        PROMOTION_ADD,
        {
            "code": "odd",
            "name": "Odd",
            "kind": "fee_waived",
            "apr": "5",
            "valid_from_0": "2026-01-01",
            "valid_from_1": "00:00:00",
            "priority": "10",
        },
    )
    assert response.status_code == 200
    assert "Only a reduced-APR promotion has an APR" in response.content.decode()
    check()
