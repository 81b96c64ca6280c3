"""The life of an installment plan's money: creation, payment of installments, completion.

- ``plan_create`` turns an approved credit application into a plan: installments priced by
  ``bnpl.pricing.price_schedule`` from the application's terms snapshot, one debit request
  per installment that collections will charge, and the funding entry in the ledger.
- ``installment_apply_payment`` is the one place a payment toward an installment is split
  (late fee → fee → interest → principal) and booked. Card money arrives through the
  settlement handler ``installment_settle`` that payments calls inside the transaction that
  records the capture; wallet and manual money through servicing.

Ledger (ARCHITECTURE.md, one balanced entry per movement, in the cause's transaction): the
customer's receivable ``installments:<customer>:<currency>`` (apart
from the wallet debts' ``bnpl:`` account) holds the outstanding principal.
Interest and fees are income when they are paid (cash basis), so an early payoff never has
to reverse unearned interest. Money received beyond what a plan owes (a capture that lands
after a refund shrank or cancelled the plan, or beyond a write-off's recovery) is credited
to the receivable and, after commit, returned to the customer's wallet by the task
``bnpl.plan_credit_return`` (``plan_credit_return``, also swept periodically), whose credit
repays wallet debts first.

Lock order: customer → wallet → order → plan → installment → debit request → payment
transaction → ledger accounts. The settlement handler is the one path entered with a payment
transaction already locked; no service holds a plan lock while taking a payment
transaction's, because provider calls run outside transactions. It never locks a customer or
a wallet: those come before the payment transaction it holds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any

from django.db import transaction
from django.db.models import OuterRef, Subquery, Sum

from bnpl import pricing, signals
from bnpl.models import (
    CreditApplication,
    DebitRequest,
    DebitRequestStatus,
    Decider,
    Installment,
    InstallmentStatus,
    Plan,
    PlanStatus,
)
from bnpl.selectors import receivable_credit, receivable_refunds_to_take_back
from core import clock
from core.audit import audit_record
from core.db import update_rows
from core.money import Money
from customers.models import Customer
from ledger.models import Account, JournalEntry, Posting, Purpose
from ledger.services import (
    AccountLike,
    EntryDraft,
    Leg,
    account_get_or_create,
    accounts_lock,
    credit,
    debit,
    ledger_post,
    ledger_post_many,
    system,
)
from payments.errors import PaymentMethodUnknown
from payments.events import Settlement
from payments.gateway import Decision, GatewayResult
from payments.models import EventKind, PaymentTransaction, Provider
from payments.processing import ProviderNotSupported, payment_authorize
from payments.selectors import enabled_account, payment_method_owned
from wallet.services import (
    wallet_get_or_create,
    wallet_lock,
    wallet_refund,
    wallet_refund_reverse,
)

INSTALLMENT_REFERENCE = "bnpl.installment"
OPEN_INSTALLMENT = (InstallmentStatus.SCHEDULED, InstallmentStatus.OVERDUE)


def plan_receivable(*, customer_id: int, currency: str) -> Account:
    """The customer's installment receivable: the principal still owed on every plan."""
    return account_get_or_create(
        code=f"installments:{customer_id}:{currency}",
        purpose=Purpose.CUSTOMER_BNPL_RECEIVABLE,
        currency=currency,
        customer=Customer(pk=customer_id),
    )


def due_moment(day: date) -> datetime:
    """The start of ``day`` in the business time zone: when a debit request falls due."""
    return datetime.combine(day, time.min, tzinfo=clock.business_tz())


def debit_request_key(plan: Plan, number: int) -> str:
    return f"bnpl:plan:{plan.pk}:installment:{number}"


# --- creation -------------------------------------------------------------------------


