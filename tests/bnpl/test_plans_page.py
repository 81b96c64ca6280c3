"""The customer's My plans pages: the list, one plan, an extra payment from the wallet and
early payoff (the amount first, then confirmed), each scoped to the customer."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time

import pytest
from django.contrib.auth import get_user_model

from bnpl.models import Installment, InstallmentStatus, Plan, PlanStatus
from collections_.delinquency import delinquency_run
from core import clock
from tests.bnpl.factories import make_plan, make_product
from tests.factories import fund, make_customer
from wallet.models import Wallet

pytestmark = pytest.mark.django_db

JAN_10 = datetime(2026, 1, 10, 12, tzinfo=UTC)


@pytest.fixture
def jan_10():
    with clock.travel_to(JAN_10):
        yield date(2026, 1, 10)


def travel(day: date):
    """Noon UTC of ``day``, wherever the clock already is (``travel_to`` blocks nest)."""
    return clock.travel(datetime.combine(day, time(12), tzinfo=UTC) - clock.now())


@pytest.fixture
def logged_in(client, customer):
    client.force_login(customer.user)
    return client


def plan_400(customer, **overrides) -> Plan:
    """400.00 EUR in 4 monthly installments of 100.00 from 10 Jan 2026: 10 Feb … 10 May."""
    overrides.setdefault("name", "Pay in 4")
    overrides.setdefault("installment_count", 4)
    return make_plan(customer=customer, amount="400.00", start_date=date(2026, 1, 10), **overrides)


def wallet_minor(customer) -> int:
    return Wallet.objects.select_related("account").get(customer=customer).account.balance


def row(html: str, plan: Plan, number: int) -> str:
    found = re.search(
        rf'<tr id="plan-{plan.pk}-installment-{number}".*?</tr>', html, flags=re.DOTALL
    )
    assert found, f"no row for installment {number} of plan {plan.pk}"
    return re.sub(r"\s+", " ", found.group(0))


def cell(html_row: str, label: str) -> str:
    found = re.search(rf'data-label="{re.escape(label)}">(.*?)</td>', html_row, flags=re.DOTALL)
    assert found, f"no {label} cell"
    return re.sub(r"<[^>]+>", "", found.group(1)).strip()


def typed(html: str, number: int) -> str:
    """The value in the amount field of installment ``number``'s payment form."""
    label = f'aria-label="Amount to pay toward installment {number}" value="([^"]*)"'
    return re.search(label, html).group(1)


def messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


# --- listing and detail --------------------------------------------------------------------


def test_my_plans_lists_each_plan_with_its_terms_and_schedule(logged_in, customer, jan_10):
    older = plan_400(customer, name="Sofa in 4", apr="19.99", interest_method="flat")
    newer = make_plan(customer=customer, amount="90.00", name="Headphones in 3")

    response = logged_in.get("/plans/")

    assert response.status_code == 200
    html = response.content.decode()
    assert [c["plan"].pk for c in response.context["cards"]] == [newer.pk, older.pk]
    card = response.context["cards"][1]
    assert (card["product"], card["status"], card["order"]) == (
        "Sofa in 4",
        "Active",
        f"test.order {older.reference_id}",
    )
    assert "Sofa in 4" in html
    assert "Headphones in 3" in html
    # The plan's APR: for flat interest the effective rate, above the 19.99 % nominal one.
    assert f'data-fact="apr">{older.apr.normalize()}%<' in html
    first = row(html, older, 1)
    assert cell(first, "Due") == "10 Feb 2026"
    assert cell(first, "Status") == "Scheduled"
    assert cell(first, "Paid") == "0.00 EUR"
    assert cell(first, "Late fee") == "—"
    assert card["view"].next_due.number == 1
    assert f"{card['view'].next_due.outstanding} on 10 Feb 2026" in html
    assert [r.line.number for r in card["rows"]] == [1, 2, 3, 4]
    # The list page has no payment forms: those are on the plan's own page.
    assert "/installments/" not in html
    assert f'href="/plans/{older.pk}/"' in html


def test_a_customer_without_plans_sees_that_there_are_none(logged_in):
    response = logged_in.get("/plans/")

    assert response.status_code == 200
    assert "You have no installment plans." in response.content.decode()


def test_plan_detail_shows_paid_due_overdue_and_scheduled_with_the_late_fee(
    logged_in, customer, jan_10
):
    plan = plan_400(customer, late_fee_amount=500, late_fee_grace_days=3)
    # The third installment paid early, from the wallet, through the page.
    logged_in.post(
        f"/plans/{plan.pk}/installments/3/pay", {"amount": "100.00", "idempotency_key": "k1"}
    )
    with travel(date(2026, 3, 10)):
        delinquency_run(business_date=date(2026, 3, 10))

        response = logged_in.get(f"/plans/{plan.pk}/")

    html = response.content.decode()
    states = {n: cell(row(html, plan, n), "Status") for n in (1, 2, 3, 4)}
    assert states == {1: "Overdue", 2: "Due today", 3: "Paid", 4: "Scheduled"}
    first = row(html, plan, 1)
    assert cell(first, "Late fee") == "5.00 EUR"
    assert cell(first, "Amount") == "105.00 EUR"
    assert cell(row(html, plan, 3), "Paid") == "100.00 EUR"
    # Delinquency is said plainly and kindly, with what it costs so far.
    notice = re.sub(r"\s+", " ", re.search(r'<p class="notice late".*?</p>', html, re.S).group(0))
    assert "Your payment of <strong>105.00 EUR</strong> due on 10 Feb 2026 is 28 days late." in (
        notice
    )
    assert "Late fees so far: 5.00 EUR." in notice
    # Only installments that still owe something can be paid toward.
    assert f'action="/plans/{plan.pk}/installments/1/pay"' in html
    assert f'action="/plans/{plan.pk}/installments/3/pay"' not in html


