"""Servicing a running plan: reschedule, extra payments, early payoff, refunds, cancel,
income-aligned dates. Worked examples with the numbers written out, properties, refusals."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bnpl import pricing, selectors, servicing
from bnpl.errors import RescheduleRefused
from bnpl.models import DebitRequestStatus, Installment, InstallmentStatus, Plan, PlanStatus
from bnpl.services import plan_receivable
from core import clock
from core.errors import ApplicationError
from core.models import AuditEntry
from core.money import Money, to_minor
from ledger.models import Account, Purpose
from ledger.services import system
from payments.models import PaymentTransaction
from tests.bnpl.factories import after_commit_tasks, make_plan, make_product
from tests.factories import fund, make_customer, saved_card
from wallet.models import Wallet, WalletTransaction

pytestmark = [pytest.mark.django_db]

EUR = "EUR"
JAN_10 = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)


def eur(amount: str) -> Money:
    return Money.parse(amount, EUR)


def balance(code: str) -> int:
    account = Account.objects.filter(code=code).first()
    return account.balance if account else 0


def receivable(plan: Plan) -> int:
    return plan_receivable(customer_id=plan.customer_id, currency=plan.currency).balance


def wallet_balance(customer) -> int:
    wallet = Wallet.objects.select_related("account").filter(customer=customer).first()
    return wallet.account.balance if wallet else 0


def rows(plan: Plan) -> list[tuple]:
    return list(
        Installment.objects.filter(plan=plan)
        .order_by("number")
        .values_list("number", "due_date", "principal", "interest", "fee", "status")
    )


def refused(code: str, fn, *args, **kwargs) -> ApplicationError:
    with pytest.raises(ApplicationError) as caught:
        fn(*args, **kwargs)
    assert caught.value.code == code, caught.value
    return caught.value


@pytest.fixture
def jan_10():
    """Today is 10 January 2026 (business date) for the whole test."""
    with clock.travel_to(JAN_10):
        yield date(2026, 1, 10)


def travel(day: date):
    """Noon UTC of ``day``, wherever the clock already is (``travel_to`` blocks nest)."""
    return clock.travel(datetime.combine(day, time(12), tzinfo=UTC) - clock.now())


def plan_300(customer, **overrides) -> Plan:
    """300.00 EUR in 3 monthly installments of 100.00 from 10 Jan: 10 Feb, 10 Mar, 10 Apr."""
    overrides.setdefault("reschedule_max_days", 14)
    overrides.setdefault("reschedule_max_count", 2)
    return make_plan(customer=customer, amount="300.00", start_date=date(2026, 1, 10), **overrides)


def plan_1200_declining(customer, **overrides) -> Plan:
    """1,200.00 EUR over 3 months at 12 % APR (1 % a month), declining balance, from 10 Jan:
    payment 408.03; interest 12.00, 8.04, 4.04; principal 396.03, 399.99, 403.98."""
    overrides.setdefault("reschedule_max_days", 14)
    overrides.setdefault("reschedule_max_count", 2)
    return make_plan(
        customer=customer,
        amount="1200.00",
        start_date=date(2026, 1, 10),
        interest_method="declining",
        apr=Decimal(12),
        **overrides,
    )


# --- reschedule -------------------------------------------------------------------------


@pytest.mark.usefixtures("customer_cards")
def test_reschedule_moves_one_date_adds_the_fee_and_moves_the_debit(customer, jan_10):
    plan = plan_300(customer, reschedule_fee=500)

    result = servicing.plan_reschedule(plan_id=plan.pk, number=1, new_date=date(2026, 2, 17))

    assert (result.old_date, result.new_date, result.fee) == (
        date(2026, 2, 10),
        date(2026, 2, 17),
        eur("5.00"),
    )
    assert result.interest_change == eur("0.00")
    assert rows(plan) == [
        (1, date(2026, 2, 17), 10_000, 0, 500, "scheduled"),
        (2, date(2026, 3, 10), 10_000, 0, 0, "scheduled"),
        (3, date(2026, 4, 10), 10_000, 0, 0, "scheduled"),
    ]
    first = Installment.objects.get(plan=plan, number=1)
    assert first.original_due_date == date(2026, 2, 10)
    assert first.debit_request.next_attempt_at == datetime(2026, 2, 17, tzinfo=clock.business_tz())
    plan = Plan.objects.get(pk=plan.pk)
    assert plan.reschedule_count == 1
    assert AuditEntry.objects.filter(action="bnpl.plan_rescheduled").count() == 1
    # Nothing moves in the ledger: the fee is income when it is paid.
    assert receivable(plan) == 30_000


@pytest.mark.usefixtures("customer_cards")
def test_reschedule_recomputes_declining_interest_for_the_moved_days(customer, jan_10):
    plan = plan_1200_declining(customer)

    result = servicing.plan_reschedule(plan_id=plan.pk, number=2, new_date=date(2026, 3, 20))

    # 803.97 owed before installment 2 accrues 10 more days: 803.97 × 12 % × 10/365 = 2.64;
    # the 403.98 left after it accrues 10 days less before installment 3: −1.33.
    assert rows(plan) == [
        (1, date(2026, 2, 10), 39_603, 1_200, 0, "scheduled"),
        (2, date(2026, 3, 20), 39_999, 804 + 264, 0, "scheduled"),
        (3, date(2026, 4, 10), 40_398, 404 - 133, 0, "scheduled"),
    ]
    assert result.interest_change == eur("1.31")


@pytest.mark.usefixtures("customer_cards")
def test_reschedule_earlier_lowers_the_interest(customer, jan_10):
    plan = plan_1200_declining(customer)

    result = servicing.plan_reschedule(plan_id=plan.pk, number=2, new_date=date(2026, 3, 3))

    # 7 days earlier: −(803.97 × 12 % × 7/365 = 1.85) and +(403.98 × 12 % × 7/365 = 0.93).
    assert [r[3] for r in rows(plan)] == [1_200, 804 - 185, 404 + 93]
    assert result.interest_change == eur("-0.92")


@pytest.mark.usefixtures("customer_cards")
def test_reschedule_accrues_nothing_on_principal_already_repaid(customer, jan_10):
    fund(customer, "2000.00")
    plan = make_plan(
        customer=customer,
        amount="1200.00",
        start_date=date(2026, 1, 10),
        interest_method="declining",
        apr=Decimal("19.99"),
        reschedule_max_days=20,
        reschedule_max_count=2,
    )
    before = rows(plan)
    for number in (2, 3):  # repaid in full ahead of time
        owed = Installment.objects.get(plan=plan, number=number).outstanding
        servicing.installment_pay(
            plan_id=plan.pk, number=number, amount=Money(owed, EUR), source="wallet"
        )

    result = servicing.plan_reschedule(plan_id=plan.pk, number=1, new_date=date(2026, 2, 20))

    # Only installment 1's 393.41 is still owed: 393.41 × 19.99 % × 10/365 = 2.1546 → 2.15.
    # No later installment is open to offset it: installment 1 carries it.
    assert before[0][2:4] == (39_341, 1_999)
    assert result.interest_change == eur("2.15")
    after = rows(plan)
    assert after[0][3] == 1_999 + 215
    assert [r[2:5] for r in after[1:]] == [r[2:5] for r in before[1:]]


@pytest.mark.usefixtures("customer_cards")
def test_reschedule_offsets_against_the_next_open_installment(customer, jan_10):
    plan = plan_1200_declining(customer)
    servicing.installment_pay(plan_id=plan.pk, number=2, amount=eur("408.03"), source="wallet")

    result = servicing.plan_reschedule(plan_id=plan.pk, number=1, new_date=date(2026, 2, 20))

    # Owed before installment 1: 396.03 + 403.98 (installment 2 is repaid) = 800.01, for 10
    # more days: 800.01 × 12 % × 10/365 = 2.63. The 403.98 left after it accrues 10 days
    # less: 1.33, taken off installment 3, the next open one; paid installment 2 is untouched.
    assert [(r[0], r[3], r[5]) for r in rows(plan)] == [
        (1, 1_200 + 263, "scheduled"),
        (2, 804, "paid"),
        (3, 404 - 133, "scheduled"),
    ]
    assert result.interest_change == eur("1.30")


@pytest.mark.usefixtures("customer_cards")
def test_reschedule_preview_shows_the_schedule_and_writes_nothing(customer, jan_10, unchanged_db):
    plan = plan_1200_declining(customer, reschedule_fee=250)
    check = unchanged_db()

    preview = servicing.plan_reschedule_preview(
        plan_id=plan.pk, number=2, new_date=date(2026, 3, 20)
    )

    check()
    view = selectors.plan_view(preview.plan, installments=preview.installments)
    assert [(i.number, i.due_date, i.interest, i.fee) for i in view.installments] == [
        (1, date(2026, 2, 10), eur("12.00"), eur("0.00")),
        (2, date(2026, 3, 20), eur("10.68"), eur("2.50")),
        (3, date(2026, 4, 10), eur("2.71"), eur("0.00")),
    ]
    assert not preview.confirmed
    confirmed = servicing.plan_reschedule(plan_id=plan.pk, number=2, new_date=date(2026, 3, 20))
    assert [(i.due_date, i.interest, i.fee) for i in confirmed.installments] == [
        (i.due_date, i.interest, i.fee) for i in preview.installments
    ]


@pytest.mark.parametrize(
    ("number", "new_date", "code"),
    [
        (1, date(2026, 2, 25), "bnpl.reschedule_too_far"),  # 15 days, 14 allowed
        (1, date(2026, 1, 26), "bnpl.reschedule_too_far"),
        (1, date(2026, 2, 10), "bnpl.reschedule_same_date"),
        (1, date(2026, 1, 10), "bnpl.reschedule_date_in_past"),
        (9, date(2026, 2, 12), "bnpl.installment_not_found"),
    ],
)
@pytest.mark.usefixtures("customer_cards")
def test_reschedule_outside_policy_is_refused(
    customer, jan_10, unchanged_db, number, new_date, code
):
    plan = plan_300(customer)
    # Installment 1 moved to 3 Feb is allowed: 7 days from its original date.
    check = unchanged_db()
    for fn in (servicing.plan_reschedule_preview, servicing.plan_reschedule):
        refused(code, fn, plan_id=plan.pk, number=number, new_date=new_date)
    check()


@pytest.mark.usefixtures("customer_cards")
def test_reschedule_must_stay_before_the_following_installment(customer, jan_10, unchanged_db):
    plan = plan_300(customer, frequency="weekly")  # due 17, 24 and 31 January
    check = unchanged_db()
    refused(
        "bnpl.reschedule_out_of_order",
        servicing.plan_reschedule,
        plan_id=plan.pk,
        number=1,
        new_date=date(2026, 1, 24),
    )
    check()

    servicing.plan_reschedule(plan_id=plan.pk, number=1, new_date=date(2026, 1, 23))

    assert [d for _, d, *_ in rows(plan)] == [
        date(2026, 1, 23),
        date(2026, 1, 24),
        date(2026, 1, 31),
    ]


@pytest.mark.usefixtures("customer_cards")
def test_reschedule_count_is_limited(customer, jan_10, unchanged_db):
    plan = plan_300(customer, reschedule_max_count=2)
    servicing.plan_reschedule(plan_id=plan.pk, number=1, new_date=date(2026, 2, 12))
    servicing.plan_reschedule(plan_id=plan.pk, number=2, new_date=date(2026, 3, 12))
    check = unchanged_db()

    error = refused(
        "bnpl.reschedule_limit_reached",
        servicing.plan_reschedule,
        plan_id=plan.pk,
        number=3,
        new_date=date(2026, 4, 12),
    )

    check()
    assert error.status_code == 422


@pytest.mark.usefixtures("customer_cards")
def test_overdue_paid_and_due_today_installments_cannot_move(customer, jan_10, unchanged_db):
    plan = plan_300(customer)
    servicing.installment_pay(plan_id=plan.pk, number=2, amount=eur("100.00"), source="wallet")
    check = unchanged_db()
    refused(
        "bnpl.reschedule_installment_not_open",
        servicing.plan_reschedule,
        plan_id=plan.pk,
        number=2,
        new_date=date(2026, 3, 12),
    )
    with travel(date(2026, 2, 10)):  # installment 1 falls due today
        refused(
            "bnpl.reschedule_installment_not_open",
            servicing.plan_reschedule,
            plan_id=plan.pk,
            number=1,
            new_date=date(2026, 2, 20),
        )
    with travel(date(2026, 2, 11)):  # and is overdue the day after
        refused(
            "bnpl.reschedule_installment_not_open",
            servicing.plan_reschedule,
            plan_id=plan.pk,
            number=1,
            new_date=date(2026, 2, 20),
        )
    check()


@pytest.mark.usefixtures("customer_cards")
def test_a_started_debit_cannot_move(customer, jan_10, unchanged_db):
    plan = plan_300(customer)
    # Collections records an attempt on the debit request (a soft decline, retry later).
    plan.debit_requests.filter(installment__number=1).update(attempts_made=1)
    check = unchanged_db()
    refused(
        "bnpl.reschedule_debit_started",
        servicing.plan_reschedule,
        plan_id=plan.pk,
        number=1,
        new_date=date(2026, 2, 12),
    )
    check()


def _in_memory_plan(terms: pricing.Terms, amount: int, start: date) -> servicing._Locked:
    schedule = pricing.price_schedule(terms=terms, amount=Money(amount, EUR), start_date=start)
    plan = Plan(
        pk=1,
        currency=EUR,
        amount=amount,
        terms=terms.to_json(),
        start_date=start,
        status=PlanStatus.ACTIVE,
    )
    installments = [
        Installment(
            plan=plan,
            number=line.number,
            due_date=line.due_date,
            original_due_date=line.due_date,
            principal=line.principal,
            interest=line.interest,
            fee=line.fee,
        )
        for line in schedule.lines
    ]
    return servicing._Locked(plan, installments)


class _Debit:
    status = DebitRequestStatus.SCHEDULED
    attempts_made = 0


def _accrual(balance: int, apr: Decimal, days: int) -> int:
    """Declining-balance interest written out: balance × APR × days / 365, half-even."""
    value = Decimal(balance) / 100 * apr / 100 * Decimal(abs(days)) / 365
    return to_minor(value, EUR) * (1 if days > 0 else -1)


def _pay_in_memory(row: Installment, state: str) -> None:
    """Paid in part (its fee, half its interest, a third of its principal) or in full."""
    if state == "part":
        row.paid_fee, row.paid_interest = row.fee, row.interest // 2
        row.paid_principal = row.principal // 3
    elif state == "paid":
        row.paid_fee, row.paid_interest, row.paid_principal = row.fee, row.interest, row.principal
        row.status = InstallmentStatus.PAID


@settings(max_examples=150, deadline=None)
@given(
    method=st.sampled_from(pricing.INTEREST_METHODS),
    count=st.integers(min_value=2, max_value=24),
    frequency=st.sampled_from(pricing.FREQUENCIES),
    amount=st.integers(min_value=1_000, max_value=5_000_000),
    fee=st.integers(min_value=0, max_value=2_000),
    pick=st.integers(min_value=0, max_value=1_000),
    shift=st.integers(min_value=-14, max_value=14).filter(bool),
    paid=st.lists(st.sampled_from(["open", "open", "part", "paid"]), min_size=24, max_size=24),
)
def test_property_reschedule_keeps_totals_consistent(
    method, count, frequency, amount, fee, pick, shift, paid
):
    apr = Decimal(0) if method == "zero" else Decimal("19.99")
    terms = pricing.Terms(
        currency=EUR,
        installment_count=count,
        frequency=frequency,
        interest_method=method,
        apr=apr,
        reschedule_max_days=14,
        reschedule_max_count=3,
        reschedule_fee=fee,
    )
    start = date(2026, 1, 31)
    locked = _in_memory_plan(terms, amount, start)
    for row, state in zip(locked.installments, paid, strict=False):
        _pay_in_memory(row, state)
    before = [(i.number, i.due_date, i.principal, i.interest, i.fee) for i in locked.installments]
    by_number = {i.number: i for i in locked.installments}
    number = 1 + pick % count
    moved = by_number[number]
    target = _installment_date(locked, number)
    new_date = date.fromordinal(target.toordinal() + shift)
    neighbours = [b[1] for b in before if b[0] in (number - 1, number + 1)]
    legal = (
        moved.status == InstallmentStatus.SCHEDULED
        and new_date > start
        and all((new_date > d) if d < target else (new_date < d) for d in neighbours)
    )
    # What is still owed from the moved installment on, and after it (computed here, from
    # the rows, not by the code under test).
    owed = {
        i.number: i.principal - i.paid_principal
        for i in locked.installments
        if i.status == InstallmentStatus.SCHEDULED
    }
    following = min((n for n in owed if n > number), default=None)
    paid_interest = {i.number: i.paid_interest for i in locked.installments}
    if not legal:
        with pytest.raises(RescheduleRefused):
            servicing._propose_reschedule(
                locked, number=number, new_date=new_date, debit=_Debit(), today=start
            )
        return
    result = servicing._propose_reschedule(
        locked, number=number, new_date=new_date, debit=_Debit(), today=start
    )
    after = [(i.number, i.due_date, i.principal, i.interest, i.fee) for i in result.installments]
    # Principal never moves; the schedule total is the sum of its parts.
    assert sum(a[2] for a in after) == amount
    total = sum(i.total for i in result.installments)
    assert total == sum(a[2] + a[3] + a[4] for a in after)
    assert total == sum(b[3] + b[4] + b[2] for b in before) + fee + result.interest_change.minor
    for i in result.installments:
        assert i.paid + i.outstanding == i.total
        assert min(i.principal, i.interest, i.fee, i.outstanding) >= 0
    dates = [a[1] for a in after]
    assert dates == sorted(set(dates))  # strictly increasing
    # Declining interest: the unpaid principal from the moved installment on accrues for the
    # days moved (the moved one's interest); what is left after it accrues as many days
    # less (the next open installment's), neither below what is already paid.
    days = (new_date - target).days
    declining = method == "declining"
    up = _accrual(sum(p for n, p in owed.items() if n >= number), apr, days) if declining else 0
    down = (
        _accrual(sum(p for n, p in owed.items() if n > number), apr, days)
        if declining and following
        else 0
    )
    expected_change = 0
    for b, a in zip(before, after, strict=True):
        if a[0] == number:
            interest = max(paid_interest[number], b[3] + up)
            assert a == (number, new_date, b[2], interest, b[4] + fee)
        elif a[0] == following:
            interest = max(paid_interest[following], b[3] - down)
            assert a == (b[0], b[1], b[2], interest, b[4])
        else:
            assert a == b
            continue
        expected_change += interest - b[3]
    assert result.interest_change.minor == expected_change


def _installment_date(locked, number: int) -> date:
    return next(i.due_date for i in locked.installments if i.number == number)


# --- extra payment toward one installment ------------------------------------------------


@pytest.mark.usefixtures("customer_cards")
def test_extra_payment_from_the_wallet_reduces_that_installment_only(customer, jan_10):
    plan = plan_300(customer, installment_fee=100)  # 100.00 + 1.00 fee each
    assert wallet_balance(customer) == 50_000

    result = servicing.installment_pay(
        plan_id=plan.pk, number=2, amount=eur("40.00"), source="wallet", customer_id=customer.pk
    )

    assert result.status == "paid"
    second = Installment.objects.get(plan=plan, number=2)
    # The fee first (1.00), then principal (39.00).
    assert (second.paid_fee, second.paid_principal, second.outstanding) == (100, 3_900, 6_100)
    assert second.status == InstallmentStatus.SCHEDULED
    assert [(n, p, f) for n, _, p, _, f, _ in rows(plan)] == [
        (1, 10_000, 100),
        (2, 10_000, 100),
        (3, 10_000, 100),
    ]
    assert Installment.objects.get(plan=plan, number=1).paid == 0
    assert Installment.objects.get(plan=plan, number=3).paid == 0
    assert wallet_balance(customer) == 46_000
    assert receivable(plan) == 30_000 - 3_900
    assert balance(system(Purpose.FEE_INCOME, EUR)) == 100
    activity = WalletTransaction.objects.filter(reference_type="bnpl.installment").get()
    assert (activity.amount, activity.balance_after) == (4_000, 46_000)

    servicing.installment_pay(plan_id=plan.pk, number=2, amount=eur("61.00"), source="wallet")

    second.refresh_from_db()
    assert (second.status, second.outstanding) == (InstallmentStatus.PAID, 0)
    assert second.debit_request.status == DebitRequestStatus.SETTLED
    assert receivable(plan) == 20_000


@pytest.mark.usefixtures("customer_cards")
def test_paying_more_than_the_installment_owes_is_refused(customer, jan_10, unchanged_db):
    plan = plan_300(customer)
    check = unchanged_db()

    error = refused(
        "bnpl.overpayment",
        servicing.installment_pay,
        plan_id=plan.pk,
        number=1,
        amount=eur("100.01"),
        source="wallet",
    )

    check()
    assert error.status_code == 400
    assert error.fields == {"amount": ["At most 100.00."]}


def test_extra_payment_needs_the_wallet_to_cover_it(jan_10, unchanged_db, web_channel):
    poor = make_customer()
    fund(poor, "10.00")
    plan = plan_300(poor)
    check = unchanged_db()
    refused(
        "wallet.insufficient_balance",
        servicing.installment_pay,
        plan_id=plan.pk,
        number=1,
        amount=eur("10.01"),
        source="wallet",
    )
    check()


@pytest.mark.usefixtures("customer_cards")
def test_another_customers_plan_is_not_found(customer, jan_10, unchanged_db, web_channel):
    plan = plan_300(customer)
    intruder = make_customer()
    check = unchanged_db()
    for fn, kwargs in (
        (servicing.installment_pay, {"number": 1, "amount": eur("1.00"), "source": "wallet"}),
        (servicing.plan_reschedule, {"number": 1, "new_date": date(2026, 2, 12)}),
        (servicing.plan_reschedule_preview, {"number": 1, "new_date": date(2026, 2, 12)}),
        (servicing.plan_pay_off, {"source": "wallet"}),
        (servicing.plan_payoff_preview, {}),
        (servicing.plan_cancel, {}),
    ):
        refused("bnpl.plan_not_found", fn, plan_id=plan.pk, customer_id=intruder.pk, **kwargs)
    check()


@pytest.mark.usefixtures("customer_cards")
def test_extra_payment_by_card_is_booked_by_the_settlement_handler(
    customer, jan_10, card_processor
):
    plan = plan_300(customer)

    result = servicing.installment_pay(
        plan_id=plan.pk, number=1, amount=eur("25.00"), source="card", customer_id=customer.pk
    )

    assert (result.status, result.source) == ("paid", "card")
    first = Installment.objects.get(plan=plan, number=1)
    assert (first.paid_principal, first.outstanding) == (2_500, 7_500)
    assert balance(system(Purpose.GATEWAY_CLEARING, EUR)) == 2_500
    assert receivable(plan) == 27_500
    assert wallet_balance(customer) == 50_000


@pytest.mark.usefixtures("customer_cards")
def test_a_declined_card_pays_nothing(customer, jan_10, card_processor):
    plan = plan_300(customer, payment_method="pm_decline")

    refused(
        "bnpl.payment_declined",
        servicing.installment_pay,
        plan_id=plan.pk,
        number=1,
        amount=eur("25.00"),
        source="card",
    )

    assert Installment.objects.get(plan=plan, number=1).paid == 0
    assert receivable(plan) == 30_000


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    payments=st.lists(
        st.tuples(st.integers(min_value=1, max_value=3), st.integers(min_value=1, max_value=150)),
        min_size=1,
        max_size=4,
    )
)
def test_property_extra_payments_keep_totals_consistent(web_channel, payments):
    customer = make_customer()
    fund(customer, "2000.00")
    with clock.travel_to(JAN_10):
        plan = plan_1200_declining(customer, installment_fee=150)
        before = {i.number: i for i in plan.installments.all()}
        paid_in = {1: 0, 2: 0, 3: 0}
        for number, percent in payments:
            row = Installment.objects.get(plan=plan, number=number)
            amount = min(row.outstanding, max(1, row.total * percent // 100))
            if row.outstanding == 0:
                continue
            servicing.installment_pay(
                plan_id=plan.pk, number=number, amount=Money(amount, EUR), source="wallet"
            )
            paid_in[number] += amount
    after = {i.number: i for i in plan.installments.all()}
    for number, row in after.items():
        old = before[number]
        # Amounts owed never change; only what is paid does, and only where money went.
        assert (row.principal, row.interest, row.fee, row.due_date) == (
            old.principal,
            old.interest,
            old.fee,
            old.due_date,
        )
        assert row.paid == paid_in[number]
        assert row.paid + row.outstanding == row.total
        assert (row.status == InstallmentStatus.PAID) == (row.outstanding == 0)
    assert receivable(plan) == sum(r.principal - r.paid_principal for r in after.values())
    assert wallet_balance(customer) == 200_000 - sum(paid_in.values())


# --- early payoff ----------------------------------------------------------------------------


@pytest.mark.usefixtures("customer_cards")
def test_payoff_of_a_declining_plan_removes_unearned_interest(customer, jan_10):
    plan = plan_1200_declining(customer)
    fund(customer, "1000.00")
    servicing.installment_pay(plan_id=plan.pk, number=1, amount=eur("408.03"), source="wallet")

    with travel(date(2026, 2, 25)):
        quote = servicing.plan_payoff_preview(plan_id=plan.pk)
        result = servicing.plan_pay_off(
            plan_id=plan.pk, source="wallet", expected_total=quote.total, customer_id=customer.pk
        )

    # Installment 2's period runs 10 Feb → 10 Mar (28 days); 15 have passed:
    # 8.04 × 15/28 = 4.31 is earned, 3.73 is not; installment 3's 4.04 is not earned at all.
    assert quote.as_of == date(2026, 2, 25)
    assert quote.principal == eur("803.97")
    assert quote.interest == eur("4.31")
    assert quote.interest_waived == eur("7.77")
    assert quote.total == eur("808.28")
    assert result.quote == quote
    plan = Plan.objects.get(pk=plan.pk)
    assert plan.status == PlanStatus.COMPLETED
    assert [(n, i, s) for n, _, _, i, _, s in rows(plan)] == [
        (1, 1_200, "paid"),
        (2, 431, "paid"),
        (3, 0, "paid"),
    ]
    assert receivable(plan) == 0
    assert balance(system(Purpose.INTEREST_INCOME, EUR)) == 1_200 + 431
    assert wallet_balance(customer) == 150_000 - 40_803 - 80_828
    assert not plan.debit_requests.filter(status=DebitRequestStatus.SCHEDULED).exists()


@pytest.mark.usefixtures("customer_cards")
def test_payoff_by_card_is_settled_with_the_capture(customer, jan_10, card_processor):
    plan = plan_1200_declining(customer)
    fund(customer, "1000.00")
    servicing.installment_pay(plan_id=plan.pk, number=1, amount=eur("408.03"), source="wallet")

    with travel(date(2026, 2, 25)):
        result = servicing.plan_pay_off(
            plan_id=plan.pk, source="card", expected_total=eur("808.28"), customer_id=customer.pk
        )

    assert (result.status, result.quote.total) == ("paid", eur("808.28"))
    plan = Plan.objects.get(pk=plan.pk)
    assert plan.status == PlanStatus.COMPLETED
    assert [(n, i, s) for n, _, _, i, _, s in rows(plan)] == [
        (1, 1_200, "paid"),
        (2, 431, "paid"),
        (3, 0, "paid"),
    ]
    assert balance(system(Purpose.GATEWAY_CLEARING, EUR)) == 80_828
    assert balance(system(Purpose.INTEREST_INCOME, EUR)) == 1_200 + 431
    assert receivable(plan) == 0
    assert AuditEntry.objects.filter(action="bnpl.plan_paid_off").count() == 1


@pytest.mark.usefixtures("customer_cards")
def test_a_declined_payoff_card_changes_nothing_on_the_plan(customer, jan_10, card_processor):
    plan = plan_300(customer, payment_method="pm_decline")
    refused("bnpl.payment_declined", servicing.plan_pay_off, plan_id=plan.pk, source="card")
    assert Plan.objects.get(pk=plan.pk).status == PlanStatus.ACTIVE
    assert receivable(plan) == 30_000


@pytest.mark.usefixtures("customer_cards")
def test_payoff_capture_short_of_the_quote_pays_installments_in_order(
    customer, jan_10, card_processor
):
    from django.db import transaction

    plan = plan_300(customer)
    paid_off = plan_300(customer)
    result = servicing.plan_pay_off(plan_id=paid_off.pk, source="card")
    payment = PaymentTransaction.objects.get(pk=result.payment_transaction_id)
    clearing = system(Purpose.GATEWAY_CLEARING, EUR)

    short = PaymentTransaction.objects.create(
        account=card_processor,
        reference_type=servicing.PAYOFF_REFERENCE,
        reference_id=str(plan.pk),
        currency=EUR,
        amount=15_000,
        created_at=clock.now(),
    )
    # The processor reports a capture of 150.00 for the open plan (the quote was 300.00),
    # and another 20.00 for the plan already paid off.
    with after_commit_tasks(), transaction.atomic():
        servicing.plan_payoff_settle(
            payment=short,
            kind="capture",
            amount=eur("150.00"),
            clearing=clearing,
        )
        servicing.plan_payoff_settle(
            payment=payment, kind="capture", amount=eur("20.00"), clearing=clearing
        )

    assert [i.paid for i in Installment.objects.filter(plan=plan).order_by("number")] == [
        10_000,
        5_000,
        0,
    ]
    assert Plan.objects.get(pk=plan.pk).status == PlanStatus.ACTIVE
    assert receivable(plan) == 30_000 + 30_000 - 30_000 - 15_000  # both plans' account
    assert AuditEntry.objects.filter(action="bnpl.overpayment").count() == 1
    # The 20.00 beyond the payoff went back to the wallet.
    assert AuditEntry.objects.filter(action="bnpl.overpayment_returned").count() == 1
    assert Wallet.objects.get(customer=customer).balance == eur("520.00")


@pytest.mark.usefixtures("customer_cards")
def test_payoff_of_a_zero_interest_plan_is_what_is_owed(customer, jan_10):
    plan = plan_300(customer, installment_fee=100)

    result = servicing.plan_pay_off(plan_id=plan.pk, source="wallet")

    assert result.quote.total == eur("303.00")
    assert result.quote.interest_waived == eur("0.00")
    plan = Plan.objects.get(pk=plan.pk)
    assert plan.status == PlanStatus.COMPLETED
    assert receivable(plan) == 0
    assert balance(system(Purpose.FEE_INCOME, EUR)) == 300


@pytest.mark.usefixtures("customer_cards")
def test_payoff_with_an_outdated_quote_is_refused(customer, jan_10, unchanged_db):
    plan = plan_1200_declining(customer)
    fund(customer, "1000.00")
    quote = servicing.plan_payoff_preview(plan_id=plan.pk)
    assert quote.total == eur("1200.00")  # nothing earned on the start date
    check = unchanged_db()
    with travel(date(2026, 1, 20)):
        refused(
            "bnpl.payoff_quote_changed",
            servicing.plan_pay_off,
            plan_id=plan.pk,
            source="wallet",
            expected_total=quote.total,
        )
    check()


@pytest.mark.usefixtures("customer_cards")
def test_payoff_by_staff_as_money_received(customer, jan_10, admin_user):
    plan = plan_300(customer)

    servicing.plan_pay_off(plan_id=plan.pk, source="manual", actor=admin_user, note="transfer")

    plan = Plan.objects.get(pk=plan.pk)
    assert plan.status == PlanStatus.COMPLETED
    assert balance(system(Purpose.CASH_CLEARING, EUR)) == 30_000 + 50_000  # + the test top-up
    assert AuditEntry.objects.get(action="bnpl.plan_paid_off").actor == admin_user


# --- refunds -----------------------------------------------------------------------------------


@pytest.mark.usefixtures("customer_cards")
def test_partial_refund_reduces_the_last_installments_first(customer, jan_10):
    plan = plan_300(customer)
    servicing.installment_pay(plan_id=plan.pk, number=1, amount=eur("100.00"), source="wallet")
    merchant = system(Purpose.MERCHANT, EUR)
    assert balance(merchant) == 30_000

    refund = servicing.plan_refund(plan_id=plan.pk, amount=eur("150.00"))

    assert (refund.reduced, refund.returned) == (eur("150.00"), eur("0.00"))
    assert refund.reductions == {3: 10_000, 2: 5_000}
    assert [(n, p, s) for n, _, p, _, _, s in rows(plan)] == [
        (1, 10_000, "paid"),
        (2, 5_000, "scheduled"),
        (3, 0, "cancelled"),
    ]
    assert plan.debit_requests.get(installment__number=3).status == DebitRequestStatus.CANCELLED
    assert receivable(plan) == 5_000
    assert balance(merchant) == 15_000
    plan = Plan.objects.get(pk=plan.pk)
    assert (plan.status, plan.refunded_amount) == (PlanStatus.ACTIVE, 15_000)

    # The rest of the order: 50.00 still owed is cancelled, 100.00 paid goes back.
    refund = servicing.plan_refund(plan_id=plan.pk, amount=eur("150.00"))

    assert (refund.reduced, refund.returned) == (eur("50.00"), eur("100.00"))
    plan = Plan.objects.get(pk=plan.pk)
    assert (plan.status, plan.refunded_amount) == (PlanStatus.CANCELLED, 30_000)
    assert receivable(plan) == 0
    assert balance(merchant) == 0
    assert wallet_balance(customer) == 50_000


@pytest.mark.usefixtures("customer_cards")
def test_refund_respread_over_the_open_installments(customer, jan_10):
    plan = plan_300(customer, refund_allocation="respread")

    refund = servicing.plan_refund(plan_id=plan.pk, amount=eur("100.00"))

    # 100.00 over three equal balances: 33.34, 33.33, 33.33 (larger parts first).
    assert refund.reductions == {1: 3_334, 2: 3_333, 3: 3_333}
    assert [p for _, _, p, _, _, _ in rows(plan)] == [6_666, 6_667, 6_667]
    assert receivable(plan) == 20_000


@pytest.mark.usefixtures("customer_cards")
def test_refund_scales_the_unpaid_interest(customer, jan_10):
    plan = plan_1200_declining(customer)

    servicing.plan_refund(plan_id=plan.pk, amount=eur("603.98"))

    # Last first: installment 3 (403.98) goes whole, with its 4.04 interest; installment 2
    # keeps 199.99 of 399.99 principal and the matching share of 8.04: 4.02.
    assert [(n, p, i, s) for n, _, p, i, _, s in rows(plan)] == [
        (1, 39_603, 1_200, "scheduled"),
        (2, 19_999, 402, "scheduled"),
        (3, 0, 0, "cancelled"),
    ]
    assert receivable(plan) == 39_603 + 19_999


@settings(max_examples=200, deadline=None)
@given(
    unpaid=st.lists(st.integers(min_value=0, max_value=100_000), min_size=1, max_size=24),
    amount=st.integers(min_value=1, max_value=3_000_000),
    allocation=st.sampled_from(pricing.REFUND_ALLOCATIONS),
)
def test_property_refund_reductions_fit_what_is_unpaid(unpaid, amount, allocation):
    installments = [
        Installment(number=n, principal=p + 500, paid_principal=500)
        for n, p in enumerate(unpaid, start=1)
    ]
    reductions = servicing._refund_reductions(installments, amount, allocation)
    assert sum(reductions.values()) == min(amount, sum(unpaid))
    for number, cut in reductions.items():
        assert 0 < cut <= unpaid[number - 1]
    if allocation == pricing.REFUND_LAST_FIRST and reductions:
        # Every installment after the earliest one reduced is reduced in full.
        lowest = min(reductions)
        for number in range(lowest + 1, len(unpaid) + 1):
            assert reductions.get(number, 0) == unpaid[number - 1]


@pytest.mark.usefixtures("customer_cards")
def test_refund_above_the_order_is_refused(customer, jan_10, unchanged_db):
    plan = plan_300(customer)
    servicing.plan_refund(plan_id=plan.pk, amount=eur("100.00"))
    check = unchanged_db()
    error = refused(
        "bnpl.refund_exceeds_order",
        servicing.plan_refund,
        plan_id=plan.pk,
        amount=eur("200.01"),
    )
    check()
    assert error.status_code == 400


# --- cancel before the first debit ----------------------------------------------------------


@pytest.mark.usefixtures("customer_cards")
def test_cancel_returns_the_down_payment_and_reverses_the_receivable(
    customer, jan_10, card_processor
):
    from bnpl.services import installment_checkout_charge

    plan = make_plan(
        customer=customer,
        amount="1000.00",
        start_date=date(2026, 1, 10),
        down_payment="percent",
        down_payment_percent=Decimal(25),
        origination_fee_flat=500,
    )
    installment_checkout_charge(installment_id=plan.installments.get(number=0).pk)
    assert receivable(plan) == 75_000

    servicing.plan_cancel(plan_id=plan.pk, customer_id=customer.pk, reason="changed my mind")

    plan = Plan.objects.get(pk=plan.pk)
    assert plan.status == PlanStatus.CANCELLED
    assert {s for *_, s in rows(plan)} == {"cancelled"}
    assert set(plan.debit_requests.values_list("status", flat=True)) == {"cancelled"}
    assert receivable(plan) == 0
    assert balance(system(Purpose.MERCHANT, EUR)) == 0
    # The 250.00 charged on the card at checkout is returned to the wallet.
    assert wallet_balance(customer) == 50_000 + 25_000
    assert AuditEntry.objects.filter(action="bnpl.plan_cancelled").count() == 1


@pytest.mark.usefixtures("customer_cards")
def test_cancel_after_a_payment_or_an_attempt_is_refused(customer, jan_10, unchanged_db):
    paid = plan_300(customer)
    servicing.installment_pay(plan_id=paid.pk, number=3, amount=eur("1.00"), source="wallet")
    attempted = plan_300(customer)
    attempted.debit_requests.filter(installment__number=1).update(attempts_made=1)
    check = unchanged_db()
    for plan in (paid, attempted):
        refused("bnpl.cancel_refused", servicing.plan_cancel, plan_id=plan.pk)
    check()


# --- income-aligned dates ------------------------------------------------------------------


def test_income_days_are_inferred_from_recurring_top_ups(web_channel):
    customer = make_customer()
    for day in (date(2026, 8, 25), date(2026, 9, 25), date(2026, 10, 24), date(2026, 11, 25)):
        with travel(day):
            fund(customer, "1500.00")
    with travel(date(2026, 11, 3)):
        fund(customer, "20.00")  # a one-off

    with travel(date(2026, 12, 1)):
        inference = selectors.income_inference(customer=customer, currency=EUR)
        schedule = pricing.price_schedule(
            terms=pricing.Terms(currency=EUR, installment_count=3),
            amount=eur("300.00"),
            start_date=date(2026, 12, 1),
        )
        dates = selectors.suggested_due_dates(customer=customer, schedule=schedule)

    assert [(d.day, d.months) for d in inference.days] == [(25, 4)]
    assert inference.months_observed == 4
    assert inference.confidence == Decimal("1.00")
    assert inference.credits_considered == 5
    assert "2026-10-24 1500.00 EUR" in inference.explanation
    # Priced 1 Jan, 1 Feb, 1 Mar; aligned to the day after payday.
    assert dates == [date(2026, 12, 26), date(2027, 1, 26), date(2027, 2, 26)]


def test_no_income_day_without_recurring_top_ups():
    credits = [
        selectors.IncomeCredit(date(2026, 9, 3), eur("10.00"), "top_up"),
        selectors.IncomeCredit(date(2026, 10, 17), eur("10.00"), "top_up"),
        selectors.IncomeCredit(date(2026, 11, 28), eur("10.00"), "top_up"),
    ]
    inference = selectors.infer_income_days(
        credits, since=date(2026, 6, 1), until=date(2026, 12, 1)
    )
    assert not inference.found
    assert inference.confidence == Decimal(0)
    assert "no income day" in inference.explanation


def test_aligned_dates_only_for_monthly_and_opted_in_customers(web_channel):
    customer = make_customer()
    for day in (date(2026, 8, 15), date(2026, 9, 15), date(2026, 10, 15)):
        with travel(day):
            fund(customer, "100.00")
    product = make_product(cash_flow_aware=True)
    with travel(date(2026, 11, 1)):
        schedule = pricing.price_schedule(
            terms=product.terms(), amount=eur("300.00"), start_date=date(2026, 11, 1)
        )
        assert (
            selectors.income_aligned_due_dates(
                customer=customer, product=product, schedule=schedule
            )
            is None
        )
        servicing.borrower_income_aligned_set(customer=customer, enabled=True)
        assert selectors.income_aligned_due_dates(
            customer=customer, product=product, schedule=schedule
        ) == [date(2026, 12, 16), date(2027, 1, 16), date(2027, 2, 16)]  # a tie goes later
        weekly = pricing.price_schedule(
            terms=pricing.Terms(currency=EUR, installment_count=3, frequency="weekly"),
            amount=eur("300.00"),
            start_date=date(2026, 11, 1),
        )
        assert selectors.suggested_due_dates(customer=customer, schedule=weekly) is None


def test_income_aligned_dates_are_what_plan_create_takes(web_channel):
    from django.db import transaction

    from bnpl.models import Decider
    from bnpl.services import plan_create
    from tests.bnpl.factories import make_application

    customer = make_customer()
    for day in (date(2026, 8, 15), date(2026, 9, 15), date(2026, 10, 15)):
        with travel(day):
            fund(customer, "100.00")
    servicing.borrower_income_aligned_set(customer=customer, enabled=True)
    saved_card(customer)
    product = make_product(cash_flow_aware=True, down_payment="first_installment")
    with travel(date(2026, 11, 1)):
        application = make_application(customer=customer, product=product, amount="300.00")
        schedule = pricing.price_schedule(
            terms=pricing.Terms.from_json(application.terms),
            amount=application.amount_money,
            start_date=date(2026, 11, 1),
        )
        due_dates = selectors.income_aligned_due_dates(
            customer=customer, product=product, schedule=schedule
        )
        with transaction.atomic():
            application.approve(at=clock.now(), decided_by=Decider.INTERNAL)
            application.save(update_fields=["status", "decided_at", "decided_by"])
            plan = plan_create(
                application=application, start_date=date(2026, 11, 1), due_dates=due_dates
            )

    # Line 1 is charged at checkout (1 Nov); lines 2 and 3, priced 1 Dec and 1 Jan, move to
    # the day after the income day (the 15th): 16 Dec and 16 Jan.
    assert due_dates == [date(2026, 12, 16), date(2027, 1, 16)]
    assert [d for _, d, *_ in rows(plan)] == [
        date(2026, 11, 1),
        date(2026, 12, 16),
        date(2027, 1, 16),
    ]
    assert plan.debit_requests.get(installment__number=2).next_attempt_at == datetime(
        2026, 12, 16, tzinfo=clock.business_tz()
    )


def test_income_aligned_dates_are_repriced_by_the_reschedule_rule(web_channel):
    from django.db import transaction

    from bnpl.models import Decider
    from bnpl.services import plan_create
    from tests.bnpl.factories import make_application

    customer = make_customer()
    for day in (date(2026, 10, 15), date(2026, 11, 15), date(2026, 12, 15)):
        with travel(day):
            fund(customer, "100.00")
    servicing.borrower_income_aligned_set(customer=customer, enabled=True)
    saved_card(customer)
    product = make_product(cash_flow_aware=True, interest_method="declining", apr=Decimal("36.5"))
    start = date(2027, 1, 31)
    with travel(start):
        application = make_application(customer=customer, product=product, amount="300.00")
        schedule = pricing.price_schedule(
            terms=pricing.Terms.from_json(application.terms),
            amount=application.amount_money,
            start_date=start,
        )
        due_dates = selectors.income_aligned_due_dates(
            customer=customer, product=product, schedule=schedule
        )
        with transaction.atomic():
            application.approve(at=clock.now(), decided_by=Decider.INTERNAL)
            application.save(update_fields=["status", "decided_at", "decided_by"])
            plan = plan_create(application=application, start_date=start, due_dates=due_dates)

    # Priced at 36.5 % a year, monthly (r = 0.365/12): 28 Feb, 31 Mar, 30 Apr with
    # principal 97.02, 99.97, 103.01 and interest 9.12, 6.17, 3.13. At 36.5 % actual/365 a
    # day accrues 0.1 % of the balance. The dates move to the day after payday (the 15th):
    # 16 Feb (−12 days), 16 Mar (−15), 16 Apr (−14), each re-priced in turn:
    #   line 1: 300.00 owed, −12 days: 9.12 − 3.60 = 5.52;
    #           line 2 gets back 202.98 × 0.012 = 2.43576 → +2.44.
    #   line 2: 202.98 owed, −15 days: 6.17 + 2.44 − 3.0447 → 3.04 = 5.57;
    #           line 3 gets back 103.01 × 0.015 = 1.54515 → +1.55.
    #   line 3: 103.01 owed, −14 days: 3.13 + 1.55 − 1.44214 → 1.44 = 3.24.
    assert [line.interest for line in schedule.lines] == [912, 617, 313]
    assert rows(plan) == [
        (1, date(2027, 2, 16), 9702, 552, 0, InstallmentStatus.SCHEDULED),
        (2, date(2027, 3, 16), 9997, 557, 0, InstallmentStatus.SCHEDULED),
        (3, date(2027, 4, 16), 10301, 324, 0, InstallmentStatus.SCHEDULED),
    ]


def test_a_plan_on_income_aligned_dates_is_quoted_and_stored_at_its_repriced_cost(web_channel):
    """Moved later (priced on the 5th, due the 16th) each line costs more: the quote, the
    plan's APR and its audited total are those of the lines it charges, on their dates."""
    from django.db import transaction

    from bnpl.models import Decider
    from bnpl.quoting import quote_product
    from bnpl.services import plan_create
    from core.models import AuditEntry
    from tests.bnpl.factories import make_application

    customer = make_customer()
    saved_card(customer, "pm_card_visa")
    for day in (date(2026, 10, 15), date(2026, 11, 15), date(2026, 12, 15)):
        with travel(day):
            fund(customer, "100.00")
    servicing.borrower_income_aligned_set(customer=customer, enabled=True)
    product = make_product(cash_flow_aware=True, interest_method="declining", apr=Decimal("36.5"))
    start = date(2027, 1, 5)
    with travel(start):
        quote = quote_product(
            customer=customer, product=product, amount=eur("300.00"), merchant_categories=[]
        )
        application = make_application(customer=customer, product=product, amount="300.00")
        unmoved = pricing.price_schedule(
            terms=pricing.Terms.from_json(application.terms),
            amount=application.amount_money,
            start_date=start,
        )
        due_dates = selectors.income_aligned_due_dates(
            customer=customer, product=product, schedule=unmoved
        )
        with transaction.atomic():
            application.approve(at=clock.now(), decided_by=Decider.INTERNAL)
            application.save(update_fields=["status", "decided_at", "decided_by"])
            plan = plan_create(application=application, start_date=start, due_dates=due_dates)

    charged = [(r.due_date, r.principal + r.interest + r.fee) for r in plan.installments.all()]
    assert [d for d, _ in charged] == [date(2027, 2, 16), date(2027, 3, 16), date(2027, 4, 16)]
    total = sum(t for _, t in charged)
    assert total > unmoved.total  # 11 days later each: more interest
    assert [(line.due_date, line.total) for line in quote.schedule.lines] == charged
    assert (quote.schedule.total, quote.schedule.apr) == (total, plan.apr)
    created = AuditEntry.objects.get(action="bnpl.plan_created", target_id=str(plan.pk))
    assert created.changes["total"] == str(Money(total, "EUR"))

    # The stored APR is the rate at which the charged lines, on their dates, are worth the
    # amount: a line is due its priced months (1/12 of a year each) plus the days it moved
    # (1/365 each); the present value at APR ∓ 0.01 % brackets 300.00.
    def present_value(percent: Decimal) -> Decimal:
        rate = 1 + percent / 100
        return sum(
            Decimal(t) / rate ** (Decimal(month) / 12 + Decimal((d - priced.due_date).days) / 365)
            for month, priced, (d, t) in zip((1, 2, 3), unmoved.lines, charged, strict=True)
        )

    assert plan.apr is not None
    assert plan.apr != unmoved.apr
    assert (
        present_value(plan.apr - Decimal("0.01"))
        > 30_000
        > present_value(plan.apr + Decimal("0.01"))
    )