def plan_create(
    *,
    application: CreditApplication,
    start_date: date,
    due_dates: list[date] | None = None,
    funded_by: str = Decider.INTERNAL,
    partner_reference: str = "",
    actor: Any = None,
) -> Plan:
    """Turn an approved application into a plan, in the caller's transaction.

    The caller has locked the application (and the order it finances). ``due_dates``
    replaces the priced due dates of the numbered installments (income-aligned dates the
    customer opted into, quoted the same way: ``pricing.schedule_on_due_dates``), strictly
    increasing; each move is re-priced by the reschedule rule, and the APR with it. The
    card must be one of the customer's saved cards. The down-payment line (if the terms
    have one) is charged at checkout by ``installment_checkout_charge`` and gets no debit
    request; every other installment that owes something gets one (a line owing nothing,
    possible on tiny amounts, is paid from the start).
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("plan_create runs inside the transaction that approves the order")
    # The customer's own saved card, locked (after the order) so its removal waits for the
    # plan, which then uses it: ``payments.payment_method_unknown`` otherwise.
    payment_method_owned(
        customer_id=application.customer_id,
        token=application.payment_method,
        field="payment_method",
        lock=True,
    )
    terms = pricing.Terms.from_json(application.terms)
    schedule = pricing.price_schedule(
        terms=terms, amount=application.amount_money, start_date=start_date
    )
    if due_dates is not None:
        schedule = pricing.schedule_on_due_dates(schedule, due_dates)
    lines, checkout_line = schedule.lines, schedule.down_payment_line
    now = clock.now()
    plan = Plan.objects.create(
        application=application,
        customer_id=application.customer_id,
        product_id=application.product_id,
        promotion_id=application.promotion_id,
        reference_type=application.reference_type,
        reference_id=application.reference_id,
        currency=application.currency,
        amount=application.amount,
        down_payment=checkout_line.principal if checkout_line else 0,
        terms=application.terms,
        apr=schedule.apr,
        apr_status=schedule.apr_status,
        payment_method=application.payment_method,
        funded_by=funded_by,
        partner_reference=partner_reference,
        start_date=start_date,
        created_at=now,
    )
    installments = Installment.objects.bulk_create(
        Installment(
            plan=plan,
            number=line.number,
            due_date=line.due_date,
            original_due_date=line.due_date,
            principal=line.principal,
            interest=line.interest,
            fee=line.fee,
            # A tiny amount over many installments can leave a line owing nothing.
            status=InstallmentStatus.SCHEDULED if line.total else InstallmentStatus.PAID,
            paid_at=None if line.total else now,
        )
        for line in lines
    )
    DebitRequest.objects.bulk_create(
        DebitRequest(
            installment=installment,
            plan=plan,
            payment_method=plan.payment_method,
            idempotency_key=debit_request_key(plan, installment.number),
            next_attempt_at=due_moment(installment.due_date),
            created_at=now,
        )
        for installment in installments
        if installment.status == InstallmentStatus.SCHEDULED
        and (checkout_line is None or installment.number != checkout_line.number)
    )
    _post_funding(plan, Money(schedule.principal, plan.currency))
    audit_record(
        actor=actor,
        action="bnpl.plan_created",
        target=plan,
        changes={
            "amount": str(plan.amount_money),
            "installments": len(installments),
            "total": str(Money(schedule.total, plan.currency)),
            "funded_by": funded_by,
        },
    )
    transaction.on_commit(lambda: signals.plan_approved.send(sender=Plan, plan=plan))
    return plan


def _post_funding(plan: Plan, principal: Money) -> None:
    """The customer now owes the principal; the merchant has sold the goods.

    A partner-funded plan shows the partner paying the merchant, and the customer's debt
    (serviced here) offsetting what the partner is owed on the clearing account.
    """
    receivable = plan_receivable(customer_id=plan.customer_id, currency=plan.currency)
    merchant = system(Purpose.MERCHANT, plan.currency)
    if plan.funded_by == Decider.PARTNER:
        clearing = system(Purpose.PROVIDER_CLEARING, plan.currency)
        ledger_post(
            kind="bnpl.partner_funded",
            legs=[debit(clearing, principal), credit(merchant, principal)],
            reference_type="bnpl.plan",
            reference_id=str(plan.pk),
            memo=f"partner {plan.partner_reference}",
        )
        merchant = clearing
    ledger_post(
        kind="bnpl.plan_funded",
        legs=[debit(receivable, principal), credit(merchant, principal)],
        reference_type="bnpl.plan",
        reference_id=str(plan.pk),
    )


# --- paying an installment ------------------------------------------------------------


@dataclass(frozen=True)
class Allocation:
    """How one payment was split over an installment's parts, in minor units."""

    late_fee: int
    fee: int
    interest: int
    principal: int
    excess: int  # beyond what the installment owed
    entry: JournalEntry | None = None  # the entry that booked it

    @property
    def applied(self) -> int:
        return self.late_fee + self.fee + self.interest + self.principal


