from datetime import UTC, datetime, time, timedelta

import pytest
from django.core import mail
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from rest_framework.test import APIClient

from core import clock
from core.models import AuditEntry, OutboundEmail
from core.notifications import emails_deliver
from customers.models import KycRequirement
from tests.factories import approve_kyc, borrow, make_customer, token_for
from wallet import signals
from wallet.models import (
    BnplSettings,
    BnplWhitelistEntry,
    DebtDailySnapshot,
    DebtStatus,
    WalletDebt,
)
from wallet.services import debt_write_off
from wallet.tasks import daily_debt_run

# Due dates, overdue marking and reminders are reckoned in business dates: each test runs
# just before and just after business midnight.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("around_business_midnight")]


def run_daily(days_ahead: int) -> dict:
    day = clock.business_date() + timedelta(days=days_ahead)
    return daily_debt_run(business_date=day.isoformat())


def test_daily_run_marks_only_debts_past_due_and_is_idempotent(bnpl, approved):
    late = borrow(approved, "10.00")
    with clock.travel(timedelta(days=5)):
        not_yet = borrow(approved, "10.00")
    assert run_daily(30)["marked_overdue"] == 0  # due today is not overdue
    assert run_daily(31)["marked_overdue"] == 1
    assert run_daily(31)["marked_overdue"] == 0
    assert WalletDebt.objects.get(pk=late).status == DebtStatus.OVERDUE
    assert WalletDebt.objects.get(pk=late).overdue_since == clock.business_date() + timedelta(31)
    assert WalletDebt.objects.get(pk=not_yet).status == DebtStatus.OUTSTANDING


def test_overdue_marking_is_one_statement_whatever_the_number_of_debts(
    bnpl, approved, django_assert_num_queries
):
    from wallet.services import debts_mark_overdue

    for _ in range(30):
        borrow(approved, "1.00")
    day = clock.business_date() + timedelta(days=31)
    with django_assert_num_queries(3):  # savepoint, UPDATE, release: one chunk
        assert debts_mark_overdue(business_date=day) == 30


def test_overdue_marking_works_through_chunks(bnpl, approved):
    from wallet.services import debts_mark_overdue

    for _ in range(7):
        borrow(approved, "1.00")
    day = clock.business_date() + timedelta(days=31)
    assert debts_mark_overdue(business_date=day, chunk=3) == 7
    assert set(WalletDebt.objects.values_list("status", flat=True)) == {DebtStatus.OVERDUE}


def test_debt_overdue_signal_names_the_debts(bnpl, approved, django_capture_on_commit_callbacks):
    first, second = borrow(approved, "1.00"), borrow(approved, "2.00")
    seen = []
    # Connected for this sender only, as an integrator would.
    signals.debt_overdue.connect(
        lambda sender, debt_ids, business_date, **kw: seen.extend(debt_ids),
        sender=WalletDebt,
        weak=False,
        dispatch_uid="t-overdue",
    )
    try:
        with django_capture_on_commit_callbacks(execute=True):
            run_daily(31)
    finally:
        signals.debt_overdue.disconnect(sender=WalletDebt, dispatch_uid="t-overdue")
    assert sorted(seen) == [first, second]


def test_one_reminder_per_overdue_debt_per_week_however_often_the_job_runs(bnpl, approved):
    debt_id = borrow(approved, "10.00")
    for days in (31, 31, 32, 37):  # the same day twice, then within the first week
        run_daily(days)
    assert OutboundEmail.objects.count() == 1
    run_daily(38)  # a week after it became overdue
    run_daily(38)
    keys = sorted(OutboundEmail.objects.values_list("dedupe_key", flat=True))
    assert keys == [
        f"wallet.debt_overdue:{debt_id}:week-0",
        f"wallet.debt_overdue:{debt_id}:week-1",
    ]
    assert emails_deliver() == 2
    assert emails_deliver() == 0  # sent once, never again
    assert [m.to for m in mail.outbox] == [[approved.user.email]] * 2
    assert "10.00 EUR" in mail.outbox[0].body
    assert set(OutboundEmail.objects.values_list("status", flat=True)) == {"sent"}


def test_repaid_debts_get_no_reminder(bnpl, approved, admin_user):
    debt_id = borrow(approved, "10.00")
    run_daily(31)
    debt_write_off(debt_id=debt_id, actor=admin_user, note="x")
    run_daily(38)
    assert OutboundEmail.objects.filter(dedupe_key__endswith="week-1").count() == 0


def test_dashboard_figures_are_computed_by_the_database(bnpl, admin_client, admin_user):
    a, b = approve_kyc(make_customer()), approve_kyc(make_customer())
    borrow(a, "10.00")
    overdue = borrow(b, "20.00")
    written = borrow(b, "5.00")
    run_daily(31)
    debt_write_off(debt_id=written, actor=admin_user)
    with clock.travel(timedelta(days=40)):
        from tests.factories import fund

        fund(a, "10.00")  # repays a's debt 40 days after it was made
    page = admin_client.get(reverse("admin:wallet_walletdebt_changelist"))
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="kpi-outstanding">20.00 EUR<' in html
    assert 'id="kpi-overdue">20.00 EUR<' in html
    assert 'id="kpi-customers">1<' in html
    assert 'id="kpi-days">40.0<' in html  # the written-off debt is left out
    assert "<polyline" in html  # the chart, from the day's snapshot
    assert DebtDailySnapshot.objects.count() == 1
    assert WalletDebt.objects.get(pk=overdue).status == DebtStatus.OVERDUE


