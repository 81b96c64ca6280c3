from datetime import date, timedelta

import pytest
from django.core.management import call_command
from django.urls import reverse

from bnpl.models import BorrowerProfile, InstallmentStatus, Plan
from bnpl.underwriting import credit_decide
from collections_.buckets import buckets_parse
from collections_.delinquency import (
    BLOCK_REASON_PREFIX,
    installments_mark_overdue,
    late_fee_plan_cap,
    plans_delinquency_update,
)
from collections_.models import (
    BucketActionDone,
    CollectionsSettings,
    DelinquencyTransition,
    LateFeeCharge,
)
from collections_.selectors import collections_settings
from collections_.tasks import delinquency_run as delinquency_task
from core import clock
from core.models import AuditEntry, OutboundEmail
from core.money import Money
from ledger.models import Account
from tests.collections.delinquency_helpers import (
    fresh,
    installments,
    moment,
    pay_cash,
    plan_from,
    run_delinquency,
)
from tests.factories import make_customer

pytestmark = pytest.mark.django_db

DUE_1 = date(2026, 2, 10)


def day(n: int) -> str:
    """The date ``n`` days after the first installment's due date."""
    return (DUE_1 + timedelta(days=n)).isoformat()


def transitions(plan: Plan) -> list[tuple[str, str, int]]:
    return list(
        DelinquencyTransition.objects.filter(plan=plan)
        .order_by("id")
        .values_list("from_bucket", "to_bucket", "days_past_due")
    )


@pytest.fixture
def customer(web_channel):
    return make_customer()


def test_the_plan_falls_due_monthly_from_its_start(customer):
    plan = plan_from(customer)
    assert [(i.number, i.due_date, i.principal) for i in installments(plan)] == [
        (1, date(2026, 2, 10), 30000),
        (2, date(2026, 3, 10), 30000),
        (3, date(2026, 4, 10), 30000),
    ]


def test_overdue_marking_marks_unpaid_installments_the_day_after_due_once(customer):
    plan = plan_from(customer)
    assert installments_mark_overdue(business_date=DUE_1) == 0
    assert installments_mark_overdue(business_date=DUE_1 + timedelta(days=1)) == 1
    first, second, _ = installments(plan)
    assert first.status == InstallmentStatus.OVERDUE
    assert first.overdue_since == date(2026, 2, 11)
    assert second.status == InstallmentStatus.SCHEDULED
    assert installments_mark_overdue(business_date=DUE_1 + timedelta(days=1)) == 0


def test_overdue_marking_walks_the_installments_in_chunks(customer):
    plans = [plan_from(customer) for _ in range(3)]
    assert installments_mark_overdue(business_date=date(2026, 3, 11), chunk=2) == 6
    assert all(
        i.status == InstallmentStatus.OVERDUE
        for plan in plans
        for i in installments(plan)
        if i.number < 3
    )


def test_paid_installments_are_never_marked_overdue(customer):
    plan = plan_from(customer)
    pay_cash(installments(plan)[0])
    run_delinquency(day(5))
    assert installments(plan)[0].status == InstallmentStatus.PAID
    plan = fresh(plan)
    assert (plan.days_past_due, plan.delinquency_bucket) == (0, "")
    assert transitions(plan) == []


def test_buckets_follow_the_worst_days_past_due_and_each_move_is_recorded(customer):
    plan = plan_from(customer)
    for n, bucket in [(0, ""), (1, "1-30"), (30, "1-30"), (31, "31-60"), (61, "61-90")]:
        run_delinquency(day(n))
        plan = fresh(plan)
        assert (plan.days_past_due, plan.delinquency_bucket) == (n, bucket)
    run_delinquency(day(91))
    plan = fresh(plan)
    assert (plan.days_past_due, plan.delinquency_bucket) == (91, "90+")
    assert transitions(plan) == [
        ("", "1-30", 1),
        ("1-30", "31-60", 31),
        ("31-60", "61-90", 61),
        ("61-90", "90+", 91),
    ]


def test_paying_the_oldest_installment_moves_the_plan_back_by_the_next_one(customer):
    plan = plan_from(customer)
    run_delinquency(day(35))  # installment 1: 35 days, installment 2: 7 days
    plan = fresh(plan)
    assert plan.delinquency_bucket == "31-60"
    pay_cash(installments(plan)[0])
    run_delinquency(day(36))
    plan = fresh(plan)
    assert (plan.days_past_due, plan.delinquency_bucket) == (8, "1-30")
    for inst in installments(plan)[1:2]:
        pay_cash(inst)
    run_delinquency(day(37))
    plan = fresh(plan)
    assert (plan.days_past_due, plan.delinquency_bucket) == (0, "")
    assert [t[:2] for t in transitions(plan)] == [("", "31-60"), ("31-60", "1-30"), ("1-30", "")]


