from datetime import date
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from collections_.models import DebitAttempt
from collections_.selectors import collections_settings
from reports.selectors import amounts_by_bucket, collection_totals, collection_weeks
from tests.collections.delinquency_helpers import installments, pay_cash, plan_from, run_delinquency
from tests.collections.test_reminders import charge_due
from tests.factories import make_customer

pytestmark = pytest.mark.django_db

URL = "/api/v1/reports/collections"
WEEK_1, WEEK_2 = date(2026, 2, 9), date(2026, 2, 16)


@pytest.fixture
def collections(web_channel, card_processor, sandbox):
    """Four 300.00 debits due on 10 February (two paid at once, two declined, one of which
    is paid later at the cash desk) and one 200.00 debit due on 20 February, paid at once."""
    _, _, recovered, failed = (
        plan_from(make_customer(), payment_method=f"{method}__{n}")
        for n, method in enumerate(("pm_card_visa", "pm_card_visa", "pm_decline", "pm_decline"))
    )
    later = plan_from(make_customer(), start="2026-01-20", amount="600.00")
    charge_due(date(2026, 2, 10))
    pay_cash(installments(recovered)[0])
    charge_due(date(2026, 2, 20))  # the failed debit's retry fails again
    run_delinquency("2026-02-21")
    return {"failed": failed, "later": later}


def test_success_and_recovery_rates_by_due_week(collections):
    assert DebitAttempt.objects.filter(request__plan=collections["failed"]).count() == 2
    week_1, week_2 = collection_weeks(due_from=WEEK_1, due_to=date(2026, 2, 22))
    assert (week_1.week, week_1.currency) == (WEEK_1, "EUR")
    assert (
        week_1.attempted,
        week_1.paid_first_attempt,
        week_1.paid,
        week_1.failed_first_attempt,
        week_1.recovered,
    ) == (4, 2, 3, 2, 1)
    assert (week_1.first_attempt_rate, week_1.final_rate, week_1.recovery_rate) == (
        Decimal("50.00"),
        Decimal("75.00"),
        Decimal("50.00"),
    )
    assert (
        week_1.attempted_amount,
        week_1.paid_first_attempt_amount,
        week_1.failed_amount,
        week_1.recovered_amount,
    ) == (120000, 60000, 60000, 30000)
    assert week_2.week == WEEK_2
    assert (week_2.attempted, week_2.paid_first_attempt, week_2.paid) == (1, 1, 1)
    assert (week_2.first_attempt_rate, week_2.final_rate, week_2.recovery_rate) == (
        Decimal("100.00"),
        Decimal("100.00"),
        None,
    )
    (total,) = collection_totals([week_1, week_2])
    assert (total.attempted, total.paid_first_attempt, total.paid) == (5, 3, 4)
    assert (total.first_attempt_rate, total.final_rate, total.recovery_rate) == (
        Decimal("60.00"),
        Decimal("80.00"),
        Decimal("50.00"),
    )


def test_the_due_range_bounds_the_weeks(collections):
    (only,) = collection_weeks(due_from=WEEK_2, due_to=date(2026, 2, 22))
    assert (only.week, only.attempted) == (WEEK_2, 1)
    assert collection_weeks(due_from=date(2026, 2, 11), due_to=date(2026, 2, 19)) == []


def test_amounts_by_delinquency_bucket(collections):
    current, late = amounts_by_bucket()
    # Current: three plans with 600.00 left, the later plan with 400.00 left.
    assert (current.bucket, current.plans, current.outstanding, current.overdue) == (
        "",
        4,
        220000,
        0,
    )
    # 1-30: the failed plan, 11 days late on 300.00 of its 900.00.
    assert (late.bucket, late.plans, late.outstanding, late.overdue) == ("1-30", 1, 90000, 30000)


# --- the API --------------------------------------------------------------------------


@pytest.fixture
def staff_api(admin_user) -> APIClient:
    client = APIClient()
    client.force_authenticate(admin_user)
    return client


