from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from core import clock
from core.models import AuditEntry
from customers.models import Feature, KycRequirement
from ledger.models import Account, JournalEntry
from tests.factories import approve_kyc, borrow, enable_wallet_bnpl, fund, make_customer, money
from tests.factories import token_for as _token
from tests.wallet.conftest import receivable_matches_debts
from wallet.models import (
    DebtResolution,
    DebtStatus,
    FixedRecurrence,
    InterestType,
    Wallet,
    WalletDebt,
    WalletTransaction,
)
from wallet.services import customer_auto_deduct_set

pytestmark = pytest.mark.django_db


def api(customer) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {_token(customer)}")
    return client


def balance(customer) -> int:
    return Wallet.objects.get(customer=customer).balance.minor


def debt(pk) -> WalletDebt:
    return WalletDebt.objects.get(pk=pk)


def repay(customer, debt_id, amount, **headers):
    return api(customer).post(
        f"/api/v1/wallet/debts/{debt_id}/repay", {"amount": money(amount)}, format="json", **headers
    )


# --- automatic repayment ----------------------------------------------------------------


def test_a_top_up_repays_debts_oldest_first_and_only_the_surplus_is_spendable(bnpl, approved):
    first = borrow(approved, "40.00")
    second = borrow(approved, "25.00")
    fund(approved, "50.00")
    assert (debt(first).status, debt(first).principal_repaid) == (DebtStatus.REPAID, 4000)
    assert debt(first).resolution == DebtResolution.REPAID
    assert (debt(second).status, debt(second).principal_repaid) == (DebtStatus.OUTSTANDING, 1000)
    assert balance(approved) == 0
    fund(approved, "20.00")
    assert debt(second).status == DebtStatus.REPAID
    assert balance(approved) == 500
    kinds = list(
        WalletTransaction.objects.filter(wallet__customer=approved)
        .order_by("id")
        .values_list("kind", "direction", "amount", "balance_after")
    )
    assert kinds == [
        ("top_up", "credit", 5000, 5000),
        ("bnpl_repayment", "debit", 4000, 1000),
        ("bnpl_repayment", "debit", 1000, 0),
        ("top_up", "credit", 2000, 2000),
        ("bnpl_repayment", "debit", 1500, 500),
    ]
    receivable_matches_debts(approved)


def test_opting_out_of_auto_deduct_keeps_the_credit_and_the_debt_waits(bnpl, approved):
    debt_id = borrow(approved, "40.00")
    response = api(approved).put("/api/v1/wallet/auto-deduct", {"enabled": False}, format="json")
    assert response.json() == {"enabled": False}
    fund(approved, "50.00")
    assert balance(approved) == 5000
    assert debt(debt_id).principal_repaid == 0
    assert AuditEntry.objects.filter(action="wallet.auto_deduct").count() == 1


def test_a_refund_to_the_wallet_repays_debt_first(bnpl, approved):
    fund(approved, "10.00")
    order = (
        api(approved)
        .post(
            "/api/v1/orders",
            {
                "payment_method": "wallet",
                "lines": [
                    {"sku": "ITEM", "name": "x", "quantity": 1, "unit_price": money("30.00")}
                ],
            },
            format="json",
        )
        .json()
    )
    older = borrow(approved, "5.00")
    [debt_of_order] = WalletDebt.objects.filter(reference_id=str(order["id"]))
    assert (
        api(approved).post(f"/api/v1/orders/{order['id']}/cancel", {}, format="json").status_code
        == 200
    )
    # The 30.00 refund repays the 20.00 debt of the order, then the younger 5.00 one.
    assert debt(debt_of_order.pk).status == DebtStatus.REPAID
    assert debt(older).status == DebtStatus.REPAID
    assert balance(approved) == 500
    receivable_matches_debts(approved)


# --- manual repayment -------------------------------------------------------------------


def test_manual_repayment_reduces_that_debt_and_closes_it_when_paid(
    bnpl, approved, django_capture_on_commit_callbacks
):
    debt_id = borrow(approved, "60.00")
    customer_auto_deduct_set(customer=approved, enabled=False)
    fund(approved, "100.00")
    partial = repay(approved, debt_id, "25.00")
    assert partial.status_code == 200, partial.json()
    assert partial.json()["principal_outstanding"] == money("35.00")
    assert balance(approved) == 7500
    from wallet import signals

    repaid = []
    signals.debt_repaid.connect(
        lambda sender, debt, **kw: repaid.append(debt.resolution),
        weak=False,
        dispatch_uid="t-repaid",
    )
    try:
        with django_capture_on_commit_callbacks(execute=True):
            rest = repay(approved, debt_id, "35.00")
    finally:
        signals.debt_repaid.disconnect(dispatch_uid="t-repaid")
    assert rest.json()["status"] == "repaid"
    assert repaid == ["repaid"]
    assert balance(approved) == 4000
    receivable_matches_debts(approved)