def test_buckets_are_configurable(customer):
    CollectionsSettings.objects.update_or_create(
        pk=1,
        defaults={
            "buckets": [
                {"name": "early", "min_days": 1, "max_days": 10, "actions": []},
                {"name": "late", "min_days": 11, "max_days": None, "actions": []},
            ]
        },
    )
    plan = plan_from(customer)
    run_delinquency(day(10))
    plan = fresh(plan)
    assert plan.delinquency_bucket == "early"
    run_delinquency(day(11))
    plan = fresh(plan)
    assert plan.delinquency_bucket == "late"


@pytest.mark.parametrize(
    ("buckets", "message"),
    [
        ([{"name": "a", "min_days": 2, "max_days": None, "actions": []}], "start at 1"),
        (
            [
                {"name": "a", "min_days": 1, "max_days": 10, "actions": []},
                {"name": "b", "min_days": 12, "max_days": None, "actions": []},
            ],
            "start at 11",
        ),
        (
            [
                {"name": "a", "min_days": 1, "max_days": None, "actions": []},
                {"name": "b", "min_days": 1, "max_days": 5, "actions": []},
            ],
            "open-ended",
        ),
        ([{"name": "a", "min_days": 1, "max_days": None, "actions": ["jail"]}], "unknown"),
        ([{"name": "a", "min_days": 1, "max_days": 30, "actions": []}], r"last bucket \(a\)"),
    ],
)
def test_bucket_settings_without_gaps_overlaps_or_unknown_actions(buckets, message):
    with pytest.raises(ValueError, match=message):
        buckets_parse(buckets)


def test_the_delinquency_run_is_a_constant_number_of_queries(customer, django_assert_num_queries):
    """Two plans or eight (of another customer) entering a bucket: the same queries."""
    for _ in range(2):
        plan_from(customer, late_fee_amount=500)
    collections_settings()
    when = date.fromisoformat(day(40))
    with clock.travel_to(moment(when)), django_assert_num_queries(21) as two_plans:
        result = plans_delinquency_update(business_date=when)
    assert (result.plans, result.transitions, result.late_fees, result.blocked) == (2, 2, 4, 1)
    other = make_customer()
    for _ in range(8):
        plan_from(other, late_fee_amount=500)
    same = len(two_plans.captured_queries)
    with clock.travel_to(moment(when)), django_assert_num_queries(same):
        result = plans_delinquency_update(business_date=when)
    assert (result.plans, result.transitions, result.late_fees, result.blocked) == (10, 8, 16, 1)


# --- actions --------------------------------------------------------------------------


def test_running_twice_a_day_changes_nothing_more(customer):
    plan = plan_from(customer, late_fee_amount=1500)
    first = run_delinquency(day(35))
    assert first.delinquency.transitions == 1
    snapshot = (
        DelinquencyTransition.objects.count(),
        BucketActionDone.objects.count(),
        list(LateFeeCharge.objects.values_list("installment_id", "reason", "amount")),
        OutboundEmail.objects.count(),
        [i.late_fee for i in installments(plan)],
    )
    again = run_delinquency(day(35))
    assert again.marked_overdue == 0
    assert (again.delinquency.transitions, again.delinquency.late_fees) == (0, 0)
    assert snapshot == (
        DelinquencyTransition.objects.count(),
        BucketActionDone.objects.count(),
        list(LateFeeCharge.objects.values_list("installment_id", "reason", "amount")),
        OutboundEmail.objects.count(),
        [i.late_fee for i in installments(plan)],
    )


def test_one_reminder_per_plan_and_bucket(customer):
    plan = plan_from(customer)
    for n in (1, 2, 20, 31, 32):
        run_delinquency(day(n))
    emails = OutboundEmail.objects.filter(dedupe_key__startswith="collections.plan_bucket:")
    assert sorted(emails.values_list("dedupe_key", flat=True)) == [
        f"collections.plan_bucket:{plan.pk}:1-30",
        f"collections.plan_bucket:{plan.pk}:31-60",
    ]
    late = emails.get(dedupe_key__endswith="31-60")
    assert late.to == customer.user.email
    assert "31 days past due" in late.body_text
    assert "cannot start new installment plans" in late.body_text
    assert "cannot start new installment plans" in late.body_html


