"""POST /api/v1/bnpl/quotes: products × promotions for a cart, each with its full schedule."""

from datetime import datetime
from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from bnpl.models import PlanProduct, Promotion
from core import clock
from oms.models import ChannelKind
from payments import crypto
from payments.models import Provider, ProviderAccount
from tests.factories import channel_with_key, make_customer, money, token_for

pytestmark = pytest.mark.django_db

URL = "/api/v1/bnpl/quotes"


def at(day: str, hour: int = 12) -> datetime:
    return datetime.fromisoformat(day).replace(hour=hour, tzinfo=clock.business_tz())


def eur(amount: str) -> dict[str, str]:
    return money(amount, "EUR")


def product(code: str, **fields) -> PlanProduct:
    now = clock.now()
    values = {
        "name": code.replace("-", " ").title(),
        "installment_count": 3,
        "min_amount": 100,
        "max_amount": 1_000_000,
        "created_at": now,
        "updated_at": now,
    } | fields
    return PlanProduct.objects.create(code=code, **values)


def promotion(code: str, kind: str, *, products=(), **fields) -> Promotion:
    values = {
        "name": code.replace("-", " ").title(),
        "valid_from": at("2020-01-01"),
        "created_at": clock.now(),
    } | fields
    promo = Promotion.objects.create(code=code, kind=kind, **values)
    promo.products.set(products)
    return promo


def client_for(customer) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(customer)}")
    return client


def quote(client, amount: str, categories=(), currency: str = "EUR"):
    return client.post(
        URL,
        {"amount": money(amount, currency), "merchant_categories": list(categories)},
        format="json",
    )


def plans_by_code(response) -> dict[str, dict]:
    assert response.status_code == 200, response.json()
    return {plan["product"]["code"]: plan for plan in response.json()["plans"]}


@pytest.fixture
def buyer():
    return make_customer()


@pytest.fixture
def buyer_api(buyer):
    return client_for(buyer)


@pytest.fixture
def pay_in_12():
    """12 monthly installments, declining balance at 19.99 %."""
    return product(
        "pay-in-12", installment_count=12, interest_method="declining", apr=Decimal("19.99")
    )


def test_quote_lists_every_fitting_product_with_its_full_schedule(buyer_api, pay_in_12):
    product(
        "quarter-down",
        installment_count=3,
        down_payment="percent",
        down_payment_percent=Decimal("25"),
    )
    product("dollars", currency="USD")
    product("too-small", max_amount=50_000)  # 500.00 EUR at most
    product("retired", active=False)

    with clock.travel_to(at("2026-01-31")):
        plans = plans_by_code(quote(buyer_api, "1200.00"))

    assert sorted(plans) == ["pay-in-12", "quarter-down"]

    quarter = plans["quarter-down"]
    assert quarter["promotion"] is None
    assert quarter["terms"]["down_payment"] == "percent"
    assert [(line["number"], line["due_date"], line["total"]) for line in quarter["schedule"]] == [
        (0, "2026-01-31", eur("300.00")),
        (1, "2026-02-28", eur("300.00")),
        (2, "2026-03-31", eur("300.00")),
        (3, "2026-04-30", eur("300.00")),
    ]
    assert quarter["totals"] == {
        "principal": eur("1200.00"),
        "interest": eur("0.00"),
        "fees": eur("0.00"),
        "total": eur("1200.00"),
        "cost": eur("0.00"),
        "due_at_checkout": eur("300.00"),
    }
    assert quarter["apr"] == "0.00"

    twelve = plans["pay-in-12"]
    assert twelve["terms"]["nominal_apr"] == "19.990"
    assert len(twelve["schedule"]) == 12
    assert twelve["schedule"][0] == {
        "number": 1,
        "due_date": "2026-02-28",
        "principal": eur("91.17"),
        "interest": eur("19.99"),
        "fee": eur("0.00"),
        "total": eur("111.16"),
    }
    assert twelve["schedule"][-1] == {
        "number": 12,
        "due_date": "2027-01-31",
        "principal": eur("109.28"),
        "interest": eur("1.82"),
        "fee": eur("0.00"),
        "total": eur("111.10"),
    }
    assert twelve["totals"]["interest"] == eur("133.86")
    assert twelve["totals"]["cost"] == eur("133.86")
    assert twelve["totals"]["due_at_checkout"] == eur("0.00")
    assert twelve["apr"] == "21.93"


