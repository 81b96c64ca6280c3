"""The customer's installment plans over the API: schedules, reschedule, extra payments,
payoff, cancel, suggested dates and the opt-in."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from bnpl.models import BorrowerProfile, Installment, Plan, PlanStatus
from core import clock
from core.models import AuditEntry
from tests.bnpl.factories import make_plan
from tests.factories import fund, make_customer, money, token_for

pytestmark = [pytest.mark.django_db]

JAN_10 = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)


@pytest.fixture
def jan_10():
    with clock.travel_to(JAN_10):
        yield date(2026, 1, 10)


def plan_300(customer, **overrides) -> Plan:
    """300.00 EUR in 3 monthly installments of 100.00: 10 Feb, 10 Mar, 10 Apr 2026."""
    overrides.setdefault("reschedule_max_days", 14)
    overrides.setdefault("reschedule_max_count", 2)
    return make_plan(customer=customer, amount="300.00", start_date=date(2026, 1, 10), **overrides)


@pytest.mark.usefixtures("customer_cards")
def test_plan_detail_shows_the_live_schedule(customer, customer_api, jan_10):
    plan = plan_300(customer, installment_fee=100)
    customer_api.post(
        f"/api/v1/bnpl/plans/{plan.pk}/installments/2/payments",
        {"amount": money("31.00")},
        format="json",
    )

    # Inside the 10 January travel: move by the difference (travel_to blocks add up).
    with clock.travel(datetime(2026, 3, 10, 12, tzinfo=UTC) - clock.now()):
        body = customer_api.get(f"/api/v1/bnpl/plans/{plan.pk}").json()

    assert body["status"] == "active"
    assert body["as_of"] == "2026-03-10"
    assert [
        (i["number"], i["due_date"], i["total"]["amount"], i["paid"]["amount"], i["status"])
        for i in body["installments"]
    ] == [
        (1, "2026-02-10", "101.00", "0.00", "overdue"),
        (2, "2026-03-10", "101.00", "31.00", "due"),
        (3, "2026-04-10", "101.00", "0.00", "scheduled"),
    ]
    first = body["installments"][0]
    assert (first["principal"], first["fee"], first["interest"], first["late_fee"]) == (
        money("100.00"),
        money("1.00"),
        money("0.00"),
        money("0.00"),
    )
    assert (body["total"], body["paid"], body["outstanding"]) == (
        money("303.00"),
        money("31.00"),
        money("272.00"),
    )
    assert body["next_due"]["number"] == 1


@pytest.mark.usefixtures("customer_cards")
def test_plan_list_has_only_the_callers_plans(customer, customer_api, jan_10, web_channel):
    mine = plan_300(customer)
    plan_300(make_customer())

    body = customer_api.get("/api/v1/bnpl/plans").json()

    assert [p["id"] for p in body["plans"]] == [mine.pk]


@pytest.mark.usefixtures("customer_cards")
@pytest.mark.parametrize("path", ["", "/{id}"])
def test_plan_reads_cost_the_same_for_3_and_24_installments(
    customer, customer_api, jan_10, django_assert_num_queries, path
):
    small = plan_300(customer)
    large = make_plan(
        customer=customer, amount="2400.00", start_date=date(2026, 1, 10), installment_count=24
    )
    url = "/api/v1/bnpl/plans" + path
    # Token, the plan(s), their installments.
    for plan in (small, large):
        with django_assert_num_queries(3):
            response = customer_api.get(url.format(id=plan.pk))
        assert response.status_code == 200
    with django_assert_num_queries(3):
        assert len(customer_api.get("/api/v1/bnpl/plans").json()["plans"]) == 2


@pytest.mark.usefixtures("customer_cards")
def test_reschedule_preview_then_confirm(customer, customer_api, jan_10, unchanged_db):
    plan = make_plan(
        customer=customer,
        amount="1200.00",
        start_date=date(2026, 1, 10),
        interest_method="declining",
        apr=Decimal(12),
        reschedule_max_days=14,
        reschedule_max_count=1,
        reschedule_fee=250,
    )
    url = f"/api/v1/bnpl/plans/{plan.pk}/reschedule"
    check = unchanged_db()

    preview = customer_api.post(url, {"number": 2, "due_date": "2026-03-20"}, format="json")

    check()
    assert preview.status_code == 200, preview.json()
    body = preview.json()
    assert body["confirmed"] is False
    assert (body["fee"], body["interest_change"]) == (money("2.50"), money("1.31"))
    assert [
        (i["due_date"], i["interest"]["amount"], i["fee"]["amount"])
        for i in body["plan"]["installments"]
    ] == [
        ("2026-02-10", "12.00", "0.00"),
        ("2026-03-20", "10.68", "2.50"),
        ("2026-04-10", "2.71", "0.00"),
    ]

    headers = {"HTTP_IDEMPOTENCY_KEY": "move-2"}
    confirm = {"number": 2, "due_date": "2026-03-20", "confirm": True}
    applied = customer_api.post(url, confirm, format="json", **headers)
    replay = customer_api.post(url, confirm, format="json", **headers)

    assert applied.status_code == 200, applied.json()
    assert applied.json()["confirmed"] is True
    assert applied.json()["plan"]["installments"] == body["plan"]["installments"]
    assert replay.json() == applied.json()
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert Plan.objects.get(pk=plan.pk).reschedule_count == 1
    assert AuditEntry.objects.filter(action="bnpl.plan_rescheduled").count() == 1

    check = unchanged_db()
    again = customer_api.post(
        url, {"number": 3, "due_date": "2026-04-12", "confirm": True}, format="json"
    )
    check()
    assert again.status_code == 422
    assert again.json()["error"]["code"] == "bnpl.reschedule_limit_reached"


@pytest.mark.usefixtures("customer_cards")
def test_reschedule_input_is_validated(customer, customer_api, jan_10, unchanged_db):
    plan = plan_300(customer)
    check = unchanged_db()
    response = customer_api.post(
        f"/api/v1/bnpl/plans/{plan.pk}/reschedule", {"due_date": "soon"}, format="json"
    )
    check()
    assert response.status_code == 400
    assert set(response.json()["error"]["fields"]) == {"number", "due_date"}


@pytest.mark.usefixtures("customer_cards")
def test_extra_payment_from_the_wallet(customer, customer_api, jan_10):
    plan = plan_300(customer)

    response = customer_api.post(
        f"/api/v1/bnpl/plans/{plan.pk}/installments/3/payments",
        {"amount": money("60.00"), "source": "wallet"},
        format="json",
        HTTP_IDEMPOTENCY_KEY="pay-3",
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "paid"
    assert (body["installment"]["paid"], body["installment"]["outstanding"]) == (
        money("60.00"),
        money("40.00"),
    )
    assert [i["paid"]["amount"] for i in body["plan"]["installments"]] == ["0.00", "0.00", "60.00"]
    assert Installment.objects.get(plan=plan, number=3).paid_principal == 6_000


@pytest.mark.usefixtures("customer_cards")
def test_extra_payment_above_what_is_owed_is_refused(customer, customer_api, jan_10, unchanged_db):
    plan = plan_300(customer)
    check = unchanged_db()

    response = customer_api.post(
        f"/api/v1/bnpl/plans/{plan.pk}/installments/1/payments",
        {"amount": money("100.01")},
        format="json",
    )

    check()
    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["fields"]) == ("bnpl.overpayment", {"amount": ["At most 100.00."]})
    assert error["outstanding"] == money("100.00")


@pytest.mark.usefixtures("customer_cards")
def test_extra_payment_to_a_missing_installment_is_404(customer, customer_api, jan_10):
    plan = plan_300(customer)
    response = customer_api.post(
        f"/api/v1/bnpl/plans/{plan.pk}/installments/7/payments",
        {"amount": money("1.00")},
        format="json",
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "bnpl.installment_not_found"


@pytest.mark.usefixtures("customer_cards")
def test_extra_payment_by_card(customer, customer_api, jan_10, card_processor):
    plan = plan_300(customer)

    response = customer_api.post(
        f"/api/v1/bnpl/plans/{plan.pk}/installments/1/payments",
        {"amount": money("100.00"), "source": "card"},
        format="json",
    )

    assert response.status_code == 201, response.json()
    assert response.json()["installment"]["status"] == "paid"
    assert response.json()["payment_transaction_id"] is not None


@pytest.mark.usefixtures("customer_cards")
def test_payoff_preview_and_confirm(customer, customer_api, jan_10):
    plan = plan_300(customer)
    url = f"/api/v1/bnpl/plans/{plan.pk}/payoff"

    quote = customer_api.get(url).json()["quote"]
    assert quote["total"] == money("300.00")
    assert customer_api.post(url, {}, format="json").json()["confirmed"] is False

    response = customer_api.post(
        url, {"confirm": True, "expected_total": quote["total"]}, format="json"
    )

    assert response.status_code == 200, response.json()
    assert response.json()["plan"]["status"] == "completed"
    assert response.json()["plan"]["outstanding"] == money("0.00")
    assert Plan.objects.get(pk=plan.pk).status == PlanStatus.COMPLETED


def test_payoff_without_enough_in_the_wallet(jan_10, unchanged_db, web_channel):
    customer = make_customer()
    fund(customer, "10.00")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(customer)}")
    plan = plan_300(customer)
    check = unchanged_db()
    response = client.post(f"/api/v1/bnpl/plans/{plan.pk}/payoff", {"confirm": True}, format="json")
    check()
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "wallet.insufficient_balance"


@pytest.mark.usefixtures("customer_cards")
def test_cancel_before_the_first_debit(customer, customer_api, jan_10):
    plan = plan_300(customer)

    response = customer_api.post(
        f"/api/v1/bnpl/plans/{plan.pk}/cancel", {"reason": "changed my mind"}, format="json"
    )

    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "cancelled"
    assert {i["status"] for i in response.json()["installments"]} == {"cancelled"}


def test_suggested_dates_explain_the_inference(web_channel):
    customer = make_customer()
    customer_api = APIClient()
    customer_api.credentials(HTTP_AUTHORIZATION=f"Token {token_for(customer)}")
    for month in (9, 10, 11):
        with clock.travel_to(datetime(2026, month, 25, 12, tzinfo=UTC)):
            fund(customer, "1000.00")
    with clock.travel_to(datetime(2026, 12, 1, 12, tzinfo=UTC)):
        plan = make_plan(
            customer=customer,
            amount="300.00",
            start_date=date(2026, 12, 1),
            cash_flow_aware=True,
            reschedule_max_days=5,
            reschedule_max_count=2,
        )
        body = customer_api.get(f"/api/v1/bnpl/plans/{plan.pk}/suggested-dates").json()

    assert [(d["day"], d["months"]) for d in body["income"]["days"]] == [(25, 3)]
    assert body["income"]["confidence"] == "1.00"
    assert "top-ups" in body["income"]["explanation"]
    assert (body["cash_flow_aware"], body["income_aligned_dates"]) == (True, False)
    # Priced 1 Jan, 1 Feb, 1 Mar; the day after payday is 26 Dec, 26 Jan, 26 Feb: 6, 6 and
    # 3 days earlier; the plan allows moves of at most 5 days.
    assert [(s["number"], s["suggested"], s["within_policy"]) for s in body["suggestions"]] == [
        (1, "2026-12-26", False),
        (2, "2027-01-26", False),
        (3, "2027-02-26", True),
    ]


@pytest.mark.usefixtures("customer_cards")
def test_opt_in_to_income_aligned_dates(customer, customer_api):
    assert customer_api.get("/api/v1/bnpl/profile").json() == {"income_aligned_dates": False}

    response = customer_api.patch(
        "/api/v1/bnpl/profile", {"income_aligned_dates": True}, format="json"
    )

    assert response.json() == {"income_aligned_dates": True}
    assert BorrowerProfile.objects.get(customer=customer).income_aligned_dates
    assert AuditEntry.objects.filter(action="bnpl.income_aligned_dates").count() == 1
    off = customer_api.post("/api/v1/bnpl/profile", {"income_aligned_dates": False}, format="json")
    assert off.json() == {"income_aligned_dates": False}


@pytest.mark.usefixtures("customer_cards")
def test_plan_endpoints_need_the_customer_in_person(customer, jan_10, api):
    plan = plan_300(customer)
    assert api.get(f"/api/v1/bnpl/plans/{plan.pk}").status_code == 401


@pytest.mark.usefixtures("customer_cards")
def test_payoff_by_card(customer, customer_api, jan_10, card_processor):
    plan = plan_300(customer)

    response = customer_api.post(
        f"/api/v1/bnpl/plans/{plan.pk}/payoff",
        {"confirm": True, "source": "card", "expected_total": money("300.00")},
        format="json",
        HTTP_IDEMPOTENCY_KEY="payoff-1",
    )

    assert response.status_code == 200, response.json()
    assert (response.json()["status"], response.json()["plan"]["status"]) == ("paid", "completed")


@pytest.mark.usefixtures("customer_cards")
def test_payoff_while_a_card_payment_is_pending_is_a_conflict(
    customer, customer_api, jan_10, card_processor, unchanged_db
):
    plan = plan_300(customer, payment_method="pm_review")  # the processor reviews charges
    pending = customer_api.post(
        f"/api/v1/bnpl/plans/{plan.pk}/installments/1/payments",
        {"amount": money("40.00"), "source": "card"},
        format="json",
    )
    assert pending.status_code == 202, pending.json()
    check = unchanged_db()

    response = customer_api.post(
        f"/api/v1/bnpl/plans/{plan.pk}/payoff",
        {"confirm": True},
        format="json",
        HTTP_IDEMPOTENCY_KEY="payoff-while-pending",
    )

    check()
    assert response.status_code == 409, response.json()
    error = response.json()["error"]
    assert error["code"] == "bnpl.charge_in_flight"
    assert "once the pending payment is settled" in error["message"]
    assert Plan.objects.get(pk=plan.pk).status == PlanStatus.ACTIVE