def test_another_customers_plan_is_404_and_cannot_be_paid(
    logged_in, customer, jan_10, unchanged_db
):
    other = make_customer()
    fund(other, "500.00")
    plan = plan_400(other)
    check = unchanged_db()

    assert logged_in.get(f"/plans/{plan.pk}/").status_code == 404
    assert logged_in.get(f"/plans/{plan.pk}/payoff/").status_code == 404
    paid = logged_in.post(f"/plans/{plan.pk}/installments/1/pay", {"amount": "10.00"})
    assert paid.status_code == 404
    payoff = logged_in.post(f"/plans/{plan.pk}/payoff/", {"expected_total": "400.00"})
    assert payoff.status_code == 404
    check()
    assert plan.pk not in [c["plan"].pk for c in logged_in.get("/plans/").context["cards"]]


def test_staff_without_a_customer_profile_get_404(client, customer, jan_10):
    plan = plan_400(customer)
    staff = get_user_model().objects.create_user(
        username="staff", email="staff@example.com", password="x", is_staff=True
    )
    client.force_login(staff)

    assert client.get("/plans/").status_code == 404
    assert client.get(f"/plans/{plan.pk}/").status_code == 404


@pytest.mark.parametrize("path", ["/plans/", "/plans/1/", "/plans/1/payoff/"])
def test_anonymous_visitors_are_sent_to_log_in(client, path):
    response = client.get(path)

    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={path}"


@pytest.mark.parametrize("count", [1, 5])
def test_my_plans_query_count_does_not_grow_with_plans(
    logged_in, customer, jan_10, count, django_assert_num_queries
):
    product = make_product(installment_count=6)
    for _ in range(count):
        make_plan(customer=customer, product=product, amount="600.00")

    # session, user, customer, plans with their products, installments.
    with django_assert_num_queries(5):
        response = logged_in.get("/plans/")

    assert len(response.context["cards"]) == count


def test_wallet_and_plans_link_to_each_other(logged_in):
    assert 'href="/plans/"' in logged_in.get("/wallet/").content.decode()
    assert 'href="/wallet/"' in logged_in.get("/plans/").content.decode()


# --- extra payment toward one installment ---------------------------------------------------


def test_extra_payment_from_the_wallet_pays_that_installment_once(logged_in, customer, jan_10):
    plan = plan_400(customer)
    form = {"amount": "40.00", "idempotency_key": "form-1-2"}

    first = logged_in.post(f"/plans/{plan.pk}/installments/2/pay", form, follow=True)
    again = logged_in.post(f"/plans/{plan.pk}/installments/2/pay", form, follow=True)

    assert messages(first) == ["Paid 40.00 EUR toward installment 2 from your wallet."]
    assert messages(again) == ["That payment of 40.00 EUR was already made."]
    second = Installment.objects.get(plan=plan, number=2)
    assert (second.paid, second.outstanding) == (4_000, 6_000)
    assert Installment.objects.get(plan=plan, number=1).paid == 0
    assert wallet_minor(customer) == 50_000 - 4_000
    html = again.content.decode()
    assert cell(row(html, plan, 2), "Paid") == "40.00 EUR"
    assert 'id="wallet-balance">460.00 EUR' in html


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        pytest.param(
            "100.01",
            "Installment 2 owes 100.00 EUR; 100.01 EUR is more than that.",
            id="over-owed",
        ),
        pytest.param("1.001", "EUR amounts have at most 2 decimal place(s).", id="too-precise"),
        pytest.param("ten", "'ten' is not a decimal amount.", id="not-a-number"),
        pytest.param("0", "A positive amount in EUR.", id="zero"),
        pytest.param("", "Enter the amount to pay.", id="empty"),
        pytest.param(
            "600.00",
            "Installment 2 owes 100.00 EUR; 600.00 EUR is more than that.",
            id="more-than-the-wallet-and-owed",
        ),
    ],
)
def test_a_wrong_extra_payment_shows_the_error_keeps_the_input_and_writes_nothing(
    logged_in, customer, jan_10, unchanged_db, amount, message
):
    plan = plan_400(customer)
    check = unchanged_db()

    response = logged_in.post(
        f"/plans/{plan.pk}/installments/2/pay",
        {"amount": amount, "idempotency_key": "k"},
        follow=True,
    )

    check()
    assert messages(response) == [message]
    html = response.content.decode()
    assert re.search(r'<li class="error">', html)
    assert typed(html, 2) == amount
    # The other rows show what they owe, not the mistyped amount.
    assert typed(html, 1) == "100.00"