def test_staff_read_the_kpis(collections, staff_api, django_assert_num_queries):
    with django_assert_num_queries(3):
        response = staff_api.get(URL, {"due_from": "2026-02-09", "due_to": "2026-02-22"})
    assert response.status_code == 200
    body = response.json()
    assert (body["due_from"], body["due_to"]) == ("2026-02-09", "2026-02-22")
    assert body["weeks"][0] == {
        "week": "2026-02-09",
        "currency": "EUR",
        "attempted": 4,
        "paid_first_attempt": 2,
        "paid": 3,
        "failed_first_attempt": 2,
        "recovered": 1,
        "first_attempt_rate": "50.00",
        "final_rate": "75.00",
        "recovery_rate": "50.00",
        "attempted_amount": {"amount": "1200.00", "currency": "EUR"},
        "paid_first_attempt_amount": {"amount": "600.00", "currency": "EUR"},
        "failed_amount": {"amount": "600.00", "currency": "EUR"},
        "recovered_amount": {"amount": "300.00", "currency": "EUR"},
    }
    assert body["weeks"][1]["recovery_rate"] is None
    assert [(t["week"], t["attempted"], t["final_rate"]) for t in body["totals"]] == [
        (None, 5, "80.00")
    ]
    assert body["buckets"] == [
        {
            "bucket": "current",
            "currency": "EUR",
            "plans": 4,
            "outstanding": {"amount": "2200.00", "currency": "EUR"},
            "overdue": {"amount": "0.00", "currency": "EUR"},
        },
        {
            "bucket": "1-30",
            "currency": "EUR",
            "plans": 1,
            "outstanding": {"amount": "900.00", "currency": "EUR"},
            "overdue": {"amount": "300.00", "currency": "EUR"},
        },
    ]


def test_three_queries_without_data_as_with_it(web_channel, staff_api, django_assert_num_queries):
    collections_settings()  # created on first use, as every deployment's first request does
    with django_assert_num_queries(3):
        empty = staff_api.get(URL, {"due_from": "2026-02-09", "due_to": "2026-02-22"})
    assert empty.json()["weeks"] == []


def test_customers_are_refused(customer_api):
    response = customer_api.get(URL)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "auth.permission_denied"


def test_staff_without_the_debit_attempt_permission_are_refused_as_on_the_admin_page(
    django_user_model,
):
    support = django_user_model.objects.create_user(
        "support", "support@example.com", "correct-horse-battery", is_staff=True
    )
    page = Client()
    page.force_login(support)
    api = APIClient()
    api.force_authenticate(support)

    assert page.get(reverse("reports-collections-admin")).status_code == 403
    refused = api.get(URL)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "auth.permission_denied"

    support.user_permissions.add(Permission.objects.get(codename="view_debitattempt"))
    support = django_user_model.objects.get(pk=support.pk)  # permissions are cached per user
    page.force_login(support)
    api.force_authenticate(support)
    assert page.get(reverse("reports-collections-admin")).status_code == 200
    assert api.get(URL).status_code == 200


def test_anonymous_callers_are_refused(api):
    assert api.get(URL).status_code == 401


def test_a_backwards_range_is_a_field_error(staff_api):
    response = staff_api.get(URL, {"due_from": "2026-03-01", "due_to": "2026-02-01"})
    assert response.status_code == 400
    assert response.json()["error"]["fields"] == {"due_to": ["Must not be before due_from."]}


def test_the_admin_page_shows_the_same_figures(collections, admin_client):
    page = admin_client.get(
        reverse("reports-collections-admin"), {"due_from": "2026-02-09", "due_to": "2026-02-22"}
    )
    assert page.status_code == 200
    html = page.content.decode()
    assert "Collections KPIs" in html
    for figure in ("50.00 %", "75.00 %", "80.00 %", "900.00 EUR", "2200.00 EUR"):
        assert figure in html


def test_the_admin_page_is_for_staff_only(client, customer):
    page = client.get(reverse("reports-collections-admin"))
    assert page.status_code == 302
    assert "/admin/login/" in page["Location"]