@pytest.mark.parametrize(
    ("amount", "status", "code"),
    [
        ("60.01", 422, "wallet.over_repayment"),
        ("0.00", 400, "validation_error"),
        ("-1.00", 400, "validation_error"),
        ("1.001", 400, "validation_error"),
    ],
)
def test_bad_repayments_are_refused_and_write_nothing(
    bnpl, approved, unchanged_db, amount, status, code
):
    debt_id = borrow(approved, "60.00")
    customer_auto_deduct_set(customer=approved, enabled=False)
    fund(approved, "100.00")
    client = api(approved)
    check = unchanged_db()
    response = client.post(
        f"/api/v1/wallet/debts/{debt_id}/repay", {"amount": money(amount)}, format="json"
    )
    assert response.status_code == status, response.json()
    assert response.json()["error"]["code"] == code
    assert "amount" in str(response.json()["error"]["fields"])
    check()


def test_repaying_without_the_balance_or_a_closed_debt_is_refused(
    bnpl, approved, admin_user, unchanged_db
):
    debt_id = borrow(approved, "60.00")
    client = api(approved)
    check = unchanged_db()
    short = client.post(
        f"/api/v1/wallet/debts/{debt_id}/repay", {"amount": money("10.00")}, format="json"
    )
    assert (short.status_code, short.json()["error"]["code"]) == (
        422,
        "wallet.insufficient_balance",
    )
    check()
    from wallet.services import debt_write_off

    debt_write_off(debt_id=debt_id, actor=admin_user, note="goodwill")
    closed = client.post(
        f"/api/v1/wallet/debts/{debt_id}/repay", {"amount": money("10.00")}, format="json"
    )
    assert (closed.status_code, closed.json()["error"]["code"]) == (409, "wallet.debt_not_open")


def test_repay_accepts_an_idempotency_key(bnpl, approved):
    debt_id = borrow(approved, "60.00")
    customer_auto_deduct_set(customer=approved, enabled=False)
    fund(approved, "100.00")
    first = repay(approved, debt_id, "10.00", HTTP_IDEMPOTENCY_KEY="r-1")
    again = repay(approved, debt_id, "10.00", HTTP_IDEMPOTENCY_KEY="r-1")
    assert first.json() == again.json()
    assert debt(debt_id).principal_repaid == 1000


# --- interest ---------------------------------------------------------------------------


def debts_api(customer):
    return api(customer).get("/api/v1/wallet/debts").json()


@pytest.mark.usefixtures("around_business_midnight")
def test_no_interest_during_grace_then_fixed_50_for_each_started_week(bnpl, approved):
    """The documented scenario: interest fixed, amount 50, grace 7 → flat 50 each week."""
    enable_wallet_bnpl(
        interest_type=InterestType.FIXED,
        interest_amount=Decimal("50"),
        grace_days=7,
        repayment_days=30,
    )
    borrow(approved, "200.00")
    due = clock.business_date() + timedelta(days=30)
    for days_after_due, interest in [
        (0, "0.00"),
        (7, "0.00"),
        (8, "50.00"),
        (14, "50.00"),
        (15, "100.00"),
        (22, "150.00"),
        (29, "200.00"),
    ]:
        moment = clock.now() + (due - clock.business_date() + timedelta(days=days_after_due))
        with clock.travel_to(moment):
            [row] = debts_api(approved)
        assert row["interest_due"] == money(interest), days_after_due
        assert row["total_due"] == money(str(Decimal("200.00") + Decimal(interest)))


@pytest.mark.usefixtures("around_business_midnight")
def test_fixed_once_charges_the_flat_amount_one_time(bnpl, approved):
    enable_wallet_bnpl(
        interest_type=InterestType.FIXED,
        interest_amount=Decimal("50"),
        fixed_recurrence=FixedRecurrence.ONCE,
        grace_days=7,
    )
    borrow(approved, "200.00")
    with clock.travel(timedelta(days=30 + 40)):
        assert debts_api(approved)[0]["interest_due"] == money("50.00")


@pytest.mark.usefixtures("around_business_midnight")
def test_percent_interest_follows_the_formula_and_the_rounding_rule(bnpl, approved):
    # 333.33 × 2.5 % × 10/30 = 2.777775 → 2.78
    enable_wallet_bnpl(
        interest_type=InterestType.PERCENT,
        interest_amount=Decimal("2.5"),
        grace_days=5,
        repayment_days=30,
    )
    borrow(approved, "333.33")
    with clock.travel(timedelta(days=30 + 5 + 10)):
        assert debts_api(approved)[0]["interest_due"] == money("2.78")