def test_a_plan_31_days_late_blocks_new_plans_until_it_is_current(customer):
    plan = plan_from(customer)
    run_delinquency(day(30))
    assert not BorrowerProfile.objects.filter(customer=customer, blocked_at__isnull=False)
    run_delinquency(day(31))
    profile = BorrowerProfile.objects.get(customer=customer)
    assert profile.blocked_at is not None
    assert profile.blocked_reason.startswith(BLOCK_REASON_PREFIX)
    assert f"plan #{plan.pk}" in profile.blocked_reason
    first, _second, _ = installments(plan)
    pay_cash(first)
    run_delinquency(day(32))  # installment 2 is 4 days late: 1-30 does not block
    profile.refresh_from_db()
    assert (profile.blocked_at, profile.blocked_reason) == (None, "")
    assert list(
        AuditEntry.objects.filter(target_type="bnpl.borrowerprofile", target_id=str(profile.pk))
        .order_by("id")
        .values_list("action", flat=True)
    ) == ["collections.bnpl_blocked", "collections.bnpl_unblocked"]


def test_another_late_plan_keeps_the_block(customer):
    plan = plan_from(customer)
    other = plan_from(customer, start="2026-01-12")
    run_delinquency(day(40))
    pay_cash(installments(plan)[0])
    pay_cash(installments(plan)[1])
    run_delinquency(day(41))
    plan = fresh(plan)
    other = fresh(other)
    assert (plan.delinquency_bucket, other.delinquency_bucket) == ("", "31-60")
    assert BorrowerProfile.objects.get(customer=customer).blocked_at is not None


def test_a_block_set_by_staff_is_left_alone(customer):
    plan = plan_from(customer)
    staff_block = clock.now()
    BorrowerProfile.objects.create(
        customer=customer, blocked_at=staff_block, blocked_reason="fraud review"
    )
    run_delinquency(day(31))
    pay_cash(installments(plan)[0])
    run_delinquency(day(32))
    profile = BorrowerProfile.objects.get(customer=customer)
    assert (profile.blocked_at, profile.blocked_reason) == (staff_block, "fraud review")


def test_a_plan_past_90_days_is_flagged_for_write_off_once(customer):
    plan = plan_from(customer)
    run_delinquency(day(90))
    plan = fresh(plan)
    assert plan.write_off_flagged_at is None
    run_delinquency(day(91))
    plan = fresh(plan)
    flagged = plan.write_off_flagged_at
    assert flagged is not None
    run_delinquency(day(92))
    plan = fresh(plan)
    assert plan.write_off_flagged_at == flagged
    assert (
        AuditEntry.objects.filter(
            action="collections.write_off_flagged", target_id=str(plan.pk)
        ).count()
        == 1
    )
    assert set(
        BucketActionDone.objects.filter(plan=plan, bucket="90+").values_list("action", flat=True)
    ) == {"reminder", "block_bnpl", "flag_write_off"}


def test_a_paused_plan_keeps_its_bucket_but_takes_no_action(customer):
    plan = plan_from(customer, late_fee_amount=1500)
    Plan.objects.filter(pk=plan.pk).update(debits_paused=True, paused_reason="dispute")
    run_delinquency(day(40))
    plan = fresh(plan)
    assert plan.delinquency_bucket == "31-60"
    assert not BucketActionDone.objects.filter(plan=plan).exists()
    assert not LateFeeCharge.objects.exists()
    assert not BorrowerProfile.objects.filter(blocked_at__isnull=False).exists()


# --- late fees ------------------------------------------------------------------------


def test_late_fee_after_the_grace_days_once_per_installment_and_bucket(customer):
    plan = plan_from(customer, late_fee_amount=1500, late_fee_grace_days=3)
    run_delinquency(day(3))
    assert not LateFeeCharge.objects.exists()
    run_delinquency(day(4))
    run_delinquency(day(5))
    first = installments(plan)[0]
    assert first.late_fee == 1500
    assert list(LateFeeCharge.objects.values_list("installment_id", "reason", "amount")) == [
        (first.pk, "1-30", 1500)
    ]
    run_delinquency(day(31))
    first, second, _ = installments(plan)
    # Installment 1 reached 31-60: a second fee; installment 2 is 3 days late: in grace.
    assert (first.late_fee, second.late_fee) == (3000, 0)
    assert sorted(LateFeeCharge.objects.values_list("installment__number", "reason")) == [
        (1, "1-30"),
        (1, "31-60"),
    ]


def test_late_fees_stop_at_the_installment_cap(customer):
    plan = plan_from(
        customer, late_fee_amount=1500, late_fee_grace_days=0, late_fee_cap_installment=2000
    )
    for n in (1, 31, 61):
        run_delinquency(day(n))
    first = installments(plan)[0]
    assert first.late_fee == 2000  # 15.00, then 5.00 up to the cap, then nothing
    assert list(
        LateFeeCharge.objects.filter(installment=first)
        .order_by("id")
        .values_list("reason", "amount")
    ) == [("1-30", 1500), ("31-60", 500)]


