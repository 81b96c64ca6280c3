"""Wallet BNPL after the purchase: returns, write-offs and cancellations (issue 12).

Every credit repays open debts first; a return after a write-off recovers the write-off
once, never more than was written off; interest follows what is still owed.
"""

from __future__ import annotations

import importlib
from datetime import timedelta
from decimal import Decimal

import pytest
from django.apps import apps as django_apps

from core import clock
from core.models import AuditEntry
from core.money import Money
from ledger.models import Account, Purpose
from ledger.selectors import ledger_problems
from ledger.services import credit, debit, ledger_post, system
from oms.models import Order, OrderStatus
from oms.services import (
    LineInput,
    RefundLine,
    order_cancel,
    order_checkout,
    order_checkout_split,
    order_fulfil,
    order_refund,
)
from tests.factories import ChannelFactory, fund, saved_card
from tests.wallet.conftest import receivable_matches_debts
from wallet.bnpl import bnpl_settings, debt_amounts
from wallet.models import DebtStatus, InterestType, Wallet, WalletDebt
from wallet.services import debt_write_off, debts_return_over_recoveries

pytestmark = pytest.mark.django_db


def balance(customer) -> int:
    return Wallet.objects.get(customer=customer, currency="EUR").account.balance


def expense() -> int:
    return Account.objects.get(code="write_off_expense:EUR").balance


def buy(customer, quantity: int, unit_price: str) -> Order:
    return order_checkout(
        customer=customer,
        channel=ChannelFactory(code="web"),
        lines=[
            LineInput(
                sku="ITEM",
                name="Item",
                quantity=quantity,
                unit_price=Money.parse(unit_price, "EUR"),
                tax=Money.zero("EUR"),
            )
        ],
    )


def debt_of(order: Order) -> WalletDebt:
    return WalletDebt.objects.get(reference_type="oms.order", reference_id=str(order.pk))


def test_returns_after_a_write_off_recover_only_what_was_written_off(bnpl, approved, admin_user):
    fund(approved, "30.00")
    order = buy(approved, 2, "50.00")  # 30.00 from the balance, 70.00 borrowed
    order_fulfil(order_id=order.pk)
    debt_write_off(debt_id=debt_of(order).pk, actor=admin_user, note="uncollectable")
    assert expense() == 7000

    order_refund(order_id=order.pk, lines=[RefundLine(1, 1)], reason="one back")
    assert (expense(), balance(approved)) == (2000, 0)  # 50.00 of the 70.00 recovered
    order_refund(order_id=order.pk, lines=[RefundLine(1, 1)], reason="the other back")

    assert expense() == 0  # recovered once, never below zero
    assert balance(approved) == 3000  # what the customer paid comes back
    row = debt_of(order)
    assert (row.written_off, row.recovered) == (7000, 7000)
    receivable_matches_debts(approved)


def test_cancelling_a_confirmed_split_order_repays_an_open_debt_first(
    bnpl, approved, card_processor
):
    saved_card(approved, "pm_card")
    fund(approved, "30.00")
    split = order_checkout_split(
        customer=approved,
        channel=ChannelFactory(code="web"),
        lines=[
            LineInput(
                sku="ITEM",
                name="Item",
                quantity=1,
                unit_price=Money.parse("100.00", "EUR"),
                tax=Money.zero("EUR"),
            )
        ],
        card_payment_method="pm_card",
    )
    assert split.status == OrderStatus.CONFIRMED
    assert balance(approved) == 0
    later = buy(approved, 1, "50.00")  # all of it borrowed
    assert debt_of(later).principal == 5000

    order_cancel(order_id=split.pk, reason="changed their mind")

    row = debt_of(later)
    assert (row.principal_repaid, row.status) == (3000, DebtStatus.OUTSTANDING)
    assert balance(approved) == 0  # no spendable balance beside an open debt
    receivable_matches_debts(approved)


def test_percent_interest_runs_on_what_is_still_owed_after_returns(bnpl, approved):
    conf = bnpl_settings()
    conf.interest_type = InterestType.PERCENT
    conf.interest_amount = Decimal(3)
    conf.save()
    order = buy(approved, 4, "100.00")  # 400.00 borrowed
    order_fulfil(order_id=order.pk)
    order_refund(order_id=order.pk, lines=[RefundLine(1, 3)], reason="three back")
    row = debt_of(order)
    assert row.principal - row.principal_repaid == 10_000

    thirty_days_late = row.due_date + timedelta(days=conf.grace_days + 30)
    assert debt_amounts(row, conf, thirty_days_late)["interest"] == 300  # 3 % of 100.00


def test_a_return_after_a_repayment_still_charges_interest_on_the_repaid_principal(bnpl, approved):
    """Only what the merchant refunded leaves the interest base; what the customer repaid
    late was still owed while it was late (the formula of the settings)."""
    conf = bnpl_settings()
    conf.interest_type = InterestType.PERCENT
    conf.interest_amount = Decimal(3)
    conf.save()
    order = buy(approved, 4, "100.00")
    order_fulfil(order_id=order.pk)
    fund(approved, "100.00")  # repays 100.00 of the principal
    row = debt_of(order)
    assert row.principal_repaid == 10_000

    thirty_days_late = row.due_date + timedelta(days=conf.grace_days + 30)
    assert debt_amounts(row, conf, thirty_days_late)["interest"] == 1200
    assert clock.business_date() < thirty_days_late