@pytest.mark.usefixtures("around_business_midnight")
def test_repayment_crystallizes_interest_and_pays_it_before_principal(bnpl, approved):
    enable_wallet_bnpl(
        interest_type=InterestType.FIXED, interest_amount=Decimal("50"), grace_days=7
    )
    debt_id = borrow(approved, "200.00")
    with clock.travel(timedelta(days=30 + 8)):
        fund(approved, "80.00")  # auto-deduct: 50.00 interest first, then 30.00 principal
    row = debt(debt_id)
    assert (row.interest_charged, row.interest_paid, row.principal_repaid) == (5000, 5000, 3000)
    income = Account.objects.get(code="interest_income:EUR")
    assert income.balance == 5000
    assert (
        JournalEntry.objects.filter(kind="wallet.debt_interest", reference_id=str(debt_id)).count()
        == 1
    )
    receivable_matches_debts(approved)


@pytest.mark.usefixtures("around_business_midnight")
def test_interest_policy_hook_replaces_the_formula(bnpl, approved, settings):
    settings.WALLET_BNPL_INTEREST_POLICY = "tests.wallet.test_bnpl_repayment.one_cent_a_day"
    borrow(approved, "10.00")
    with clock.travel(timedelta(days=3)):
        assert debts_api(approved)[0]["interest_due"] == money("0.03")


def one_cent_a_day(debt, conf, on):
    return (on - debt.taken_on).days


# --- write-off, withdrawals -------------------------------------------------------------


def test_goodwill_write_off_from_the_admin_with_confirmation(
    bnpl, approved, admin_client, admin_user
):
    enable_wallet_bnpl(interest_type=InterestType.FIXED, interest_amount=Decimal("5"), grace_days=0)
    debt_id = borrow(approved, "80.00")
    url = reverse("admin:wallet_walletdebt_changelist")
    confirm = admin_client.post(url, {"action": "write_off", "_selected_action": [debt_id]})
    assert confirm.status_code == 200
    assert b"Yes, write them off" in confirm.content
    assert debt(debt_id).status == DebtStatus.OUTSTANDING  # nothing happens before confirming
    admin_client.post(
        url,
        {
            "action": "write_off",
            "_selected_action": [debt_id],
            "confirm": "yes",
            "note": "Goodwill after complaint",
        },
    )
    row = debt(debt_id)
    assert (row.status, row.resolution, row.written_off) == (
        DebtStatus.REPAID,
        DebtResolution.WRITTEN_OFF,
        8000,
    )
    assert row.resolved_by == admin_user
    audit = AuditEntry.objects.get(action="wallet.debt_write_off")
    assert (audit.actor, audit.note) == (admin_user, "Goodwill after complaint")
    expense = Account.objects.get(code="write_off_expense:EUR")
    assert expense.balance == 8000
    assert Account.objects.get(code=f"bnpl:{approved.pk}:EUR").balance == 0
    receivable_matches_debts(approved)


def test_a_debt_is_written_off_from_its_own_page_with_the_same_confirmation(
    bnpl, approved, admin_client, admin_user, unchanged_db
):
    enable_wallet_bnpl(interest_type=InterestType.FIXED, interest_amount=Decimal("5"), grace_days=0)
    debt_id = borrow(approved, "80.00")
    page_url = reverse("admin:wallet_walletdebt_change", args=[debt_id])
    write_off_url = reverse("admin:wallet_walletdebt_write_off", args=[debt_id])
    assert f'href="{write_off_url}"' in admin_client.get(page_url).content.decode()
    check = unchanged_db()
    confirm = admin_client.get(write_off_url)
    assert confirm.status_code == 200
    assert b"Yes, write them off" in confirm.content
    assert f'href="{page_url}"'.encode() in confirm.content  # "No, take me back"
    check()  # nothing happens before confirming
    done = admin_client.post(write_off_url, {"confirm": "yes", "note": "Goodwill, call 42"})
    assert done.status_code == 302
    assert done.url == page_url
    row = debt(debt_id)
    assert (row.status, row.resolution, row.written_off) == (
        DebtStatus.REPAID,
        DebtResolution.WRITTEN_OFF,
        8000,
    )
    assert row.resolved_by == admin_user
    audit = AuditEntry.objects.get(action="wallet.debt_write_off")
    assert (audit.actor, audit.note) == (admin_user, "Goodwill, call 42")
    receivable_matches_debts(approved)
    assert write_off_url not in admin_client.get(page_url).content.decode()  # closed now


