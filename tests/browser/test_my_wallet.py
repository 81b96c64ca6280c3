"""My Wallet in a real browser: log in, see what is owed, repay it, see the balance move."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import DESKTOP, PHONE, VIEWPORTS
from tests.factories import approve_kyc, borrow, enable_wallet_bnpl, fund, make_customer
from wallet.services import customer_auto_deduct_set

pytestmark = pytest.mark.browser

EMAIL = "ada@example.com"
PASSWORD = "ada-long-passphrase"
REPAYMENT = "Repayment of a wallet BNPL debt"


@dataclass(frozen=True)
class Borrower:
    debt_id: int


@pytest.fixture
def borrower(live_server) -> Borrower:
    """A customer owing 60.00 EUR with 100.00 EUR in the wallet to repay it from.

    Auto-deduct is off, so the top-up stays in the wallet instead of repaying the debt.
    """
    enable_wallet_bnpl()
    customer = approve_kyc(make_customer(email=EMAIL, password=PASSWORD))
    debt_id = borrow(customer, "60.00")
    customer_auto_deduct_set(customer=customer, enabled=False)
    fund(customer, "100.00")
    return Borrower(debt_id=debt_id)


def log_in(page: Page, base_url: str) -> None:
    page.goto(f"{base_url}/wallet/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/wallet/$"))
    page.get_by_label("Email").fill(EMAIL)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{base_url}/wallet/")


def repay(page: Page, debt_id: int, amount: str) -> None:
    row = page.locator(f"#debt-{debt_id}")
    row.get_by_label(f"Amount to repay for debt {debt_id}").fill(amount)
    row.get_by_role("button", name="Repay").click()


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_customer_repays_a_debt_and_sees_balance_and_activity_change(
    page: Page, live_server, borrower: Borrower, screenshot
):
    debt = f"#debt-{borrower.debt_id}"
    log_in(page, live_server.url)

    outstanding = page.locator("#outstanding-card")
    expect(outstanding.locator(f"{debt} td[data-label=Principal]")).to_have_text("60.00 EUR")
    expect(page.locator("#balance")).to_have_text("100.00 EUR")
    activity = page.locator("#activity-card .activity-row")
    rows_before = activity.count()
    screenshot("1-outstanding")

    repay(page, borrower.debt_id, "25.00")

    expect(page.locator(".messages li.success")).to_have_text(
        f"Repaid 25.00 EUR of debt #{borrower.debt_id}."
    )
    expect(page.locator("#balance")).to_have_text("75.00 EUR")
    expect(outstanding.locator(f"{debt} td[data-label=Principal]")).to_have_text("35.00 EUR")
    expect(activity).to_have_count(rows_before + 1)
    newest = activity.first
    expect(newest.locator("td[data-label=What]")).to_have_text(REPAYMENT)
    expect(newest.locator("td[data-label=Amount]")).to_have_text("−25.00 EUR")
    expect(newest.locator("td[data-label=Balance]")).to_have_text("75.00 EUR")
    screenshot("2-partly-repaid")

    repay(page, borrower.debt_id, "35.00")

    expect(page.locator(".messages li.success")).to_have_text(
        f"Repaid 35.00 EUR of debt #{borrower.debt_id}."
    )
    expect(outstanding.locator("#no-debts")).to_have_text("Nothing outstanding.")
    expect(page.locator(debt)).to_have_count(0)
    expect(page.locator("#balance")).to_have_text("40.00 EUR")
    expect(activity.first.locator("td[data-label=Amount]")).to_have_text("−35.00 EUR")
    expect(activity.filter(has_text=REPAYMENT)).to_have_count(2)
    screenshot("3-nothing-outstanding")


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        pytest.param("1.001", "EUR amounts have at most 2 decimal place(s).", id="too-precise"),
        pytest.param("60.01", "needs 60.00 EUR; 60.01 EUR is more than that.", id="over-owed"),
        pytest.param("ten", "'ten' is not a decimal amount.", id="not-a-number"),
        pytest.param("0", "A positive amount in EUR.", id="zero"),
        pytest.param("", "Enter the amount to repay.", id="empty"),
    ],
)
def test_wrong_repay_amount_shows_an_error_and_changes_nothing(
    page: Page, live_server, borrower: Borrower, unchanged_db, screenshot, amount, message
):
    debt = f"#debt-{borrower.debt_id}"
    log_in(page, live_server.url)
    check = unchanged_db()

    repay(page, borrower.debt_id, amount)

    expect(page.locator(".messages li.error")).to_contain_text(message)
    # What the customer typed is still there to correct.
    expect(page.locator(f"{debt} input[name=amount]")).to_have_value(amount)
    expect(page.locator(".messages li.success")).to_have_count(0)
    expect(page.locator("#balance")).to_have_text("100.00 EUR")
    expect(page.locator(f"{debt} td[data-label=Principal]")).to_have_text("60.00 EUR")
    expect(page.locator("#activity-card .activity-row").filter(has_text=REPAYMENT)).to_have_count(0)
    check()
    screenshot("error")


@pytest.mark.parametrize(
    "viewport",
    [
        pytest.param(PHONE, id="phone"),
        pytest.param(DESKTOP, id="desktop"),
    ],
)
def test_my_wallet_fits_the_screen_without_sideways_scrolling(
    page: Page, live_server, borrower: Borrower
):
    log_in(page, live_server.url)

    overflow = page.evaluate(
        """() => {
          const width = document.documentElement.clientWidth;
          return [...document.querySelectorAll("main > *")]
            .filter((el) => el.getBoundingClientRect().right > width)
            .map((el) => `#${el.id} ends at ${el.getBoundingClientRect().right}px of ${width}px`);
        }"""
    )

    assert overflow == []
    assert page.evaluate("document.documentElement.scrollWidth") <= page.viewport_size["width"]