@pytest.fixture
def late_purchase(bnpl, approved):
    """3 % a month late interest; 4 × 100.00 borrowed and shipped; the day 30 days late."""
    conf = bnpl_settings()
    conf.interest_type = InterestType.PERCENT
    conf.interest_amount = Decimal(3)
    conf.save()
    order = buy(approved, 4, "100.00")
    order_fulfil(order_id=order.pk)
    return conf, order, debt_of(order).due_date + timedelta(days=conf.grace_days + 30)


@pytest.mark.parametrize("top_up_first", [False, True])
def test_a_late_return_books_the_interest_earned_and_then_accrues_on_what_is_kept(
    approved, late_purchase, top_up_first
):
    """400.00 borrowed, 30 days late at 3 % (12.00 accrued), then 300.00 returned: the
    12.00 stays owed whether or not a top-up booked it first, and the next 30 days accrue
    3 % of the 100.00 kept only (issue 12 review: interest was path dependent)."""
    conf, order, late = late_purchase
    with clock.travel(timedelta(days=(late - clock.business_date()).days)):
        assert debt_amounts(debt_of(order), conf, late)["interest"] == 1200
        if top_up_first:
            fund(approved, "0.01")
        order_refund(order_id=order.pk, lines=[RefundLine(1, 3)], reason="three back")
        row = debt_of(order)
        paid = 1 if top_up_first else 0
        assert debt_amounts(row, conf, late)["total"] + paid == 10_000 + 1200
        assert row.interest_base == 10_000
        later = debt_amounts(row, conf, late + timedelta(days=30))
        assert later["total"] + paid == 10_000 + 1200 + 300
    receivable_matches_debts(approved)


def test_a_legacy_over_recovery_is_returned_to_the_customer_once(bnpl, approved, admin_user):
    """Before issue 12 each return after a write-off recovered up to the whole write-off:
    two 50.00 returns on a 70.00 write-off recovered 100.00 and the customer, who had paid
    30.00, got nothing. The migrations cap ``recovered`` and hand the 30.00 back."""
    fund(approved, "30.00")
    order = buy(approved, 2, "50.00")
    order_fulfil(order_id=order.pk)
    debt = debt_write_off(debt_id=debt_of(order).pk, actor=admin_user)
    for _ in range(2):  # what the old code booked for each 50.00 return
        ledger_post(
            kind="wallet.debt_write_off_recovery",
            legs=[
                debit(system(Purpose.MERCHANT, "EUR"), Money(5000, "EUR")),
                credit(system(Purpose.WRITE_OFF_EXPENSE, "EUR"), Money(5000, "EUR")),
            ],
            reference_type="wallet.debt",
            reference_id=str(debt.pk),
        )
    WalletDebt.objects.filter(pk=debt.pk).update(recovered=0)
    backfill = importlib.import_module(
        "wallet.migrations.0004_walletdebt_recovered_principal_refunded"
    ).backfill
    repair = importlib.import_module("wallet.migrations.0006_return_over_recoveries").repair
    backfill(django_apps, None)
    repair(django_apps, None)
    assert debt_of(order).recovered == 7000
    assert balance(approved) == 3000
    assert expense() == 0  # 70.00 written off, 70.00 recovered
    assert ledger_problems() == []
    assert AuditEntry.objects.filter(action="wallet.debt_over_recovery").count() == 1

    repair(django_apps, None)  # idempotent
    assert debts_return_over_recoveries() == 0
    assert balance(approved) == 3000


def test_the_backfill_counts_only_the_principal_a_refund_settled(approved, late_purchase):
    """A late return first pays the interest charged: of 300.00 returned, 12.00 paid
    interest and 288.00 principal. The backfill replays the entries, not ``min(refund,
    repaid)`` (which said 300.00 once the rest was repaid)."""
    _conf, order, late = late_purchase
    with clock.travel(timedelta(days=(late - clock.business_date()).days)):
        order_refund(order_id=order.pk, lines=[RefundLine(1, 3)], reason="three back")
        fund(approved, "112.00")
    row = debt_of(order)
    assert (row.principal_repaid, row.principal_refunded) == (40_000, 28_800)
    assert row.refund_paid_interest == 1200
    WalletDebt.objects.filter(pk=row.pk).update(principal_refunded=0, refund_paid_interest=0)
    for migration in (
        "0004_walletdebt_recovered_principal_refunded",
        "0005_walletdebt_interest_base_since",
    ):
        importlib.import_module(f"wallet.migrations.{migration}").backfill(django_apps, None)
    row = debt_of(order)
    assert (row.principal_refunded, row.refund_paid_interest) == (28_800, 1200)


def test_a_debt_returned_before_this_release_keeps_accruing_on_what_is_kept(late_purchase):
    """Migration 0005 gives a debt a return touched before the base rule existed the base
    change it would have had: the interest charged up to the return, then the kept
    principal from that day (not the smaller base from the due date, which would charge
    nothing more until it caught up)."""
    conf, order, late = late_purchase
    with clock.travel(timedelta(days=(late - clock.business_date()).days)):
        order_refund(order_id=order.pk, lines=[RefundLine(1, 3)], reason="three back")
    # The row as it stood before 0005: no base change recorded.
    WalletDebt.objects.filter(pk=debt_of(order).pk).update(
        interest_before_base=0, interest_base_since=None, refund_paid_interest=0
    )
    importlib.import_module("wallet.migrations.0005_walletdebt_interest_base_since").backfill(
        django_apps, None
    )
    row = debt_of(order)
    assert (row.interest_base_since, row.interest_before_base) == (late, 1200)
    # 12.00 charged (and paid by the return) by then; 3 % of the kept 100.00 a month after.
    assert debt_amounts(row, conf, late + timedelta(days=30))["interest"] == 300