def allocate_payment(installment: Installment, amount: int) -> Allocation:
    """Split ``amount`` over what is owed: late fee, then fee, then interest, then principal."""
    left = amount
    parts = []
    for owed, paid in (
        (installment.late_fee, installment.paid_late_fee),
        (installment.fee, installment.paid_fee),
        (installment.interest, installment.paid_interest),
        (installment.principal, installment.paid_principal),
    ):
        take = min(left, owed - paid)
        parts.append(take)
        left -= take
    late_fee, fee, interest, principal = parts
    return Allocation(
        late_fee=late_fee, fee=fee, interest=interest, principal=principal, excess=left
    )


def _payment_legs(
    source: AccountLike, receivable: AccountLike, amount: Money, split: Allocation
) -> list[Leg]:
    """The one entry a payment toward an installment makes: debit the source; credit the
    receivable (principal and any excess), interest income and fee income."""
    currency = amount.currency
    return [
        debit(source, amount),
        credit(receivable, Money(split.principal + split.excess, currency)),
        credit(system(Purpose.INTEREST_INCOME, currency), Money(split.interest, currency)),
        credit(system(Purpose.FEE_INCOME, currency), Money(split.fee + split.late_fee, currency)),
    ]


def _apply_split(installment: Any, split: Allocation) -> None:
    installment.paid_late_fee += split.late_fee
    installment.paid_fee += split.fee
    installment.paid_interest += split.interest
    installment.paid_principal += split.principal


def locked_plan_installment(installment_id: int) -> tuple[Plan, Installment]:
    plan_id = Installment.objects.values_list("plan_id", flat=True).get(pk=installment_id)
    plan = Plan.objects.select_for_update(no_key=True).get(pk=plan_id)
    installment = Installment.objects.select_for_update(no_key=True).get(pk=installment_id)
    return plan, installment


def installment_apply_payment(
    *,
    plan: Plan,
    installment: Installment,
    amount: Money,
    source: AccountLike,
    kind: str,
    reference_type: str,
    reference_id: str,
    memo: str = "",
    actor: Any = None,
) -> Allocation:
    """Book a payment toward a locked installment of a locked plan, from ``source``.

    One entry: debit ``source`` by what is owed; credit the receivable (principal), interest
    income and fee income (fee and late fee). An excess (only a provider can report one:
    servicing refuses to overpay), or money for a cancelled plan or installment, is a credit
    on the receivable (its own ``bnpl.overpayment`` entry, referenced like the payment) that
    goes back to the customer's wallet after commit (``plan_credit_return_enqueue``). On a
    written-off plan the money is a recovery instead.
    """
    if amount.currency != plan.currency or not amount.is_positive():
        raise ValueError(f"cannot apply {amount} to a {plan.currency} plan")
    if plan.status == PlanStatus.WRITTEN_OFF:
        return _recover(
            plan=plan,
            amount=amount,
            source=source,
            reference_type=reference_type,
            reference_id=reference_id,
            actor=actor,
        )
    if plan.status == PlanStatus.CANCELLED or installment.status == InstallmentStatus.CANCELLED:
        # A charge that lands after its plan or installment was cancelled (a down payment
        # still in flight): nothing is owed, so all of it goes back to the wallet.
        split = Allocation(late_fee=0, fee=0, interest=0, principal=0, excess=amount.minor)
    else:
        split = allocate_payment(installment, amount.minor)
    currency = plan.currency
    receivable = plan_receivable(customer_id=plan.customer_id, currency=currency)
    entry = None
    if split.applied:
        entry = ledger_post(
            kind=kind,
            legs=_payment_legs(
                source, receivable.pk, Money(split.applied, currency), _without_excess(split)
            ),
            reference_type=reference_type,
            reference_id=reference_id,
            memo=memo,
        )
    _apply_split(installment, split)
    fields = ["paid_late_fee", "paid_fee", "paid_interest", "paid_principal"]
    if installment.outstanding == 0 and installment.status in OPEN_INSTALLMENT:
        installment.status = InstallmentStatus.PAID
        installment.paid_at = clock.now()
        fields += ["status", "paid_at"]
        DebitRequest.objects.filter(installment=installment).exclude(
            status=DebitRequestStatus.SETTLED
        ).update(status=DebitRequestStatus.SETTLED, next_attempt_at=None)
        transaction.on_commit(
            lambda: signals.installment_paid.send(
                sender=Installment, installment=installment, amount=amount
            )
        )
    installment.save(update_fields=fields)
    if split.excess:
        entry = plan_overpayment_record(
            plan=plan,
            amount=Money(split.excess, currency),
            source=source,
            reference_type=reference_type,
            reference_id=reference_id,
            changes={"installment": installment.number},
            actor=actor,
        )
    plan_complete_if_done(plan=plan)
    return dataclasses.replace(split, entry=entry)


