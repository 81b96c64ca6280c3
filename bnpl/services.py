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
to the receivable and, in the same transaction, returned to the customer's wallet
(``plan_overpayment_return``), whose credit repays wallet debts first.

Lock order: customer → wallet → order → plan → installment → debit request → payment
transaction → ledger accounts. The settlement handler is the one path entered with a payment
transaction already locked; no service holds a plan lock while taking a payment
transaction's, because provider calls run outside transactions. It locks the wallet of every
capture that may overpay before any plan.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any

from django.db import transaction
from django.db.models import OuterRef, Subquery

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
from bnpl.selectors import installment_outstanding
from core import clock
from core.audit import audit_record
from core.db import update_rows
from core.money import Money
from customers.models import Customer
from ledger.models import Account, JournalEntry, Purpose
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
from wallet.services import wallet_get_or_create, wallet_lock, wallet_refund

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
    customer opted into), strictly increasing; each move is re-priced by the reschedule
    rule. The card must be one of the customer's saved cards. The down-payment line (if the
    terms have one) is charged at checkout by
    ``installment_checkout_charge`` and gets no debit request; every other installment that
    owes something gets one (a line owing nothing, possible on tiny amounts, is paid from
    the start).
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
    lines = list(schedule.lines)
    checkout_line = schedule.down_payment_line
    if due_dates is not None:
        lines = _with_due_dates(lines, checkout_line, due_dates, terms)
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


def _with_due_dates(
    lines: list[pricing.ScheduleLine],
    checkout_line: pricing.ScheduleLine | None,
    due_dates: list[date],
    terms: pricing.Terms,
) -> list[pricing.ScheduleLine]:
    """``lines`` with the later ones moved to ``due_dates``, each move re-priced one after
    the other by the reschedule rule (``pricing.reschedule_interest``), as if the customer
    had rescheduled every line at no fee."""
    later = [line for line in lines if line is not checkout_line]
    if len(due_dates) != len(later) or any(a >= b for a, b in itertools.pairwise(due_dates)):
        raise ValueError("due_dates must give each later installment a date, increasing")
    interest = [line.interest for line in later]
    for index, (line, new_date) in enumerate(zip(later, due_dates, strict=True)):
        grows, offset = pricing.reschedule_interest(
            terms=terms,
            balance=sum(other.principal for other in later[index:]),
            principal=line.principal,
            days=(new_date - line.due_date).days,
        )
        interest[index] = max(0, interest[index] + grows)
        following = next((j for j in range(index + 1, len(later)) if later[j].total), None)
        if following is not None:
            interest[following] = max(0, interest[following] + offset)
    moved = {
        line.number: dataclasses.replace(line, due_date=new_date, interest=new_interest)
        for line, new_date, new_interest in zip(later, due_dates, interest, strict=True)
    }
    return [moved.get(line.number, line) for line in lines]


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

    One entry: debit ``source`` by the amount; credit the receivable (principal), interest
    income and fee income (fee and late fee). An excess (only a provider can report one:
    servicing refuses to overpay), or money for a cancelled plan or installment, is a credit
    on the receivable that goes straight back to the customer's wallet
    (``plan_overpayment_return``). On a written-off plan the money is a recovery instead.
    """
    if amount.currency != plan.currency or not amount.is_positive():
        raise ValueError(f"cannot apply {amount} to a {plan.currency} plan")
    if plan.status == PlanStatus.WRITTEN_OFF:
        return _recover(
            plan=plan,
            amount=amount,
            source=source,
            key=f"{reference_type}:{reference_id}",
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
    entry = ledger_post(
        kind=kind,
        legs=_payment_legs(source, receivable.pk, amount, split),
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
        audit_record(
            actor=actor,
            action="bnpl.overpayment",
            target=plan,
            changes={
                "installment": installment.number,
                "excess": str(Money(split.excess, currency)),
            },
            note="Credited to the receivable and returned to the customer's wallet.",
        )
        plan_overpayment_return(
            plan=plan,
            amount=Money(split.excess, currency),
            reference_type=reference_type,
            reference_id=reference_id,
            actor=actor,
        )
    plan_complete_if_done(plan=plan)
    return dataclasses.replace(split, entry=entry)


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


def plan_overpayment_return(
    *, plan: Plan, amount: Money, reference_type: str, reference_id: str, actor: Any = None
) -> None:
    """Give ``amount``, credited to the plan's receivable beyond what it owed, back to the
    customer's wallet in the caller's transaction: one entry (debit receivable, credit
    wallet) through the wallet's credit service, which repays wallet debts first."""
    customer_id, currency = plan.customer_id, plan.currency
    wallet_get_or_create(customer=Customer(pk=customer_id), currency=currency)
    wallet = wallet_lock(customer_id=customer_id, currency=currency)  # held already, usually
    txn = wallet_refund(
        wallet=wallet,
        amount=amount,
        counterpart=plan_receivable(customer_id=customer_id, currency=currency),
        reference_type="bnpl.plan",
        reference_id=str(plan.pk),
        actor=actor,
        note=f"Plan #{plan.pk}: paid beyond what it owed ({reference_type} {reference_id})",
    )
    audit_record(
        actor=actor,
        action="bnpl.overpayment_returned",
        target=plan,
        changes={
            "amount": str(amount),
            "paid_by": f"{reference_type}:{reference_id}",
            "wallet_transaction": txn.pk,
        },
    )