def test_admin_explain_screen_lists_the_reasons(bnpl, admin_client):
    pending = make_customer()
    response = admin_client.get(
        reverse("admin:wallet_walletdebt_explain"), {"customer": pending.pk, "amount": "50.00"}
    )
    assert response.status_code == 200
    assert b"kyc_not_approved" in response.content


def test_settings_changes_and_whitelist_are_audited(bnpl, admin_client, admin_user):
    url = reverse("admin:wallet_bnplsettings_change", args=[1])
    form = {
        "enabled": "on",
        "currency": "EUR",
        "eligibility_mode": "whitelist",
        "max_debt_per_user": "500.00",
        "min_order": "100.00",
        "repayment_days": "14",
        "interest_type": "fixed",
        "interest_amount": "50",
        "fixed_recurrence": "weekly",
        "grace_days": "7",
        "block_withdrawal_while_in_debt": "on",
        "kyc_required_features": ["withdrawal"],
    }
    response = admin_client.post(url, form)
    assert response.status_code == 302, response.content[:2000]
    conf = BnplSettings.objects.get()
    assert (conf.max_debt_per_user, conf.min_order, conf.repayment_days) == (50000, 10000, 14)
    change = AuditEntry.objects.get(action="wallet.bnpl_settings")
    assert change.actor == admin_user
    assert change.changes["max_debt_per_user"] == ["100000", "50000"]
    assert change.changes["eligibility_mode"] == ["all_kyc_approved", "whitelist"]
    assert change.changes["kyc_required_features"] == ["[]", "['withdrawal']"]
    assert list(KycRequirement.objects.values_list("feature", flat=True)) == ["withdrawal"]
    bad = admin_client.post(url, {**form, "max_debt_per_user": "1.001"})
    assert bad.status_code == 200  # the form comes back with the error
    assert BnplSettings.objects.get().max_debt_per_user == 50000

    customer = make_customer()
    admin_client.post(reverse("admin:wallet_bnplwhitelistentry_add"), {"user": customer.user.pk})
    assert BnplWhitelistEntry.objects.get().added_by == admin_user
    assert (
        AuditEntry.objects.filter(
            action="admin.add", target_type="wallet.bnplwhitelistentry"
        ).count()
        == 1
    )
    entry = BnplWhitelistEntry.objects.get()
    admin_client.post(
        reverse("admin:wallet_bnplwhitelistentry_delete", args=[entry.pk]), {"post": "yes"}
    )
    assert not BnplWhitelistEntry.objects.exists()
    removal = AuditEntry.objects.get(action="admin.delete", target_type="wallet.bnplwhitelistentry")
    assert removal.actor == admin_user


def _count(client, url) -> int:
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url).status_code == 200
    return len(ctx.captured_queries)


@pytest.mark.parametrize("url", ["/wallet/", "/api/v1/wallet/debts"])
def test_query_count_is_the_same_for_1_and_200_debts(bnpl, approved, url):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(approved)}")
    client.force_login(approved.user)
    borrow(approved, "1.00")
    one = _count(client, url)
    for _ in range(199):
        borrow(approved, "1.00")
    assert WalletDebt.objects.count() == 200
    assert _count(client, url) == one


def _half_past_midnight_in_business_time() -> datetime:
    """00:30 of the coming business day: still the day before in UTC."""
    tomorrow = clock.business_date() + timedelta(days=1)
    return datetime.combine(tomorrow, time(0, 30), tzinfo=clock.business_tz())


def test_a_debt_taken_at_half_past_midnight_is_emailed_with_its_business_date(bnpl, approved):
    taken = _half_past_midnight_in_business_time()
    with clock.travel_to(taken):
        debt_id = borrow(approved, "10.00")
        day = clock.business_date() + timedelta(days=31)
        daily_debt_run(business_date=day.isoformat())
    email = OutboundEmail.objects.get(dedupe_key=f"wallet.debt_overdue:{debt_id}:week-0")
    business_day = f"{taken.day} {taken:%B %Y}"
    utc_day = taken.astimezone(UTC).date()
    assert utc_day != taken.date()  # the case this test is about
    assert f"balance from {business_day}" in email.body_text
    assert f"balance from {business_day}" in email.body_html
    assert WalletDebt.objects.get(pk=debt_id).taken_on == taken.date()


def test_pages_show_times_in_the_business_time_zone(bnpl, approved, client, admin_client):
    taken = _half_past_midnight_in_business_time()
    with clock.travel_to(taken):
        borrow(approved, "10.00")
    client.force_login(approved.user)
    page = client.get("/wallet/").content.decode()
    assert f"{taken.day} {taken:%b %Y} 00:30" in page  # the activity row
    assert f"{taken.day} {taken:%b %Y} 23:30" not in page
    entry = AuditEntry.objects.latest("pk")
    assert str(entry).startswith(f"{taken:%Y-%m-%d} 00:30")
    admin = admin_client.get(reverse("admin:wallet_walletdebt_changelist")).content.decode()
    assert f"{taken.day}, {taken.year}, 12:30 a.m." in admin  # "Dec. 9, 2026, 12:30 a.m."
    assert "11:30 p.m." not in admin