def _without_excess(split: Allocation) -> Allocation:
    return dataclasses.replace(split, excess=0)


def plan_complete_if_done(*, plan: Plan) -> bool:
    """Complete a locked active plan once no installment is left to pay."""
    if plan.status != PlanStatus.ACTIVE:
        return False
    if plan.installments.filter(status__in=OPEN_INSTALLMENT).exists():
        return False
    plan.complete(at=clock.now())
    plan.save(update_fields=["status", "completed_at"])
    transaction.on_commit(lambda: signals.plan_completed.send(sender=Plan, plan=plan))
    return True


OVERPAYMENT_KIND = "bnpl.overpayment"


def plan_overpayment_record(
    *,
    plan: Plan,
    amount: Money,
    source: AccountLike,
    reference_type: str,
    reference_id: str,
    changes: dict[str, Any] | None = None,
    actor: Any = None,
) -> JournalEntry:
    """Credit the receivable with money a locked plan received beyond what it owed, and
    have it returned to the wallet after commit (``plan_credit_return``): one entry,
    referenced like the payment, so a later refund of that payment can find it."""
    entry = ledger_post(
        kind=OVERPAYMENT_KIND,
        legs=[
            debit(source, amount),
            credit(plan_receivable(customer_id=plan.customer_id, currency=plan.currency), amount),
        ],
        reference_type=reference_type,
        reference_id=reference_id,
        memo=f"beyond what plan {plan.pk} owed",
    )
    audit_record(
        actor=actor,
        action="bnpl.overpayment",
        target=plan,
        changes={
            **(changes or {}),
            "excess": str(amount),
            "paid_by": f"{reference_type}:{reference_id}",
        },
        note="Credited to the receivable; returned to the customer's wallet after commit.",
    )
    plan_credit_return_enqueue(customer_id=plan.customer_id, currency=plan.currency)
    return entry


def plan_credit_return_enqueue(*, customer_id: int, currency: str) -> None:
    """After commit, square the customer's receivable with the wallet (``plan_credit_return``).

    The settlement paths hold a payment transaction and ledger accounts, which come after
    the customer and the wallet in the lock order: the wallet is only touched afterwards.
    """
    from bnpl.tasks import plan_credit_return as task  # the tasks import the services

    transaction.on_commit(lambda: task.delay(customer_id, currency))