def test_an_extra_payment_the_wallet_cannot_cover_is_refused(
    logged_in, customer, jan_10, unchanged_db
):
    plan = make_plan(customer=customer, amount="1800.00", installment_count=3)
    check = unchanged_db()

    response = logged_in.post(
        f"/plans/{plan.pk}/installments/1/pay", {"amount": "600.00"}, follow=True
    )

    check()
    [error] = messages(response)
    assert "500.00 EUR" in error
    # The same key can be used again after a top-up: the failed attempt released it.
    fund(customer, "100.00")
    retried = logged_in.post(
        f"/plans/{plan.pk}/installments/1/pay", {"amount": "600.00"}, follow=True
    )
    assert messages(retried) == ["Paid 600.00 EUR toward installment 1 from your wallet."]


# --- early payoff ----------------------------------------------------------------------------


def test_payoff_shows_the_amount_first_then_pays_it_once(logged_in, customer, jan_10):
    plan = make_plan(
        customer=customer,
        amount="300.00",
        start_date=date(2026, 1, 10),
        interest_method="declining",
        apr="12",
    )
    with travel(date(2026, 1, 25)):
        preview = logged_in.get(f"/plans/{plan.pk}/payoff/")
        quote = preview.context["quote"]
        html = preview.content.decode()
        assert quote.interest_waived.is_positive()
        assert f'id="payoff-total">{quote.total}<' in html
        assert f'name="expected_total" value="{quote.total.amount_str()}"' in html
        assert Plan.objects.get(pk=plan.pk).status == PlanStatus.ACTIVE  # nothing written yet

        form = {"expected_total": quote.total.amount_str(), "idempotency_key": "payoff-1"}
        done = logged_in.post(f"/plans/{plan.pk}/payoff/", form, follow=True)
        again = logged_in.post(f"/plans/{plan.pk}/payoff/", form, follow=True)

    assert messages(done) == [
        f"Plan paid off: {quote.total} from your wallet. Nothing more is owed."
    ]
    assert messages(again) == [f"That payoff of {quote.total} was already made."]
    assert Plan.objects.get(pk=plan.pk).status == PlanStatus.COMPLETED
    assert wallet_minor(customer) == 50_000 - quote.total.minor
    assert set(Installment.objects.filter(plan=plan).values_list("status", flat=True)) == {
        InstallmentStatus.PAID
    }
    final = again.content.decode()
    assert 'id="plan-status">Paid off<' in final
    assert "payoff-link" not in final
    assert "/installments/" not in final


def test_payoff_with_a_total_that_changed_is_refused_and_shown_again(
    logged_in, customer, jan_10, unchanged_db
):
    plan = plan_400(customer)
    check = unchanged_db()

    response = logged_in.post(
        f"/plans/{plan.pk}/payoff/",
        {"expected_total": "399.00", "idempotency_key": "stale"},
        follow=True,
    )

    check()
    assert messages(response) == ["The payoff total is now 400.00 EUR, not 399.00 EUR."]
    assert response.redirect_chain[-1][0] == f"/plans/{plan.pk}/payoff/"
    assert 'id="payoff-total">400.00 EUR<' in response.content.decode()


def test_payoff_preview_says_when_the_wallet_is_short(logged_in, customer, jan_10, unchanged_db):
    plan = make_plan(customer=customer, amount="800.00")
    check = unchanged_db()

    response = logged_in.get(f"/plans/{plan.pk}/payoff/")
    refused = logged_in.post(f"/plans/{plan.pk}/payoff/", {"expected_total": "800.00"}, follow=True)

    check()
    assert "Your wallet is 300.00 EUR short of this." in response.content.decode()
    [error] = messages(refused)
    assert "500.00 EUR" in error
    assert Plan.objects.get(pk=plan.pk).status == PlanStatus.ACTIVE


def test_a_finished_plan_is_read_only(logged_in, customer, jan_10, unchanged_db):
    plan = make_plan(customer=customer, amount="90.00")
    logged_in.post(f"/plans/{plan.pk}/payoff/", {"expected_total": "90.00"})
    assert Plan.objects.get(pk=plan.pk).status == PlanStatus.COMPLETED
    check = unchanged_db()

    page = logged_in.get(f"/plans/{plan.pk}/").content.decode()
    preview = logged_in.get(f"/plans/{plan.pk}/payoff/", follow=True)
    paid = logged_in.post(f"/plans/{plan.pk}/installments/1/pay", {"amount": "1.00"}, follow=True)

    check()
    assert "/installments/" not in page
    assert "payoff-link" not in page
    assert messages(preview) == [f"Plan #{plan.pk} is completed: it cannot be paid off."]
    assert preview.redirect_chain[-1][0] == f"/plans/{plan.pk}/"
    assert messages(paid) == [f"Plan #{plan.pk} is completed: it cannot be paid toward."]