def test_currencies_without_decimals_are_quoted_in_whole_units(buyer_api):
    product("yen-3", currency="JPY", min_amount=1000, max_amount=1_000_000)
    with clock.travel_to(at("2026-01-31")):
        plan = plans_by_code(quote(buyer_api, "10000", currency="JPY"))["yen-3"]
    assert [line["principal"] for line in plan["schedule"]] == [
        money("3334", "JPY"),
        money("3333", "JPY"),
        money("3333", "JPY"),
    ]
    assert [line["due_date"] for line in plan["schedule"]] == [
        "2026-02-28",
        "2026-03-31",
        "2026-04-30",
    ]
    assert plan["totals"]["total"] == money("10000", "JPY")


def test_amount_limits_are_inclusive(buyer_api):
    product("bounded", min_amount=10_000, max_amount=20_000)
    assert "bounded" in plans_by_code(quote(buyer_api, "100.00"))
    assert "bounded" in plans_by_code(quote(buyer_api, "200.00"))
    assert "bounded" not in plans_by_code(quote(buyer_api, "99.99"))
    assert "bounded" not in plans_by_code(quote(buyer_api, "200.01"))


def test_zero_interest_promotion_applies_to_its_category_and_not_to_another(buyer_api, pay_in_12):
    promotion("electronics-0", "zero_interest", merchant_categories=["electronics"])

    # 1,200.00 EUR of electronics: 12 × 100.00, no interest, no cost.
    electronics = plans_by_code(quote(buyer_api, "1200.00", ["electronics", "electronics"]))
    plan = electronics["pay-in-12"]
    assert plan["promotion"]["code"] == "electronics-0"
    assert plan["promotion"]["kind"] == "zero_interest"
    assert plan["promotion"]["reason"] == (
        "Electronics 0 (electronics-0): no interest; every line's merchant category "
        "(electronics) is one the promotion covers; for every customer tier; priority 100."
    )
    assert plan["terms"]["interest_method"] == "zero"
    assert {line["total"]["amount"] for line in plan["schedule"]} == {"100.00"}
    assert plan["totals"]["interest"] == eur("0.00")
    assert plan["totals"]["total"] == eur("1200.00")
    assert plan["apr"] == "0.00"

    # The same amount of garden furniture pays the product's interest: 133.86.
    garden = plans_by_code(quote(buyer_api, "1200.00", ["garden"]))["pay-in-12"]
    assert garden["promotion"] is None
    assert garden["schedule"][0]["total"] == eur("111.16")
    assert garden["totals"]["interest"] == eur("133.86")
    assert garden["apr"] == "21.93"

    # A cart mixing both is not all electronics: no promotion; nor is a cart of unknown lines.
    mixed = plans_by_code(quote(buyer_api, "1200.00", ["electronics", "garden"]))
    assert mixed["pay-in-12"]["promotion"] is None
    assert plans_by_code(quote(buyer_api, "1200.00"))["pay-in-12"]["promotion"] is None


