"""A stateful search over the money paths of two customers (issue 12, "Show").

Hypothesis drives checkout (wallet with wallet BNPL for a short balance, wallet + card,
installments), top-ups, repayments, installment payments, fulfilment, returns,
cancellations, write-offs, recoveries and the passing of days, in any order, through the
services (the card and the lending decision over the payment sandbox). After every step
the book and the objects it books must hold together: ``ledger_problems() == []`` (every
entry balances, every account purpose keeps its sign rule, the apps' registered
invariants), and, spelled out here, recovered ≤ written off, refunded ≤ paid, no wallet
below zero, no spendable balance beside an open debt (every credit repays debts first), and
a money law per customer computed from wallet lines, orders and debts, not the book (see
``money_is_conserved``). Composite rules drive the rare paths directly (a repayment by hand,
a return that recovers a write-off and leaves money over, a split cancel beside a debt, an
installment paid from the wallet, a plan recovery), so the reach check is not left to luck.

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
from wallet.models import (
    DebtStatus,
    Direction,
    InterestType,
    TransactionKind,
    WalletDebt,
    WalletTransaction,
)
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
    # Outcomes, not services: a return after a write-off that recovers the whole of what
    # is left and gives the rest to the customer; a wallet + card cancel whose refund
    # repays a wallet BNPL debt.
    "capped_recovery",
    "split_cancel_repays_debt",
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
    refused: Counter[str] = Counter()

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
        except ApplicationError as exc:
            MoneyMachine.refused[f"{action.__name__}: {exc.code}"] += 1
            return None
        self.changed = True
        MoneyMachine.succeeded[action.__name__] += 1
        return result

    # --- money in ---------------------------------------------------------------------

    @rule(who=picks, amount=amounts)
    def top_up(self, who: int, amount: int) -> None:
        self.credit(self.customer(who), amount)

    def credit(self, customer, amount: int) -> None:
        self.steps += 1
        self.changed = True
        wallet_credit(
            customer_id=customer.pk,
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

    def watched(self, order: Order, action, **kwargs) -> None:
        """Run a cancel or a return of ``order`` and count the outcomes the search must
        reach (a capped recovery; a split cancel whose refund repays a debt)."""
        debt = WalletDebt.objects.filter(reference_type="oms.order", reference_id=str(order.pk))
        before = debt.first()
        owed_before = self.owed(order.customer_id)
        refunded_before = order.refunded
        if self.attempt(action, order_id=order.pk, **kwargs) is None:
            return
        order = Order.objects.get(pk=order.pk)
        if before is not None and before.written_off:
            left = before.written_off - before.recovered
            refund = order.total - refunded_before
            if action is order_refund:
                refund = order.refunded - refunded_before
            if 0 < left < refund:
                MoneyMachine.succeeded["capped_recovery"] += 1
        if (
            action is order_cancel
            and order.payment_method != PaymentMethod.WALLET
            and order.credit_application_id is None
            and self.owed(order.customer_id) < owed_before
        ):
            MoneyMachine.succeeded["split_cancel_repays_debt"] += 1

    def balance(self, customer) -> int:
        account = Account.objects.filter(code=f"wallet:{customer.pk}:EUR").first()
        return account.balance if account else 0

    def owed(self, customer_id: int) -> int:
        return sum(
            d.principal_outstanding + d.interest_unpaid_charged
            for d in WalletDebt.objects.filter(wallet__customer_id=customer_id).exclude(
                status=DebtStatus.REPAID
            )
        )

    @rule(pick=recent)
    def cancel(self, pick: int) -> None:
        order = self.order(pick, OrderStatus.NEW, OrderStatus.ON_HOLD, OrderStatus.CONFIRMED)
        if order is not None:
            self.watched(order, order_cancel, reason="state machine")

    @rule(pick=recent, units=st.integers(1, 4))
    def return_units(self, pick: int, units: int) -> None:
        """Return some of the units not yet returned of a fulfilled order."""
        order = self.order(pick, OrderStatus.FULFILLED)
        if order is None:
            return
        line = order.lines.get()
        left = line.quantity - line.refunded_quantity
        if left:
            self.watched(
                order,
                order_refund,
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

    @rule(pick=recent, share=st.integers(min_value=1, max_value=100))
    def repay_by_hand(self, pick: int, share: int) -> None:
        """The customer opts out of auto-deduct, tops up a share of what a debt owes and
        repays that much by hand (the only way a repayment finds money beside a debt)."""
        debt = self.debt(pick)
        if debt is None:
            return
        customer = debt.wallet.customer
        self.opted_out.add(customer.pk)
        customer_auto_deduct_set(customer=customer, enabled=False)
        owed = debt_amounts(debt, bnpl_settings(), clock.business_date())["total"]
        amount = max(1, owed * share // 100)
        self.credit(customer, amount)
        self.attempt(debt_repay, customer_id=customer.pk, debt_id=debt.pk, amount=eur(amount))

    def borrow(self, customer, price: int) -> Order | None:
        """A wallet checkout of one unit at ``price`` more than the balance (so it borrows),
        auto-deduct on."""
        customer_auto_deduct_set(customer=customer, enabled=True)
        balance = self.balance(customer)
        order = self.attempt(
            order_checkout,
            payment_method=PaymentMethod.WALLET,
            customer=customer,
            channel=self.world["channel"],
            lines=self.lines(0, 1, balance + price),
        )
        if order is not None:
            self.orders.append(order.pk)
        return order

    @rule(who=picks, price=prices, share=st.integers(min_value=1, max_value=99))
    def return_after_write_off(self, who: int, price: int, share: int) -> None:
        """Borrow, repay a share by hand, have the rest written off, then return the lot:
        the refund recovers the write-off and the customer gets what they repaid."""
        customer = self.customer(who)
        order = self.borrow(customer, price)
        if order is None:
            return
        self.attempt(order_fulfil, order_id=order.pk)
        debt = WalletDebt.objects.select_related("wallet").get(
            reference_type="oms.order", reference_id=str(order.pk)
        )
        self.opted_out.add(customer.pk)
        customer_auto_deduct_set(customer=customer, enabled=False)
        repaid = max(1, debt.principal * share // 100)
        self.credit(customer, repaid)
        self.attempt(debt_repay, customer_id=customer.pk, debt_id=debt.pk, amount=eur(repaid))
        self.attempt(debt_write_off, debt_id=debt.pk, actor=self.world["admin"])
        order = Order.objects.get(pk=order.pk)
        if order.status == OrderStatus.FULFILLED:
            line = order.lines.get()
            self.watched(
                order, order_refund, lines=[RefundLine(line.line_no, line.quantity)], reason="all"
            )

    @rule(who=picks, wallet_part=prices, price=prices)
    def cancel_split_beside_a_debt(self, who: int, wallet_part: int, price: int) -> None:
        """Pay a wallet + card order from a fresh balance, borrow for a second one, then
        cancel the first: its wallet part comes back and repays the new debt."""
        customer = self.customer(who)
        customer_auto_deduct_set(customer=customer, enabled=True)
        self.credit(customer, wallet_part)
        balance = self.balance(customer)
        if not balance:
            return
        split = self.attempt(
            order_checkout_split,
            customer=customer,
            channel=self.world["channel"],
            lines=self.lines(1, 1, balance + price),
            card_payment_method=self.card(who),
        )
        if split is None:
            return
        self.orders.append(split.pk)
        if self.borrow(customer, price) is not None:
            self.watched(split, order_cancel, reason="state machine")

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

    def buy_on_installments(self, who: int) -> Plan | None:
        order = self.attempt(
            order_checkout_installments,
            plan_product=PRODUCT,
            card_payment_method=self.card(who),
            customer=self.customer(who),
            channel=self.world["channel"],
            lines=self.lines(who, 1, 5_000),
        )
        if order is None:
            return None
        self.orders.append(order.pk)
        return self.plan(0, PlanStatus.ACTIVE)

    @rule(pick=recent, share=st.integers(min_value=1, max_value=100))
    def pay_installment_by_hand(self, pick: int, share: int) -> None:
        """The customer opts out of auto-deduct, tops up a share of the next open
        installment and pays that much of it from the wallet (buying on installments first
        when no plan is active)."""
        plan = self.plan(pick, PlanStatus.ACTIVE) or self.buy_on_installments(pick)
        if plan is None:
            return
        due = [i for i in plan.installments.order_by("number") if i.outstanding > 0]
        if not due:
            return
        customer = plan.customer
        self.opted_out.add(customer.pk)
        customer_auto_deduct_set(customer=customer, enabled=False)
        amount = max(1, due[0].outstanding * share // 100)
        self.credit(customer, amount)
        self.attempt(
            installment_pay,
            plan_id=plan.pk,
            number=due[0].number,
            amount=eur(amount),
            source=WALLET,
            customer_id=customer.pk,
        )

    @rule(pick=recent, share=st.integers(min_value=1, max_value=100))
    def write_off_and_recover_plan(self, pick: int, share: int) -> None:
        """Staff write off an active plan and collections recover a share of it at once."""
        plan = self.plan(pick, PlanStatus.ACTIVE) or self.buy_on_installments(pick)
        if plan is None:
            return
        plan = self.attempt(plan_write_off, plan_id=plan.pk, actor=self.world["admin"])
        if plan is not None:
            plan = Plan.objects.get(pk=plan.pk)
            self.steps += 1
            self.attempt(
                plan_recovery_record,
                plan_id=plan.pk,
                amount=eur(max(1, plan.written_off_amount * share // 100)),
                key=f"sm-recovery-{self.steps}",
                actor=self.world["admin"],
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

        self.money_is_conserved()

    def money_is_conserved(self) -> None:
        """Per customer, from the wallet's own lines and the orders and debts (not the
        book): what left the wallet for wallet-paid orders and their debts equals what the
        customer keeps of those orders, plus interest charged, minus what is still owed and
        what was forgiven and not recovered; and no debt forgives more than its order keeps.
        """
        wallet_orders = {
            pk: (0 if status == OrderStatus.CANCELLED else total - refunded)
            for pk, status, total, refunded in Order.objects.filter(
                pk__in=self.orders, payment_method=PaymentMethod.WALLET
            ).values_list("pk", "status", "total", "refunded")
        }
        for customer in self.world["customers"]:
            lines = WalletTransaction.objects.filter(wallet__customer=customer)
            spent = 0
            for kind, direction, amount, ref_type, ref_id in lines.values_list(
                "kind", "direction", "amount", "reference_type", "reference_id"
            ):
                if kind == TransactionKind.BNPL_REPAYMENT or (
                    ref_type == "oms.order" and int(ref_id) in wallet_orders
                ):
                    spent += amount if direction == Direction.DEBIT else -amount
            kept = sum(
                wallet_orders[pk]
                for pk in Order.objects.filter(customer=customer, pk__in=wallet_orders).values_list(
                    "pk", flat=True
                )
            )
            charged = forgiven = owed = 0
            for debt in WalletDebt.objects.filter(wallet__customer=customer):
                charged += debt.interest_charged
                forgiven += debt.written_off - debt.recovered
                if debt.status != DebtStatus.REPAID:
                    owed += debt.principal_outstanding + debt.interest_unpaid_charged
                if debt.reference_type == "oms.order":
                    assert (
                        debt.written_off - debt.recovered <= wallet_orders[int(debt.reference_id)]
                    ), f"debt #{debt.pk} forgives more than its order keeps"
            assert spent == kept + charged - owed - forgiven, (
                f"customer {customer.pk}: spent {spent}, kept {kept}, interest {charged}, "
                f"owed {owed}, forgiven {forgiven}"
            )


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
    MoneyMachine.refused.clear()
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
    assert reached >= EVERY_PATH, (
        f"never went through: {sorted(EVERY_PATH - reached)}; refused: {dict(MoneyMachine.refused)}"
    )
