"""A stateful search over the money paths of two customers (issue 12, "Show").

Hypothesis drives checkout (wallet with wallet BNPL for a short balance, wallet + card,
installments), top-ups, repayments, installment payments, fulfilment, returns,
cancellations, write-offs, recoveries and the passing of days, in any order, through the
services (the card and the lending decision over the payment sandbox). After every step
the book and the objects it books must hold together: ``ledger_problems() == []`` (every
entry balances, every account purpose keeps its sign rule, the apps' registered
invariants), and, spelled out here, recovered ≤ written off, refunded ≤ paid, no wallet
below zero, and no spendable balance beside an open debt (every credit repays debts first).

Each run starts from the same small world and is rolled back to it at the end (a savepoint
inside the test's transaction).
"""

from __future__ import annotations

from collections import Counter
from contextlib import ExitStack
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import transaction
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from bnpl.models import Plan, PlanStatus
from bnpl.servicing import WALLET, installment_pay
from bnpl.writeoff import plan_recovery_record, plan_write_off
from core import clock
from core.errors import ApplicationError
from core.money import Money
from ledger.models import Account, Purpose
from ledger.selectors import ledger_problems
from oms.models import Order, OrderStatus, PaymentMethod
from oms.services import (
    LineInput,
    RefundLine,
    order_cancel,
    order_checkout,
    order_checkout_installments,
    order_checkout_split,
    order_fulfil,
    order_refund,
)
from tests.bnpl.factories import make_product
from tests.factories import approve_kyc, enable_wallet_bnpl, make_customer, saved_card
from wallet.bnpl import bnpl_settings, debt_amounts
from wallet.models import DebtStatus, InterestType, TransactionKind, WalletDebt
from wallet.services import customer_auto_deduct_set, debt_repay, debt_write_off, wallet_credit

pytestmark = pytest.mark.django_db

PRODUCT = "pay-in-3"
# The services every search must have gone through at least once (a refused token or a
# missing setup would otherwise silently shrink what is searched).
EVERY_PATH = {
    "order_checkout",
    "order_checkout_split",
    "order_checkout_installments",
    "order_fulfil",
    "order_cancel",
    "order_refund",
    "debt_repay",
    "debt_write_off",
    "installment_pay",
    "plan_write_off",
    "plan_recovery_record",
}
CUSTOMERS = 2
SKUS = ("A", "B")

prices = st.integers(min_value=1_000, max_value=15_000)  # minor units: 10.00 to 150.00
amounts = st.integers(min_value=1, max_value=20_000)
picks = st.integers(min_value=0, max_value=1_000)
# Orders, debts and plans are picked among the latest few, counted from the newest, so a
# run follows one purchase through several steps (checkout, fulfil, write-off, returns).
recent = st.integers(min_value=0, max_value=2)


def eur(minor: int) -> Money:
    return Money(minor, "EUR")