@transaction.atomic(durable=True)
def plan_credit_return(*, customer_id: int, currency: str, actor: Any = None) -> int:
    """Give a credit sitting on the customer's installment receivable back to the wallet
    (repaying wallet debts first), or take back from the wallet what a refunded overpayment
    left owed. Locks customer → wallet → plans; running it twice moves the money once."""
    customer = Customer.objects.select_for_update(no_key=True).get(pk=customer_id)
    wallet_get_or_create(customer=customer, currency=currency)
    wallet = wallet_lock(customer_id=customer_id, currency=currency)
    assert wallet is not None
    list(
        Plan.objects.select_for_update(no_key=True)
        .filter(customer_id=customer_id, currency=currency)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    credit_minor = receivable_credit(customer_id=customer_id, currency=currency)
    receivable = plan_receivable(customer_id=customer_id, currency=currency)
    if credit_minor > 0:
        txn = wallet_refund(
            wallet=wallet,
            amount=Money(credit_minor, currency),
            counterpart=receivable,
            reference_type="bnpl.receivable",
            reference_id=receivable.code,
            actor=actor,
            note="Installment payments beyond what the plans owed",
        )
        action, moved = "bnpl.overpayment_returned", credit_minor
    else:
        # Only what a card refund took back: any other shortfall is not the customer's.
        owed = receivable_refunds_to_take_back(customer_id=customer_id, currency=currency)
        moved = max(0, min(-credit_minor, owed, wallet.account.balance))
        if not moved:
            return 0
        txn = wallet_refund_reverse(
            wallet=wallet,
            amount=Money(moved, currency),
            counterpart=receivable,
            reference_type="bnpl.receivable",
            reference_id=receivable.code,
            actor=actor,
            note="A refunded installment overpayment already returned to the wallet",
        )
        action, moved = "bnpl.overpayment_taken_back", -moved
    audit_record(
        actor=actor,
        action=action,
        target=customer,
        changes={"amount": str(Money(abs(moved), currency)), "wallet_transaction": txn.pk},
    )
    return moved


def _recover(
    *,
    plan: Plan,
    amount: Money,
    source: AccountLike,
    reference_type: str,
    reference_id: str,
    actor: Any,
) -> Allocation:
    """Money for a written-off plan is a recovery, up to what was written off.

    Anything beyond that is owed to the customer: it goes back to the wallet.
    """
    # bnpl.writeoff builds on this module, so it is imported where it is needed.
    from bnpl.writeoff import plan_recovery_apply

    key = f"{reference_type}:{reference_id}"
    _, rest = plan_recovery_apply(
        plan=plan, amount=amount, source=str(source), key=key, actor=actor
    )
    if rest.is_positive():
        plan_overpayment_record(
            plan=plan,
            amount=rest,
            source=source,
            reference_type=reference_type,
            reference_id=reference_id,
            changes={"beyond": "the write-off"},
            actor=actor,
        )
    return Allocation(late_fee=0, fee=0, interest=0, principal=0, excess=amount.minor)


def installment_settle(
    *, payment: PaymentTransaction, kind: str, amount: Money, clearing: str
) -> None:
    """Payments' settlement handler for ``bnpl.installment`` (see ``payments.events``)."""
    installments_settle([Settlement(payment.pk, payment.reference_id, kind, amount, clearing)])


@dataclass
class _Owed:
    """What an installment owes and has been paid (``allocate_payment`` reads these)."""

    id: int
    plan_id: int
    number: int
    status: str
    principal: int
    interest: int
    fee: int
    late_fee: int
    paid_principal: int
    paid_interest: int
    paid_fee: int
    paid_late_fee: int

    @property
    def outstanding(self) -> int:
        return (
            self.principal
            + self.interest
            + self.fee
            + self.late_fee
            - self.paid_principal
            - self.paid_interest
            - self.paid_fee
            - self.paid_late_fee
        )


_OWED_FIELDS = [f.name for f in dataclasses.fields(_Owed)]


def installments_settle(settlements: Sequence[Settlement]) -> None:
    """Book captured (or refunded) installment charges, one or a whole debit-run chunk.

    A capture pays its installment down (``allocate_payment``, one entry of
    ``_payment_legs``); a refund of such a capture returns money to the customer from the
    merchant's side, as any card refund does. The usual capture (an installment of an
    active plan, no more than it owes) is booked set-based: plans then installments locked
    in id order, their rows updated in one statement each, fully paid installments' debit
    requests settled, finished plans completed, and every entry posted at once, last. Any
    other (a written-off or cancelled plan, an overpayment) goes through
    ``installment_apply_payment`` one by one, afterwards.
    """
    drafts = refund_drafts(
        [s for s in settlements if s.kind == EventKind.REFUND], kind="bnpl.installment_refunded"
    )
    captures = [s for s in settlements if s.kind != EventKind.REFUND]
    slow: list[Settlement] = []
    if captures:
        installment_ids = sorted({int(s.reference_id) for s in captures})
        plan_ids = sorted(
            set(
                Installment.objects.filter(pk__any=installment_ids)
                .order_by()
                .values_list("plan_id", flat=True)
            )
        )
        plans = {
            row[0]: row
            for row in Plan.objects.select_for_update(no_key=True)
            .filter(pk__any=plan_ids)
            .order_by("pk")
            .values_list("pk", "status", "customer_id", "currency")
        }
        owed = {
            row[0]: _Owed(*row)
            for row in Installment.objects.select_for_update(no_key=True)
            .filter(pk__any=installment_ids)
            .order_by("pk")
            .values_list(*_OWED_FIELDS)
        }
        now = clock.now()
        receivables = _receivable_codes({plans[o.plan_id][2:] for o in owed.values()})
        changed: dict[int, _Owed] = {}
        for s in captures:
            installment = owed[int(s.reference_id)]
            _plan_id, plan_status, customer_id, currency = plans[installment.plan_id]
            split = allocate_payment(installment, s.amount.minor)  # type: ignore[arg-type]
            if (
                plan_status != PlanStatus.ACTIVE
                or installment.status not in OPEN_INSTALLMENT
                or split.excess
                or s.amount.currency != currency
            ):
                slow.append(s)
                continue
            _apply_split(installment, split)
            if installment.outstanding == 0:
                installment.status = InstallmentStatus.PAID
            changed[installment.id] = installment
            drafts.append(
                EntryDraft(
                    kind="bnpl.installment_paid",
                    legs=_payment_legs(
                        s.clearing, receivables[(customer_id, currency)], s.amount, split
                    ),
                    reference_type="payments.transaction",
                    reference_id=str(s.payment_id),
                    memo=f"installment {installment.number} of plan {installment.plan_id}",
                )
            )
        paid = [i.id for i in changed.values() if i.status == InstallmentStatus.PAID]
        update_rows(
            Installment,
            ["paid_late_fee", "paid_fee", "paid_interest", "paid_principal", "status", "paid_at"],
            [
                (
                    i.id,
                    i.paid_late_fee,
                    i.paid_fee,
                    i.paid_interest,
                    i.paid_principal,
                    i.status,
                    now if i.status == InstallmentStatus.PAID else None,
                )
                for i in changed.values()
            ],
        )
        if paid:
            DebitRequest.objects.filter(installment_id__any=paid).exclude(
                status=DebitRequestStatus.SETTLED
            ).update(status=DebitRequestStatus.SETTLED, next_attempt_at=None)
            _installments_paid_signals(paid, captures)
            _plans_complete_if_done({owed[i].plan_id for i in paid}, now)
    if slow:
        # The entries below are posted one by one: their debit requests, then every account
        # a capture can touch, are locked first (id order), so that no later post waits for
        # an account while this transaction holds others out of order.
        list(
            DebitRequest.objects.select_for_update(no_key=True)
            .filter(installment_id__any=[int(s.reference_id) for s in slow])
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        currencies = {s.amount.currency for s in settlements}
        accounts_lock(
            [
                *receivables.values(),
                *{s.clearing for s in settlements},
                *(
                    system(purpose, currency)
                    for currency in currencies
                    for purpose in (
                        Purpose.MERCHANT,
                        Purpose.INTEREST_INCOME,
                        Purpose.FEE_INCOME,
                        Purpose.WRITE_OFF_EXPENSE,
                    )
                ),
            ]
        )
    ledger_post_many(drafts)
    for s in slow:
        plan, installment = locked_plan_installment(int(s.reference_id))
        installment_apply_payment(
            plan=plan,
            installment=installment,
            amount=s.amount,
            source=s.clearing,
            kind="bnpl.installment_paid",
            reference_type="payments.transaction",
            reference_id=str(s.payment_id),
            memo=f"installment {installment.number} of plan {plan.pk}",
        )


def refund_drafts(refunds: Sequence[Settlement], *, kind: str) -> list[EntryDraft]:
    """The entries of refunded installment or payoff captures: the card gets the money back
    (credit clearing). What a capture paid beyond what was owed comes off the receivable,
    where it was credited: a return to the wallet not yet made is not made, one already
    made is taken back (``plan_credit_return``), so the customer is not paid twice. The
    rest comes from the merchant, as any card refund does."""
    if not refunds:
        return []
    ids = sorted({str(s.payment_id) for s in refunds})
    receivable_legs = (
        Posting.objects.filter(
            entry__reference_type="payments.transaction",
            entry__reference_id__in=ids,
            account__purpose=Purpose.CUSTOMER_BNPL_RECEIVABLE,
        )
        .values("entry__reference_id", "entry__kind", "account__code", "account__customer_id")
        .annotate(total=Sum("amount"))
        .order_by()
    )
    excess: dict[str, int] = {}  # payment id → overpayment still to refund, minor units
    owner: dict[str, tuple[str, int]] = {}  # payment id → (receivable code, customer)
    for row in receivable_legs:
        payment_id, entry_kind = row["entry__reference_id"], row["entry__kind"]
        if entry_kind == OVERPAYMENT_KIND:
            excess[payment_id] = excess.get(payment_id, 0) - row["total"]
            owner[payment_id] = (row["account__code"], row["account__customer_id"])
        elif entry_kind.endswith("_refunded"):
            excess[payment_id] = excess.get(payment_id, 0) - row["total"]
    drafts = []
    for s in refunds:
        key = str(s.payment_id)
        part = max(0, min(s.amount.minor, excess.get(key, 0)))
        currency = s.amount.currency
        legs = [
            debit(system(Purpose.MERCHANT, currency), s.amount - Money(part, currency)),
            credit(s.clearing, s.amount),
        ]
        if part:
            excess[key] -= part
            code, customer_id = owner[key]
            legs.insert(0, debit(code, Money(part, currency)))
            plan_credit_return_enqueue(customer_id=customer_id, currency=currency)
        drafts.append(
            EntryDraft(
                kind=kind, legs=legs, reference_type="payments.transaction", reference_id=key
            )
        )
    return drafts


def _receivable_codes(pairs: set[tuple[int, str]]) -> dict[tuple[int, str], str]:
    """The receivable account codes of (customer, currency) pairs, every one existing."""
    codes = {pair: f"installments:{pair[0]}:{pair[1]}" for pair in pairs}
    existing = set(Account.objects.filter(code__any=codes.values()).values_list("code", flat=True))
    for (customer_id, currency), code in codes.items():
        if code not in existing:
            plan_receivable(customer_id=customer_id, currency=currency)
    return codes


def _installments_paid_signals(ids: list[int], captures: Sequence[Settlement]) -> None:
    """``installment_paid`` for each (with what this batch paid toward it), after commit;
    the rows are read only if anyone listens."""
    if not signals.installment_paid.has_listeners(Installment):
        return
    amounts: dict[str, Money] = {}
    for s in captures:
        amounts[s.reference_id] = (
            amounts[s.reference_id] + s.amount if s.reference_id in amounts else s.amount
        )

    def send() -> None:
        for installment in Installment.objects.filter(pk__in=ids).order_by("pk"):
            signals.installment_paid.send(
                sender=Installment, installment=installment, amount=amounts[str(installment.pk)]
            )

    transaction.on_commit(send)


def _plans_complete_if_done(plan_ids: set[int], now: datetime) -> None:
    """Complete the locked active plans among ``plan_ids`` with nothing left to pay (the
    set-based ``plan_complete_if_done``: ``Plan.complete`` only stamps ``completed_at``)."""
    # Per plan, one open installment is looked for through (plan, number)'s index: a plain
    # filter on the installments would be planned as a scan of all of them.
    open_one = (
        Installment.objects.filter(plan_id=OuterRef("pk"), status__in=OPEN_INSTALLMENT)
        .order_by()  # any one will do; Meta.ordering (by plan) would join the plans
        .values("pk")[:1]
    )
    done = sorted(
        Plan.objects.filter(pk__any=list(plan_ids))
        .annotate(open_one=Subquery(open_one))
        .filter(open_one__isnull=True)
        .values_list("pk", flat=True)
    )
    if not done:
        return
    Plan.objects.filter(pk__any=done, status=PlanStatus.ACTIVE).update(
        status=PlanStatus.COMPLETED, completed_at=now
    )
    if signals.plan_completed.has_listeners(Plan):

        def send() -> None:
            for plan in Plan.objects.filter(pk__in=done, status=PlanStatus.COMPLETED):
                signals.plan_completed.send(sender=Plan, plan=plan)

        transaction.on_commit(send)


# --- charging the down payment --------------------------------------------------------


def installment_checkout_charge(*, installment_id: int) -> GatewayResult:
    """Charge a plan's down-payment line now, off-session, outside any transaction.

    The settlement handler books the money; a repeat call while the line is unpaid (an
    unknown outcome) sends the same key, so the provider charges at most once; once the line
    is paid a repeat asks the provider nothing. A token that is not the plan customer's saved
    card is declined here (``payment_method_unknown``), never sent.
    """
    installment = Installment.objects.select_related("plan").get(pk=installment_id)
    plan = installment.plan
    if installment.outstanding == 0:
        return GatewayResult(decision=Decision.APPROVED, status="already_paid")
    try:
        payment_method_owned(
            customer_id=plan.customer_id, token=plan.payment_method, field="payment_method"
        )
    except PaymentMethodUnknown:
        return GatewayResult(decision=Decision.DECLINED, decline_code="payment_method_unknown")
    account = enabled_account(Provider.CARD)
    if account is None:
        raise ProviderNotSupported("No card processor is enabled.")
    _, result = payment_authorize(
        account=account,
        reference_type=INSTALLMENT_REFERENCE,
        reference_id=str(installment.pk),
        amount=Money(installment.outstanding, plan.currency),
        payment_method=plan.payment_method,
        idempotency_key=f"{debit_request_key(plan, installment.number)}:checkout",
        capture=True,
    )
    return result
