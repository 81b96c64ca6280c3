"""My plans in a real browser: log in, see the schedule (one payment late, with its late
fee), pay toward one installment from the wallet, pay the plan off, on a phone and a desktop."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime

import pytest
from playwright.sync_api import Page, expect

from bnpl.models import Plan
from collections_.delinquency import delinquency_run
from core import clock
from tests.bnpl.factories import make_plan
from tests.browser.conftest import VIEWPORTS
from tests.factories import fund, make_customer

pytestmark = pytest.mark.browser

EMAIL = "grace@example.com"
PASSWORD = "grace-long-passphrase"


@dataclass(frozen=True)
class Borrower:
    plan: Plan


@pytest.fixture
def today() -> Iterator[date]:
    """10 March 2026 for the test and the live server (one process, one clock)."""
    with clock.travel_to(datetime(2026, 3, 10, 12, tzinfo=UTC)):
        yield date(2026, 3, 10)


@pytest.fixture
def borrower(live_server, today: date) -> Borrower:
    """A 300.00 EUR plan in 3 monthly installments of 100.00 from 20 January (due 20 Feb,
    20 Mar, 20 Apr): the first is 18 days late with a 5.00 EUR late fee. 500.00 EUR in the
    wallet."""
    customer = make_customer(email=EMAIL, password=PASSWORD)
    fund(customer, "500.00")
    plan = make_plan(
        customer=customer,
        amount="300.00",
        start_date=date(2026, 1, 20),
        name="Armchair in 3",
        late_fee_amount=500,
        late_fee_grace_days=3,
    )
    delinquency_run(business_date=today)
    return Borrower(plan=plan)


def log_in(page: Page, base_url: str, path: str) -> None:
    page.goto(f"{base_url}{path}")
    expect(page).to_have_url(re.compile(rf"/accounts/login/\?next={re.escape(path)}$"))
    page.get_by_label("Email").fill(EMAIL)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{base_url}{path}")


def installment(page: Page, plan: Plan, number: int):
    return page.locator(f"#plan-{plan.pk}-installment-{number}")


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_customer_sees_the_schedule_pays_an_installment_and_pays_the_plan_off(
    page: Page, live_server, borrower: Borrower, screenshot
):
    plan = borrower.plan
    log_in(page, live_server.url, "/plans/")

    card = page.locator(f"#plan-{plan.pk}")
    expect(card.get_by_role("heading", name="Armchair in 3")).to_be_visible()
    expect(card.locator("tr.installment")).to_have_count(3)
    first = installment(page, plan, 1)
    expect(first.locator("td[data-label=Status]")).to_have_text("Overdue")
    expect(first.locator("td[data-label='Late fee']")).to_have_text("5.00 EUR")
    expect(first.locator("td[data-label=Amount]")).to_have_text("105.00 EUR")
    expect(installment(page, plan, 2).locator("td[data-label=Status]")).to_have_text("Scheduled")
    expect(card.locator(".notice.late")).to_have_text(
        re.compile(r"^\s*Your payment of 105.00 EUR due on 20 Feb 2026 is 18 days late\.")
    )
    screenshot("1-my-plans")

    card.get_by_role("link", name="Pay or pay off").click()
    expect(page).to_have_url(f"{live_server.url}/plans/{plan.pk}/")
    expect(page.locator("#outstanding")).to_have_text("305.00 EUR")
    expect(page.locator("#wallet-balance")).to_have_text("500.00 EUR")
    screenshot("2-plan")

    second = installment(page, plan, 2)
    second.get_by_label("Amount to pay toward installment 2").fill("40.00")
    second.get_by_role("button", name="Pay").click()

    expect(page.locator(".messages li.success")).to_have_text(
        "Paid 40.00 EUR toward installment 2 from your wallet."
    )
    expect(second.locator("td[data-label=Paid]")).to_have_text("40.00 EUR")
    expect(second.get_by_label("Amount to pay toward installment 2")).to_have_value("60.00")
    expect(installment(page, plan, 1).locator("td[data-label=Paid]")).to_have_text("0.00 EUR")
    expect(page.locator("#wallet-balance")).to_have_text("460.00 EUR")
    expect(page.locator("#outstanding")).to_have_text("265.00 EUR")
    screenshot("3-paid-toward-installment-2")

    page.get_by_role("link", name="See the payoff amount").click()
    expect(page.locator("#payoff-total")).to_have_text("265.00 EUR")
    screenshot("4-payoff-amount")
    page.get_by_role("button", name="Pay 265.00 EUR from my wallet").click()

    expect(page.locator(".messages li.success")).to_have_text(
        "Plan paid off: 265.00 EUR from your wallet. Nothing more is owed."
    )
    expect(page.locator("#plan-status")).to_have_text("Paid off")
    expect(page.locator("#wallet-balance")).to_have_text("195.00 EUR")
    expect(page.locator("tr.installment td[data-label=Status]")).to_have_text(
        ["Paid", "Paid", "Paid"]
    )
    expect(page.locator("form.repay")).to_have_count(0)
    screenshot("5-paid-off")


def test_a_wrong_amount_shows_the_error_and_keeps_what_was_typed(
    page: Page, live_server, borrower: Borrower, unchanged_db, screenshot
):
    plan = borrower.plan
    log_in(page, live_server.url, f"/plans/{plan.pk}/")
    check = unchanged_db()

    third = installment(page, plan, 3)
    third.get_by_label("Amount to pay toward installment 3").fill("100.01")
    third.get_by_role("button", name="Pay").click()

    expect(page.locator(".messages li.error")).to_have_text(
        "Installment 3 owes 100.00 EUR; 100.01 EUR is more than that."
    )
    expect(third.get_by_label("Amount to pay toward installment 3")).to_have_value("100.01")
    expect(page.locator("#wallet-balance")).to_have_text("500.00 EUR")
    check()
    screenshot("error")


def test_my_wallet_and_my_plans_link_to_each_other(page: Page, live_server, borrower: Borrower):
    log_in(page, live_server.url, "/wallet/")

    page.get_by_role("navigation").get_by_role("link", name="My plans").click()
    expect(page).to_have_url(f"{live_server.url}/plans/")
    page.get_by_role("navigation").get_by_role("link", name="My Wallet").click()
    expect(page).to_have_url(f"{live_server.url}/wallet/")


@pytest.mark.parametrize("viewport", VIEWPORTS)
@pytest.mark.parametrize("step", ["list", "plan", "payoff"])
def test_my_plans_fits_the_screen_without_sideways_scrolling(
    page: Page, live_server, borrower: Borrower, screenshot, step
):
    path = {
        "list": "/plans/",
        "plan": f"/plans/{borrower.plan.pk}/",
        "payoff": f"/plans/{borrower.plan.pk}/payoff/",
    }[step]
    log_in(page, live_server.url, path)
    screenshot(step)

    overflow = page.evaluate(
        """() => {
          const width = document.documentElement.clientWidth;
          return [...document.querySelectorAll("header, main > *, main table, main form")]
            .filter((el) => el.getBoundingClientRect().right > width)
            .map((el) => `${el.tagName}#${el.id} ends at ${el.getBoundingClientRect().right}px`);
        }"""
    )

    assert overflow == []
    assert page.evaluate("document.documentElement.scrollWidth") <= page.viewport_size["width"]