def test_late_fees_of_a_plan_stop_at_25_percent_of_its_amount(customer):
    plan = plan_from(customer, amount="100.00", late_fee_amount=1500, late_fee_grace_days=0)
    assert late_fee_plan_cap(plan) == 2500
    run_delinquency(day(1))  # installment 1: 15.00
    run_delinquency(day(31))  # installment 1: 10.00 (the cap), installment 2: nothing left
    run_delinquency(day(61))
    fees = [i.late_fee for i in installments(plan)]
    assert fees == [2500, 0, 0]
    assert sum(LateFeeCharge.objects.values_list("amount", flat=True)) == 2500


def test_the_plan_cap_percentage_comes_from_the_plan_terms(customer):
    plan = plan_from(
        customer,
        amount="100.00",
        late_fee_amount=1500,
        late_fee_grace_days=0,
        late_fee_cap_plan_percent="10",
    )
    run_delinquency(day(1))
    run_delinquency(day(31))
    assert [i.late_fee for i in installments(plan)] == [1000, 0, 0]


def test_a_late_fee_is_paid_first_and_booked_as_fee_income_when_paid(customer):
    plan = plan_from(customer, late_fee_amount=1500, late_fee_grace_days=0)
    fee_income = Account.objects.filter(code="fee_income:EUR")
    run_delinquency(day(1))
    assert not fee_income.exists() or fee_income.get().balance == 0  # charged, not income
    first = installments(plan)[0]
    assert first.outstanding == 31500
    pay_cash(first, "15.00")
    first.refresh_from_db()
    assert (first.paid_late_fee, first.paid_principal, first.outstanding) == (1500, 0, 30000)
    assert fee_income.get().balance == 1500
    call_command("ledger_verify")


# --- the task and the settings screen -------------------------------------------------


def test_the_daily_task_run_twice_reports_nothing_new_the_second_time(customer):
    plan_from(customer, late_fee_amount=1500)
    with clock.travel_to(moment(day(35))):
        first = delinquency_task(day(35))
        again = delinquency_task(day(35))
    assert first == {
        "marked_overdue": 2,
        "plans": 1,
        "transitions": 1,
        "late_fees": 2,
        "blocked": 1,
        "unblocked": 0,
        "flagged": 0,
        "reminders": 1,
    }
    assert again == dict.fromkeys(first, 0) | {"plans": 1}


def test_bucket_settings_are_validated_and_every_change_audited(admin_client):
    conf = collections_settings()
    url = reverse("admin:collections_collectionssettings_change", args=[conf.pk])
    form = {
        "soft_retry_days": "[1, 3, 7]",
        "technical_retry_minutes": "[5, 15]",
        "reminder_days_before": "2",
        "overdue_reminder_interval_days": "7",
        "chunk_size": "1000",
    }
    gap = '[{"name": "a", "min_days": 1, "max_days": 5, "actions": []}, '
    gap += '{"name": "b", "min_days": 7, "max_days": null, "actions": ["late_fee"]}]'
    refused = admin_client.post(url, form | {"buckets": gap})
    assert refused.status_code == 200
    assert b"must start at 6 days" in refused.content
    good = gap.replace('"min_days": 7', '"min_days": 6')
    assert admin_client.post(url, form | {"buckets": good}).status_code == 302
    conf = collections_settings()
    assert [b["name"] for b in conf.buckets] == ["a", "b"]
    audit = AuditEntry.objects.get(action="collections.settings_changed")
    assert set(audit.changes) == {"buckets", "reminder_days_before", "technical_retry_minutes"}
    assert audit.changes["reminder_days_before"] == {"before": 3, "after": 2}


def test_underwriting_declines_a_customer_blocked_by_delinquency_until_it_is_lifted(customer):
    plan = plan_from(customer)
    product = plan.product

    def reasons(on: str) -> set[str]:
        with clock.travel_to(moment(on)):
            decision = credit_decide(
                customer=customer,
                amount=Money.parse("100.00", "EUR"),
                product=product,
                payment_method="pm_card_visa",
                on=clock.now(),
            )
        return {r["code"] for r in decision.reasons}

    run_delinquency(day(31))
    assert "borrower_blocked" in reasons(day(31))
    for inst in installments(plan)[:2]:
        pay_cash(inst)
    run_delinquency(day(32))
    assert "borrower_blocked" not in reasons(day(32))