def test_tier_promotion_lowers_the_apr_for_its_tiers_only(pay_in_12):
    promotion("gold-apr", "reduced_apr", apr=Decimal("9.99"), customer_tiers=["gold", "platinum"])
    gold = client_for(make_customer(tier="gold"))
    standard = client_for(make_customer())

    gold_plan = plans_by_code(quote(gold, "1200.00", ["garden"]))["pay-in-12"]
    assert gold_plan["promotion"]["code"] == "gold-apr"
    assert "Gold" in gold_plan["promotion"]["reason"]
    assert "19.99 % to 9.99 %" in gold_plan["promotion"]["reason"]
    assert gold_plan["terms"]["nominal_apr"] == "9.990"
    # 1200 · r / (1 − (1+r)^−12) at r = 0.0999/12 = 105.4934… → 105.49; first interest 9.99.
    assert gold_plan["schedule"][0]["total"] == eur("105.49")
    assert gold_plan["schedule"][0]["interest"] == eur("9.99")

    standard_plan = plans_by_code(quote(standard, "1200.00", ["garden"]))["pay-in-12"]
    assert standard_plan["promotion"] is None
    assert standard_plan["terms"]["nominal_apr"] == "19.990"


def test_promotion_counts_only_inside_its_validity_window(buyer_api, pay_in_12):
    promotion(
        "june-0",
        "zero_interest",
        valid_from=at("2026-06-01", hour=0),
        valid_until=at("2026-07-01", hour=0),
    )

    def applied(moment: datetime) -> str | None:
        with clock.travel_to(moment):
            plan = plans_by_code(quote(buyer_api, "1200.00"))["pay-in-12"]
        return plan["promotion"] and plan["promotion"]["code"]

    assert applied(at("2026-05-31", hour=23)) is None
    assert applied(at("2026-06-01", hour=0)) == "june-0"
    assert applied(at("2026-06-30", hour=23)) == "june-0"
    assert applied(at("2026-07-01", hour=0)) is None


def test_lowest_priority_number_wins_among_promotions_that_apply(buyer_api):
    product(
        "with-fees",
        installment_count=6,
        interest_method="flat",
        apr=Decimal("10"),
        origination_fee_flat=1000,
    )
    promotion("no-fees", "fee_waived", priority=10)
    promotion("no-interest", "zero_interest", priority=20)
    plan = plans_by_code(quote(buyer_api, "600.00"))["with-fees"]
    assert plan["promotion"]["code"] == "no-fees"
    assert "priority 10" in plan["promotion"]["reason"]
    assert plan["totals"]["fees"] == eur("0.00")
    # Flat 10 % on 600.00 over half a year: 30.00 of interest stays.
    assert plan["totals"]["interest"] == eur("30.00")

    # Scoped to another product, the priority-10 promotion no longer applies here.
    Promotion.objects.get(code="no-fees").products.set([product("other")])
    plan = plans_by_code(quote(buyer_api, "600.00"))["with-fees"]
    assert plan["promotion"]["code"] == "no-interest"
    assert plan["totals"] == {
        "principal": eur("600.00"),
        "interest": eur("0.00"),
        "fees": eur("10.00"),
        "total": eur("610.00"),
        "cost": eur("10.00"),
        "due_at_checkout": eur("0.00"),
    }


def test_a_promotion_that_changes_nothing_does_not_hide_one_that_would(buyer_api, pay_in_12):
    free = product("free-3")
    promotion("fees-off", "fee_waived", priority=1)  # neither product has fees
    promotion("apr-5", "reduced_apr", apr=Decimal("5"), priority=2)
    plans = plans_by_code(quote(buyer_api, "1200.00"))
    assert plans["pay-in-12"]["promotion"]["code"] == "apr-5"
    assert plans[free.code]["promotion"] is None


def test_a_partner_decided_product_is_offered_while_its_partner_is_enabled(buyer_api):
    now = clock.now()
    partner = ProviderAccount.objects.create(
        provider=Provider.LENDING_PARTNER,
        enabled=False,
        base_url="http://127.0.0.1:9/partner",
        credentials_encrypted=crypto.encrypt({"secret": "not-used"}),
        created_at=now,
        updated_at=now,
    )
    product("partner-6", installment_count=6, decider="partner", partner_account=partner)
    product("ours-6", installment_count=6)
    assert sorted(plans_by_code(quote(buyer_api, "600.00"))) == ["ours-6"]

    ProviderAccount.objects.filter(pk=partner.pk).update(enabled=True)
    plans = plans_by_code(quote(buyer_api, "600.00"))
    assert sorted(plans) == ["ours-6", "partner-6"]
    assert plans["partner-6"]["product"]["decider"] == "partner"
    assert plans["ours-6"]["product"]["decider"] == "internal"