def test_the_write_off_button_needs_the_change_permission(bnpl, approved, client, unchanged_db):
    from django.contrib.auth.models import Permission, User

    debt_id = borrow(approved, "80.00")
    viewer = User.objects.create_user("viewer", password="pw", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_walletdebt"))
    client.force_login(viewer)
    page = client.get(reverse("admin:wallet_walletdebt_change", args=[debt_id]))
    assert page.status_code == 200
    write_off_url = reverse("admin:wallet_walletdebt_write_off", args=[debt_id])
    assert write_off_url not in page.content.decode()
    check = unchanged_db()
    assert client.get(write_off_url).status_code == 403
    assert client.post(write_off_url, {"confirm": "yes"}).status_code == 403
    check()


def test_withdrawal_is_blocked_while_in_debt_and_without_kyc_when_required(
    bnpl, approved, unchanged_db
):
    debt_id = borrow(approved, "10.00")
    customer_auto_deduct_set(customer=approved, enabled=False)
    fund(approved, "100.00")
    client = api(approved)
    body = {"amount": money("20.00"), "iban": "NL91ABNA0417164300"}
    check = unchanged_db()
    blocked = client.post("/api/v1/wallet/withdrawals", body, format="json")
    assert (blocked.status_code, blocked.json()["error"]["code"]) == (
        422,
        "wallet.withdrawal_blocked_by_debt",
    )
    check()
    repay(approved, debt_id, "10.00")
    done = client.post("/api/v1/wallet/withdrawals", body, format="json")
    assert done.status_code == 201, done.json()
    assert balance(approved) == 10000 - 1000 - 2000

    KycRequirement.objects.create(feature=Feature.WITHDRAWAL, created_at=clock.now())
    pending = make_customer()
    fund(pending, "50.00")
    refused = api(pending).post("/api/v1/wallet/withdrawals", body, format="json")
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "customers.kyc_required")
    assert (
        api(approve_kyc(pending))
        .post("/api/v1/wallet/withdrawals", body, format="json")
        .status_code
        == 201
    )


def test_withdrawal_allowed_in_debt_when_the_setting_is_off(bnpl, approved):
    enable_wallet_bnpl(block_withdrawal_while_in_debt=False)
    borrow(approved, "10.00")
    customer_auto_deduct_set(customer=approved, enabled=False)
    fund(approved, "100.00")
    response = api(approved).post(
        "/api/v1/wallet/withdrawals",
        {"amount": money("20.00"), "iban": "NL91ABNA0417164300"},
        format="json",
    )
    assert response.status_code == 201


def _buy(customer, price):
    response = api(customer).post(
        "/api/v1/orders",
        {
            "payment_method": "wallet",
            "lines": [{"sku": "ITEM", "name": "x", "quantity": 1, "unit_price": money(price)}],
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    return response.json()["id"]


def _cancel(customer, order_id):
    response = api(customer).post(f"/api/v1/orders/{order_id}/cancel", {}, format="json")
    assert response.status_code == 200, response.json()


def test_cancelling_a_bnpl_purchase_settles_its_debt_instead_of_paying_out_cash(bnpl, approved):
    fund(approved, "30.00")
    order_id = _buy(approved, "100.00")  # 30.00 from the balance, 70.00 borrowed
    customer_auto_deduct_set(customer=approved, enabled=False)  # would keep a cash refund
    _cancel(approved, order_id)
    [row] = WalletDebt.objects.filter(reference_id=str(order_id))
    assert (row.status, row.resolution, row.principal_repaid) == (
        DebtStatus.REPAID,
        DebtResolution.CANCELLED,
        7000,
    )
    assert balance(approved) == 3000  # what the customer paid, not the borrowed part
    receivable_matches_debts(approved)


def test_cancelling_after_a_write_off_recovers_the_write_off_not_the_wallet(
    bnpl, approved, admin_user
):
    from wallet.services import debt_write_off

    order_id = _buy(approved, "100.00")
    [row] = WalletDebt.objects.filter(reference_id=str(order_id))
    debt_write_off(debt_id=row.pk, actor=admin_user, note="goodwill")
    _cancel(approved, order_id)
    assert balance(approved) == 0
    assert Account.objects.get(code="write_off_expense:EUR").balance == 0
    assert JournalEntry.objects.filter(kind="wallet.debt_write_off_recovery").count() == 1


def test_the_my_wallet_repay_form_repays_once_when_submitted_twice(bnpl, approved, client):
    debt_id = borrow(approved, "60.00")
    customer_auto_deduct_set(customer=approved, enabled=False)
    fund(approved, "100.00")
    client.force_login(approved.user)
    form = {"amount": "25.00", "idempotency_key": "page-key-1"}
    client.post(f"/wallet/debts/{debt_id}/repay", form)
    client.post(f"/wallet/debts/{debt_id}/repay", form)  # a double-click
    assert debt(debt_id).principal_repaid == 2500
    assert balance(approved) == 7500
    page = client.get("/wallet/")
    assert b"already made" in page.content