def _recover(*, plan: Plan, amount: Money, source: AccountLike, key: str, actor: Any) -> Allocation:
    """Money for a written-off plan is a recovery, up to what was written off.

    Anything beyond that is owed to the customer: it goes back to the wallet.
    """
    # bnpl.writeoff builds on this module, so it is imported where it is needed.
    from bnpl.writeoff import plan_recovery_apply

    _, rest = plan_recovery_apply(
        plan=plan, amount=amount, source=str(source), key=key, actor=actor
    )
    if rest.is_positive():
        receivable = plan_receivable(customer_id=plan.customer_id, currency=plan.currency)
        ledger_post(
            kind="bnpl.overpayment",
            legs=[debit(source, rest), credit(receivable, rest)],
            reference_type="bnpl.plan",
            reference_id=str(plan.pk),
            memo=f"beyond the write-off {key}",
        )
        audit_record(
            actor=actor,
            action="bnpl.overpayment",
            target=plan,
            changes={"excess": str(rest)},
            note="Received after the write-off was recovered in full; returned to the wallet.",
        )
        plan_overpayment_return(
            plan=plan, amount=rest, reference_type="bnpl.plan", reference_id=key, actor=actor
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
    drafts: list[EntryDraft] = [
        EntryDraft(
            kind="bnpl.installment_refunded",
            legs=[
                debit(system(Purpose.MERCHANT, s.amount.currency), s.amount),
                credit(s.clearing, s.amount),
            ],
            reference_type="payments.transaction",
            reference_id=str(s.payment_id),
        )
        for s in settlements
        if s.kind == EventKind.REFUND
    ]
    captures = [s for s in settlements if s.kind != EventKind.REFUND]
    slow: list[Settlement] = []
    if captures:
        installment_ids = sorted({int(s.reference_id) for s in captures})
        seen = {
            row[0]: row
            for row in Installment.objects.filter(pk__any=installment_ids)
            .order_by()
            .annotate(owed=installment_outstanding())
            .values_list(
                "pk",
                "plan_id",
                "plan__status",
                "plan__customer_id",
                "plan__currency",
                "status",
                "owed",
            )
        }
        plan_ids = sorted({row[1] for row in seen.values()})
        _lock_wallets_of_overpayments(captures, seen)
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


def _lock_wallets_of_overpayments(captures: Sequence[Settlement], seen: dict[int, tuple]) -> None:
    """Lock, before any plan, the wallets of customers whose capture looks (read unlocked)
    as if it may pay beyond what is owed: the excess goes back to the wallet."""
    owners = set()
    for s in captures:
        _id, _plan, plan_status, customer_id, currency, status, outstanding = seen[
            int(s.reference_id)
        ]
        if (
            plan_status != PlanStatus.ACTIVE
            or status not in OPEN_INSTALLMENT
            or s.amount.minor > outstanding
        ):
            owners.add((customer_id, currency))
    for customer_id, currency in sorted(owners):
        wallet_get_or_create(customer=Customer(pk=customer_id), currency=currency)
        wallet_lock(customer_id=customer_id, currency=currency)


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