def test_inactive_promotion_is_ignored(buyer_api, pay_in_12):
    promotion("paused", "zero_interest", active=False)
    assert plans_by_code(quote(buyer_api, "1200.00"))["pay-in-12"]["promotion"] is None


def test_no_product_fits_gives_an_empty_list(buyer_api, pay_in_12):
    assert quote(buyer_api, "1200.000", currency="KWD").json() == {"plans": []}


def test_a_channel_acting_for_a_customer_may_quote(buyer, pay_in_12):
    _, key = channel_with_key("app", ChannelKind.APP)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}", HTTP_X_CUSTOMER_ID=str(buyer.pk))
    assert "pay-in-12" in plans_by_code(quote(client, "1200.00"))


def test_staff_without_a_customer_profile_cannot_quote(admin_client, pay_in_12):
    response = admin_client.post(URL, {"amount": eur("1200.00")}, content_type="application/json")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "auth.permission_denied"


def test_anonymous_callers_get_401(pay_in_12):
    response = quote(APIClient(), "1200.00")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "auth.not_authenticated"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"amount": {"amount": "10.00", "currency": "XXX"}}, "amount.currency"),
        ({"amount": {"amount": "-10.00", "currency": "EUR"}}, "amount.amount"),
        ({"amount": {"amount": "0.00", "currency": "EUR"}}, "amount.amount"),
        ({"amount": {"amount": "10.001", "currency": "EUR"}}, "amount.amount"),
        ({"amount": {"amount": 10.5, "currency": "EUR"}}, "amount.amount"),
        ({"amount": "10.00"}, "amount"),
        ({}, "amount"),
        ({"amount": eur("10.00"), "merchant_categories": "electronics"}, "merchant_categories"),
        ({"amount": eur("10.00"), "merchant_categories": ["x" * 61]}, "merchant_categories.0"),
    ],
)
def test_bad_input_is_a_400_with_field_messages_and_writes_nothing(
    buyer_api, pay_in_12, unchanged_db, body, field
):
    check = unchanged_db()
    response = buyer_api.post(URL, body, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert field in error["fields"]
    check()


def test_field_messages_say_what_is_wrong(buyer_api, pay_in_12):
    response = quote(buyer_api, "10.001")
    assert response.json()["error"]["fields"]["amount.amount"] == [
        "EUR amounts have at most 2 decimal place(s)."
    ]
    response = buyer_api.post(URL, {"amount": "10.00"}, format="json")
    assert response.json()["error"]["fields"]["amount"] == [
        'Expected {"amount": "12.34", "currency": "EUR"}.'
    ]


@pytest.mark.parametrize("installments", [3, 24])
def test_query_count_does_not_grow_with_installments_or_promotions(
    buyer, django_assert_num_queries, installments
):
    product("long", installment_count=installments, interest_method="declining", apr=Decimal(9))
    product("short", installment_count=installments)
    for n in range(3):
        promotion(f"scoped-{n}", "zero_interest", products=[product(f"p-{n}")], priority=n)
    promotion("tiers", "reduced_apr", apr=Decimal(1), customer_tiers=["gold"])
    client = client_for(buyer)
    # Token and customer (1), products (1), promotions (1), their products (1).
    with django_assert_num_queries(4):
        response = quote(client, "1200.00", ["electronics"])
    plans = plans_by_code(response)
    assert len(plans) == 5
    assert len(plans["long"]["schedule"]) == installments