class MoneyMachine(RuleBasedStateMachine):
    world: dict = {}
    # How often each service went through, over all runs: the search must reach every path.
    succeeded: Counter[str] = Counter()

    def __init__(self) -> None:
        super().__init__()
        self.savepoint = transaction.savepoint()
        self.clock = ExitStack()
        self.days = 0
        self.orders: list[int] = []
        self.steps = 0
        self.changed = True
        # Customers who opted out of auto-deduct at some point in this run: their balance may
        # stand beside an open debt (switching back on repays nothing by itself).
        self.opted_out: set[int] = set()

    def teardown(self) -> None:
        self.clock.close()
        transaction.savepoint_rollback(self.savepoint)

    # --- helpers ---------------------------------------------------------------------

    def customer(self, index: int):
        return self.world["customers"][index % CUSTOMERS]

    def card(self, index: int) -> str:
        """The customer's own saved card (a token belongs to one customer)."""
        return f"pm_card_{index % CUSTOMERS}"

    def lines(self, sku_index: int, quantity: int, price: int) -> list[LineInput]:
        sku = SKUS[sku_index % len(SKUS)]
        return [LineInput(sku=sku, name=sku, quantity=quantity, unit_price=eur(price), tax=eur(0))]

    def order(self, pick: int, *statuses: str) -> Order | None:
        """One of the latest orders in one of ``statuses``, ``None`` if there is none."""
        ids = list(
            Order.objects.filter(pk__in=self.orders, status__in=statuses)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        return Order.objects.get(pk=ids[-1 - pick % len(ids)]) if ids else None

    def attempt(self, action, *args, **kwargs):
        """Run one service call; a refusal (an ``ApplicationError``) is a valid outcome."""
        try:
            result = action(*args, **kwargs)
        except ApplicationError:
            return None
        self.changed = True
        MoneyMachine.succeeded[action.__name__] += 1
        return result

    # --- money in ---------------------------------------------------------------------

    @rule(who=picks, amount=amounts)
    def top_up(self, who: int, amount: int) -> None:
        self.steps += 1
        self.changed = True
        wallet_credit(
            customer_id=self.customer(who).pk,
            amount=eur(amount),
            kind=TransactionKind.TOP_UP,
            idempotency_key=f"sm-{self.steps}",
        )

    # --- checkout ---------------------------------------------------------------------

    @rule(
        who=picks,
        method=st.sampled_from(["wallet", "wallet_card", "installments"]),
        sku=picks,
        quantity=st.integers(1, 4),
        price=prices,
        ship_now=st.booleans(),
    )
    def checkout(
        self, who: int, method: str, sku: int, quantity: int, price: int, ship_now: bool
    ) -> None:
        """Place an order (wallet, with wallet BNPL for a short balance; wallet + card;
        installments) and, when ``ship_now``, fulfil it at once."""
        common = {
            "customer": self.customer(who),
            "channel": self.world["channel"],
            "lines": self.lines(sku, quantity, price),
        }
        if method == "wallet":
            order = self.attempt(order_checkout, payment_method=PaymentMethod.WALLET, **common)
        elif method == "wallet_card":
            order = self.attempt(order_checkout_split, card_payment_method=self.card(who), **common)
        else:
            order = self.attempt(
                order_checkout_installments,
                plan_product=PRODUCT,
                card_payment_method=self.card(who),
                **common,
            )
        if order is None:
            return
        self.orders.append(order.pk)
        if ship_now:
            self.attempt(order_fulfil, order_id=order.pk)

    # --- after the checkout ----------------------------------------------------------

    @rule(pick=recent)
    def fulfil(self, pick: int) -> None:
        order = self.order(pick, OrderStatus.CONFIRMED)
        if order is not None:
            self.attempt(order_fulfil, order_id=order.pk)

    @rule(pick=recent)
    def cancel(self, pick: int) -> None:
        order = self.order(pick, OrderStatus.NEW, OrderStatus.ON_HOLD, OrderStatus.CONFIRMED)
        if order is not None:
            self.attempt(order_cancel, order_id=order.pk, reason="state machine")

    @rule(pick=recent, units=st.integers(1, 4))
    def return_units(self, pick: int, units: int) -> None:
        """Return some of the units not yet returned of a fulfilled order."""
        order = self.order(pick, OrderStatus.FULFILLED)
        if order is None:
            return
        line = order.lines.get()
        left = line.quantity - line.refunded_quantity
        if left:
            self.attempt(
                order_refund,
                order_id=order.pk,
                lines=[RefundLine(line.line_no, min(units, left))],
                reason="returned",
            )

    # --- wallet BNPL debts ------------------------------------------------------------

    def debt(self, pick: int, *, open_only: bool = True) -> WalletDebt | None:
        debts = WalletDebt.objects.order_by("pk")
        if open_only:
            debts = debts.exclude(status=DebtStatus.REPAID)
        ids = list(debts.values_list("pk", flat=True))
        return (
            WalletDebt.objects.select_related("wallet").get(pk=ids[-1 - pick % len(ids)])
            if ids
            else None
        )

    @rule(who=picks, enabled=st.booleans())
    def switch_auto_deduct(self, who: int, enabled: bool) -> None:
        """An opted-out customer's credits stay spendable, so debts are repaid by hand."""
        customer = self.customer(who)
        if not enabled:
            self.opted_out.add(customer.pk)
        self.attempt(customer_auto_deduct_set, customer=customer, enabled=enabled)

    @rule(pick=recent, share=st.integers(min_value=1, max_value=100), over=st.booleans())
    def repay_debt(self, pick: int, share: int, over: bool) -> None:
        """Repay a share of what the wallet can cover of the debt (or, ``over``, one unit
        more than it owes, which is refused)."""
        debt = self.debt(pick)
        if debt is None:
            return
        owed = debt_amounts(debt, bnpl_settings(), clock.business_date())["total"]
        balance = Account.objects.get(code=f"wallet:{debt.wallet.customer_id}:EUR").balance
        amount = owed + 1 if over else max(1, min(owed, balance) * share // 100)
        self.attempt(
            debt_repay, customer_id=debt.wallet.customer_id, debt_id=debt.pk, amount=eur(amount)
        )

    # --- installment plans ------------------------------------------------------------

    def plan(self, pick: int, *statuses: str) -> Plan | None:
        ids = list(
            Plan.objects.filter(status__in=statuses).order_by("pk").values_list("pk", flat=True)
        )
        return Plan.objects.get(pk=ids[-1 - pick % len(ids)]) if ids else None

    @rule(pick=recent, number=st.integers(1, 3), amount=amounts)
    def pay_installment(self, pick: int, number: int, amount: int) -> None:
        plan = self.plan(pick, PlanStatus.ACTIVE)
        if plan is not None:
            self.attempt(
                installment_pay,
                plan_id=plan.pk,
                number=number,
                amount=eur(amount),
                source=WALLET,
                customer_id=plan.customer_id,
            )

    @rule(pick=recent, plan=st.booleans())
    def write_off(self, pick: int, plan: bool) -> None:
        """Staff write off an open wallet BNPL debt, or what is left of an active plan."""
        if plan:
            row = self.plan(pick, PlanStatus.ACTIVE)
            if row is not None:
                self.attempt(plan_write_off, plan_id=row.pk, actor=self.world["admin"])
            return
        debt = self.debt(pick)
        if debt is not None:
            self.attempt(debt_write_off, debt_id=debt.pk, actor=self.world["admin"])

    @rule(pick=recent, amount=amounts)
    def recover_plan(self, pick: int, amount: int) -> None:
        plan = self.plan(pick, PlanStatus.WRITTEN_OFF)
        if plan is not None:
            self.steps += 1
            self.attempt(
                plan_recovery_record,
                plan_id=plan.pk,
                amount=eur(amount),
                key=f"sm-recovery-{self.steps}",
                actor=self.world["admin"],
            )

    # --- time ------------------------------------------------------------------------

    @precondition(lambda self: self.days < 120)
    @rule(days=st.integers(1, 40))
    def days_pass(self, days: int) -> None:
        self.days += days
        self.clock.enter_context(clock.travel(timedelta(days=days)))

    # --- what must hold after every step -----------------------------------------------

    @invariant()
    def money_holds_together(self) -> None:
        """Checked after every step that changed something (a refused one changed nothing:
        its service wrote nothing, in one transaction)."""
        if not self.changed:
            return
        self.changed = False
        # Every entry balances, every purpose keeps its sign rule (no wallet below zero),
        # debts and plans recover at most what was written off, orders, plans and payments
        # refund at most what was paid (ledger.invariants, registered by each app).
        assert ledger_problems() == []
        # Every credit repays open debts first: no spendable balance beside an open debt.
        in_debt = (
            WalletDebt.objects.exclude(status=DebtStatus.REPAID)
            .exclude(wallet__customer_id__in=self.opted_out)
            .values("wallet__account")
        )
        assert not Account.objects.filter(
            purpose=Purpose.CUSTOMER_WALLET, pk__in=in_debt, balance__gt=0
        ).exists()


@pytest.fixture
def world(web_channel, stock, card_processor, admin_user):
    """Two KYC-approved customers with wallet BNPL (3 % a month late), a pay-in-3 product,
    stock of two SKUs, the card processor at the sandbox."""
    enable_wallet_bnpl(
        max_debt_per_user=50_000,
        interest_type=InterestType.PERCENT,
        interest_amount=Decimal(3),
        grace_days=0,
        repayment_days=14,
    )
    make_product(code=PRODUCT, min_amount=1_000, max_amount=100_000)
    for sku in SKUS:
        stock(sku, 100_000)
    customers = [approve_kyc(make_customer()) for _ in range(CUSTOMERS)]
    for index, customer in enumerate(customers):
        saved_card(customer, f"pm_card_{index}")
    return {"channel": web_channel, "admin": admin_user, "customers": customers}


def test_money_holds_together_whatever_the_order_of_events(world):
    MoneyMachine.world = world
    MoneyMachine.succeeded.clear()
    run_state_machine_as_test(
        MoneyMachine,
        settings=settings(
            max_examples=200,
            stateful_step_count=30,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
    reached = {name for name, count in MoneyMachine.succeeded.items() if count}
    assert reached >= EVERY_PATH, f"never went through: {sorted(EVERY_PATH - reached)}"
