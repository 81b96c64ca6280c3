"""Servicing a running installment plan: date changes, extra payments, early payoff, merchant
refunds and cancellation, for the customer (API) and for staff (admin).

Every service is keyword-only and named ``<entity>_<verb>``. Those that change rows run in
``transaction.atomic(durable=True)``, lock customer → wallet → plan → installments (in
number order) → debit requests with ``select_for_update(no_key=True)``, book every money
movement in that transaction (``bnpl.services.installment_apply_payment`` or ``ledger_post``)
and write an audit row. A card payment calls the provider outside any transaction and
records the outcome in a short one after it (ARCHITECTURE.md). ``customer_id``, when given,
scopes the plan to that customer: another customer's plan is ``bnpl.plan_not_found``.

Rules, written out:

- **Reschedule** (``plan_reschedule`` / ``plan_reschedule_preview``): moves one
  installment's due date. Allowed while the plan is active and has been rescheduled fewer
  than ``terms.reschedule_max_count`` times; only for an installment that is scheduled, not
  yet due (its date is after today), whose debit has not been attempted; the new date must
  be after today, at most ``terms.reschedule_max_days`` from the installment's *original*
  due date (so repeated moves cannot drift further), and strictly between its neighbours'
  due dates. ``terms.reschedule_fee`` is added to the moved installment's fee. With
  declining-balance interest the principal still owed before the installment (the unpaid
  principal, ``principal - paid_principal``, of it and of every later open installment;
  principal already repaid accrues nothing) accrues for the days the date moves, at the
  plan's APR on an actual/365 day count (the convention of ``bnpl.pricing``'s 7/365 and
  14/365 weeks) rounded by ``core.money.to_minor``: the installment's interest grows (or
  shrinks) by that, and the next *open* installment's shrinks (or grows) by the same accrual
  on the unpaid principal left after the moved one, never below what is already paid. A
  paid installment is never changed; when no later installment is open the moved one just
  carries its extra interest (nothing is left to offset it against). Zero and flat interest
  do not depend on the dates. The debit request follows the new date. Nothing moves in the
  ledger: interest and fees are booked when paid.
- **Extra payment** (``installment_pay``): toward one installment, from the wallet or by an
  off-session card charge (reference ``bnpl.installment``: the settlement handler books
  it). It pays that installment's parts (late fee → fee → interest → principal); no other
  installment changes. More than the installment owes is refused.
- **Early payoff** (``plan_pay_off`` / ``plan_payoff_preview``; from the wallet, by an
  off-session card charge settled by ``plan_payoff_settle``, or staff recording money
  received): the customer pays everything owed on the open installments, less the interest
  not yet earned on a declining-balance plan. Earned interest: all of an installment
  already due; of the installment whose period is running (the first falling due after
  today), its interest pro rata of the days elapsed since the previous due date (or the
  start date), rounded by ``to_minor``; none of the later ones. Interest already paid is
  never taken back; fees and late fees stay owed (they do not accrue with time). Zero and
  flat plans pay what they owe. The plan completes.
- **Refund** (``plan_refund``): a merchant refund of ``amount`` of the financed order
  first reduces the principal still owed — from the last installments first, or spread
  over the open ones in proportion to their unpaid principal (``terms.refund_allocation``,
  with ``core.money.allocate``) — booked debit merchant / credit receivable. An installment
  keeps the share of its unpaid interest that its remaining unpaid principal bears
  (``allocate``); one whose principal is fully refunded also drops its unpaid fee.
  Whatever the refund exceeds the unpaid principal by was already paid: it is returned to
  the customer's wallet (debit merchant / credit wallet, via ``wallet.services.wallet_refund``)
  in the same transaction; a card refund would need a provider call per installment's
  charge outside the transaction and could fail after the reduction is booked. Paid
  interest and fees are not refunded. A refund of the whole order cancels the plan.
- **Charges in flight**: money asked of the card processor may still arrive; taking the
  same money another way meanwhile would take it twice (the late capture would only be
  returned to the wallet). So a payoff, a cancel, an extra payment toward an installment,
  and a reschedule (for the installments whose amounts it changes) are refused with
  ``bnpl.charge_in_flight`` (409: retry once the pending payment is settled) while a charge
  for one of the plan's installments concerned, or for its payoff, is in flight: recorded by
  the payments layer without a final outcome (``payments.selectors.pending_charge_exists``),
  or claimed by the debit run without a recorded outcome. A card payment or payoff records
  its charge request in the same short transaction, under the plan's lock, as its checks.
- **Cancel** (``plan_cancel``): before the first installment debit only (no debit request
  attempted or settled, nothing paid beyond the checkout line). The receivable's unpaid
  principal is reversed (debit merchant), the down payment (whatever the checkout line
  paid, fees and interest included) is returned to the wallet, every installment and debit
  request is cancelled. The order itself is the order system's to cancel.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from fractions import Fraction
from typing import Any

from django.db import transaction

from bnpl import pricing
from bnpl.applications import has_owner
from bnpl.errors import (
    CancelRefused,
    ChargeInFlight,
    InstallmentNotFound,
    InstallmentNotOpen,
    Overpayment,
    PaymentDeclined,
    PayoffQuoteChanged,
    PlanEndsWithItsOrder,
    PlanNotActive,
    PlanNotFound,
    RefundExceedsOrder,
    RefundNotPossible,
    RescheduleRefused,
)
from bnpl.models import (
    BorrowerProfile,
    DebitRequest,
    DebitRequestStatus,
    Installment,
    InstallmentStatus,
    Plan,
    PlanStatus,
)
from bnpl.services import (
    INSTALLMENT_REFERENCE,
    OPEN_INSTALLMENT,
    due_moment,
    installment_apply_payment,
    plan_complete_if_done,
    plan_overpayment_record,
    plan_receivable,
    refund_drafts,
)
from core import clock
from core.audit import audit_record
from core.errors import InvalidInput
from core.idempotency import IdempotencyClaim
from core.money import Money, allocate
from customers.models import Customer
from ledger.models import Purpose
from ledger.services import AccountLike, credit, debit, ledger_post, ledger_post_many, system
from payments.events import Settlement
from payments.gateway import Decision
from payments.models import EventKind, PaymentTransaction, Provider
from payments.processing import ProviderNotSupported, payment_open, payment_send
from payments.selectors import enabled_account, payment_method_owned, pending_charge_exists
from wallet.models import Wallet
from wallet.services import (
    wallet_ensure_covers,
    wallet_get_or_create,
    wallet_lock,
    wallet_record_payment,
    wallet_refund,
)

WALLET, CARD, MANUAL = "wallet", "card", "manual"
PLAN_REFERENCE = "bnpl.plan"
# Reference type of an off-session card charge paying a whole plan off (reference id: plan).
PAYOFF_REFERENCE = "bnpl.plan_payoff"


# --- locking and checks -----------------------------------------------------------------


@dataclass
class _Locked:
    plan: Plan
    installments: list[Installment]
    wallet: Wallet | None = None

    def installment(self, number: int) -> Installment:
        return _installment(self.installments, number)


def _plan_owner(plan_id: int, customer_id: int | None) -> tuple[int, str]:
    row = Plan.objects.filter(pk=plan_id).values_list("customer_id", "currency").first()
    if row is None or (customer_id is not None and row[0] != customer_id):
        raise PlanNotFound()
    return row


def _refuse_owned(plan_id: int, *, customer_id: int | None) -> None:
    """Refuse to end, from here, a plan whose financed object a higher app owns."""
    _plan_owner(plan_id, customer_id)  # another customer's plan is not found first
    reference_type, reference_id = Plan.objects.values_list("reference_type", "reference_id").get(
        pk=plan_id
    )
    if has_owner(reference_type):
        raise PlanEndsWithItsOrder(extra={"reference": f"{reference_type}:{reference_id}"})


def _lock(plan_id: int, *, customer_id: int | None = None, wallet: str | None = None) -> _Locked:
    """Lock (customer → wallet →) plan → installments in number order.

    ``wallet="existing"`` locks the customer's wallet if there is one; ``"create"`` makes
    sure there is one first (money is about to be returned to it).
    """
    owner_id, currency = _plan_owner(plan_id, customer_id)
    locked_wallet = None
    if wallet is not None:
        customer = Customer.objects.select_for_update(no_key=True).get(pk=owner_id)
        if wallet == "create":
            wallet_get_or_create(customer=customer, currency=currency)
        locked_wallet = wallet_lock(customer_id=owner_id, currency=currency)
    plan = Plan.objects.select_for_update(no_key=True).get(pk=plan_id)
    installments = list(
        Installment.objects.select_for_update(no_key=True).filter(plan=plan).order_by("number")
    )
    return _Locked(plan, installments, locked_wallet)


def _read(plan_id: int, *, customer_id: int | None = None) -> _Locked:
    """The plan and its installments, unlocked (previews and pre-checks)."""
    _plan_owner(plan_id, customer_id)
    plan = Plan.objects.get(pk=plan_id)
    return _Locked(plan, list(Installment.objects.filter(plan=plan).order_by("number")))


def _installment(installments: Sequence[Installment], number: int) -> Installment:
    for installment in installments:
        if installment.number == number:
            return installment
    raise InstallmentNotFound(fields={"number": [f"The plan has no installment {number}."]})


def _require_active(plan: Plan, doing: str) -> None:
    if plan.status != PlanStatus.ACTIVE:
        raise PlanNotActive(f"Plan #{plan.pk} is {plan.status}: it cannot be {doing}.")


def _m(minor: int, currency: str) -> Money:
    return Money(minor, currency)


def _locked_debits(plan: Plan, installments: Sequence[Installment]) -> list[DebitRequest]:
    """Lock the debit requests of ``installments`` (after them, in the lock order)."""
    return list(
        DebitRequest.objects.select_for_update(no_key=True)
        .filter(plan=plan, installment__in=[i.pk for i in installments])
        .order_by("pk")
    )


def _refuse_charge_in_flight(
    plan: Plan, installments: Sequence[Installment], debits: Sequence[DebitRequest] = ()
) -> None:
    """Refuse (``bnpl.charge_in_flight``, 409) while money may still arrive for one of
    ``installments`` or for the plan's payoff without being asked again.

    In flight: a charge the payments layer has on record without a final outcome
    (``payments.selectors.pending_charge_exists``: every installment charge, whether the
    debit run's, the checkout down payment's or an extra card payment, goes through it, as
    does a payoff by card), or a debit the debit run has claimed whose outcome it has not
    recorded (``debits``, locked by the caller: claimed, ``next_attempt_at`` cleared; its
    charge request is recorded in the same transaction, and this also covers an attempt an
    earlier version claimed without one).
    """
    claimed = any(
        d.status == DebitRequestStatus.SCHEDULED and d.attempts_made and not d.next_attempt_at
        for d in debits
    )
    if claimed or pending_charge_exists(
        references={
            INSTALLMENT_REFERENCE: [i.pk for i in installments],
            PAYOFF_REFERENCE: [plan.pk],
        }
    ):
        raise ChargeInFlight(
            f"A payment for plan #{plan.pk} is still being processed: try again once the "
            "pending payment is settled."
        )


def _refuse(code: str, message: str, field_name: str = "due_date") -> RescheduleRefused:
    return RescheduleRefused(message, code=f"bnpl.{code}", fields={field_name: [message]})


# --- reschedule ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Reschedule:
    """A date change: applied (``confirmed``) or proposed, with the schedule it gives."""

    plan: Plan
    installments: list[Installment]  # the whole schedule after the change
    number: int
    old_date: date
    new_date: date
    fee: Money
    interest_change: Money
    confirmed: bool


def reschedule_offset_installment(rows: Sequence[Installment], number: int) -> Installment | None:
    """The installment whose interest offsets a move of installment ``number``: the next
    open one after it (``None`` if none is open)."""
    return next((i for i in rows if i.number > number and i.status in OPEN_INSTALLMENT), None)


def _propose_reschedule(
    locked: _Locked, *, number: int, new_date: date, debit: DebitRequest | None, today: date
) -> Reschedule:
    """Validate the change against the plan's terms and apply it to the in-memory rows."""
    plan, rows = locked.plan, locked.installments
    _require_active(plan, "rescheduled")
    installment = locked.installment(number)
    terms = pricing.Terms.from_json(plan.terms)
    if plan.reschedule_count >= terms.reschedule_max_count:
        raise _refuse(
            "reschedule_limit_reached",
            f"This plan allows {terms.reschedule_max_count} date change(s); "
            f"{plan.reschedule_count} made.",
        )
    if installment.status != InstallmentStatus.SCHEDULED or installment.due_date <= today:
        state = "overdue" if installment.due_date < today else installment.status
        if installment.due_date == today and installment.status == InstallmentStatus.SCHEDULED:
            state = "due today"
        raise _refuse(
            "reschedule_installment_not_open",
            f"Installment {number} is {state}; only installments not yet due can move.",
            "number",
        )
    if debit is None or debit.status != DebitRequestStatus.SCHEDULED or debit.attempts_made:
        raise _refuse(
            "reschedule_debit_started",
            f"Installment {number} is charged at checkout or its debit has started.",
            "number",
        )
    old_date = installment.due_date
    if new_date == old_date:
        raise _refuse("reschedule_same_date", f"Installment {number} is already due then.")
    if new_date <= today:
        raise _refuse("reschedule_date_in_past", "The new date must be after today.")
    shift = abs((new_date - installment.original_due_date).days)
    if shift > terms.reschedule_max_days:
        raise _refuse(
            "reschedule_too_far",
            f"At most {terms.reschedule_max_days} days from the original due date "
            f"{installment.original_due_date}; {new_date} is {shift} days away.",
        )
    before = [i for i in rows if i.number < number]
    after = [i for i in rows if i.number > number]
    if (before and new_date <= before[-1].due_date) or (after and new_date >= after[0].due_date):
        bounds = " and ".join(
            filter(
                None,
                (
                    f"after {before[-1].due_date}" if before else "",
                    f"before {after[0].due_date}" if after else "",
                ),
            )
        )
        raise _refuse(
            "reschedule_out_of_order",
            f"Due dates must stay in order: the new date must be {bounds}.",
        )

    interest_before = sum(i.interest for i in rows)
    days = (new_date - old_date).days
    # What is still owed: unpaid principal of the open installments from this one on.
    balance = sum(
        i.principal - i.paid_principal
        for i in rows
        if i.number >= number and i.status in OPEN_INSTALLMENT
    )
    installment.due_date = new_date
    installment.fee += terms.reschedule_fee
    grows, offset = pricing.reschedule_interest(
        terms=terms,
        balance=balance,
        principal=installment.principal - installment.paid_principal,
        days=days,
    )
    installment.interest = max(installment.paid_interest, installment.interest + grows)
    following = reschedule_offset_installment(rows, number)
    if following is not None:
        following.interest = max(following.paid_interest, following.interest + offset)
    return Reschedule(
        plan=plan,
        installments=rows,
        number=number,
        old_date=old_date,
        new_date=new_date,
        fee=_m(terms.reschedule_fee, plan.currency),
        interest_change=_m(sum(i.interest for i in rows) - interest_before, plan.currency),
        confirmed=False,
    )


def plan_reschedule_preview(
    *, plan_id: int, number: int, new_date: date, customer_id: int | None = None
) -> Reschedule:
    """The schedule a date change would give, refused exactly as the change would be.

    Writes nothing: the rows it returns are never saved.
    """
    locked = _read(plan_id, customer_id=customer_id)
    installment = locked.installment(number) if locked.installments else None
    debit = DebitRequest.objects.filter(installment=installment).first() if installment else None
    proposal = _propose_reschedule(
        locked, number=number, new_date=new_date, debit=debit, today=clock.business_date()
    )
    _refuse_charge_in_flight(locked.plan, _rescheduled_rows(locked.installments, number))
    return proposal


def _rescheduled_rows(rows: Sequence[Installment], number: int) -> list[Installment]:
    """The installments whose amounts a move of installment ``number`` changes."""
    following = reschedule_offset_installment(rows, number)
    return [_installment(rows, number), *([following] if following else [])]


@transaction.atomic(durable=True)
def plan_reschedule(
    *,
    plan_id: int,
    number: int,
    new_date: date,
    customer_id: int | None = None,
    actor: Any = None,
    idempotency: IdempotencyClaim | None = None,
) -> Reschedule:
    """Move installment ``number`` to ``new_date`` (rules: the module docstring)."""
    locked = _lock(plan_id, customer_id=customer_id)
    installment = locked.installment(number)
    debit = (
        DebitRequest.objects.select_for_update(no_key=True).filter(installment=installment).first()
    )
    before = {i.number: (i.interest, i.fee) for i in locked.installments}
    proposal = _propose_reschedule(
        locked, number=number, new_date=new_date, debit=debit, today=clock.business_date()
    )
    _refuse_charge_in_flight(locked.plan, _rescheduled_rows(locked.installments, number))
    for row in locked.installments:
        if row.number == number:
            row.save(update_fields=["due_date", "fee", "interest"])
        elif before[row.number] != (row.interest, row.fee):
            row.save(update_fields=["interest", "fee"])
    debit.next_attempt_at = due_moment(new_date)
    debit.save(update_fields=["next_attempt_at"])
    plan = locked.plan
    plan.reschedule_count += 1
    plan.save(update_fields=["reschedule_count"])
    result = Reschedule(**{**proposal.__dict__, "confirmed": True})
    audit_record(
        actor=actor,
        action="bnpl.plan_rescheduled",
        target=plan,
        changes={
            "installment": number,
            "due_date": [str(proposal.old_date), str(new_date)],
            "fee": str(proposal.fee),
            "interest_change": str(proposal.interest_change),
            "reschedule_count": plan.reschedule_count,
        },
    )
    if idempotency is not None:
        idempotency.complete(result)
    return result


# --- extra payment toward one installment -------------------------------------------------


@dataclass(frozen=True)
class ExtraPayment:
    plan: Plan
    installment: Installment
    amount: Money
    source: str  # wallet | card
    status: str  # paid: booked; pending: the card processor has not answered yet
    payment_transaction_id: int | None = None


def _check_payable(plan: Plan, installment: Installment, amount: Money) -> None:
    _require_active(plan, "paid toward")
    if installment.status not in OPEN_INSTALLMENT or installment.outstanding == 0:
        raise InstallmentNotOpen(
            f"Installment {installment.number} is {installment.status}; nothing is owed on it."
        )
    if amount.currency != plan.currency or not amount.is_positive():
        raise InvalidInput(
            f"A positive amount in {plan.currency}.",
            code="bnpl.invalid_amount",
            fields={"amount": [f"A positive amount in {plan.currency}."]},
        )
    owed = _m(installment.outstanding, plan.currency)
    if amount > owed:
        raise Overpayment(
            f"Installment {installment.number} owes {owed}; {amount} is more than that.",
            fields={"amount": [f"At most {owed.amount_str()}."]},
            extra={"outstanding": owed.as_dict()},
        )


def _pay_from_wallet_booked(
    *,
    locked: _Locked,
    installment: Installment,
    amount: Money,
    kind: str,
    actor: Any,
) -> None:
    """Book ``amount`` from the locked wallet to the locked installment; one entry, one
    wallet activity line."""
    plan, wallet = locked.plan, locked.wallet
    split = installment_apply_payment(
        plan=plan,
        installment=installment,
        amount=amount,
        source=wallet.account_id,
        kind=kind,
        reference_type=INSTALLMENT_REFERENCE,
        reference_id=str(installment.pk),
        memo=f"installment {installment.number} of plan {plan.pk} from the wallet",
        actor=actor,
    )
    wallet_record_payment(
        wallet=wallet,
        amount=amount,
        journal_entry=split.entry,
        reference_type=INSTALLMENT_REFERENCE,
        reference_id=str(installment.pk),
        actor=actor,
        note=f"Installment {installment.number} of plan #{plan.pk}",
    )


@transaction.atomic(durable=True)
def _installment_pay_from_wallet(
    *,
    plan_id: int,
    number: int,
    amount: Money,
    customer_id: int | None,
    actor: Any,
    idempotency: IdempotencyClaim | None,
) -> ExtraPayment:
    locked = _lock(plan_id, customer_id=customer_id, wallet="existing")
    installment = locked.installment(number)
    _check_payable(locked.plan, installment, amount)
    _refuse_charge_in_flight(locked.plan, [installment], _locked_debits(locked.plan, [installment]))
    wallet_ensure_covers(wallet=locked.wallet, amount=amount)
    _pay_from_wallet_booked(
        locked=locked,
        installment=installment,
        amount=amount,
        kind="bnpl.installment_paid",
        actor=actor,
    )
    result = ExtraPayment(locked.plan, installment, amount, WALLET, "paid")
    audit_record(
        actor=actor,
        action="bnpl.installment_extra_payment",
        target=locked.plan,
        changes={
            "installment": number,
            "amount": str(amount),
            "source": WALLET,
            "outstanding_after": str(_m(installment.outstanding, amount.currency)),
        },
    )
    if idempotency is not None:
        idempotency.complete(result)
    return result


def _card_charge_open(
    *, plan: Plan, reference_type: str, reference_id: str, amount: Money, key: str
) -> PaymentTransaction:
    """Record an off-session charge of the plan's card, in the caller's locked transaction
    (so a concurrent payment, payoff or cancel sees it in flight). The card must be one of
    the plan customer's saved cards, not removed (``payments.payment_method_unknown``)."""
    payment_method_owned(
        customer_id=plan.customer_id,
        token=plan.payment_method,
        field="source",
        message="The plan's card is not one of your saved cards: choose one with "
        f"POST /api/v1/bnpl/plans/{plan.pk}/payment-method, or pay from the wallet.",
    )
    account = enabled_account(Provider.CARD)
    if account is None:
        raise ProviderNotSupported("No card processor is enabled.")
    return payment_open(
        account=account,
        reference_type=reference_type,
        reference_id=reference_id,
        amount=amount,
        payment_method=plan.payment_method,
        idempotency_key=key,
        capture=True,
    )


def _card_charge_send(
    *, payment: PaymentTransaction, amount: Money, key: str, payment_method: str
) -> str:
    """Send a recorded charge, outside any transaction: ``"paid"`` or ``"pending"`` (the
    settlement handler books it when the capture is recorded); a decline raises."""
    outcome = payment_send(
        txn=payment,
        amount=amount,
        payment_method=payment_method,
        idempotency_key=key,
        capture=True,
    )
    if outcome.decision == Decision.DECLINED:
        raise PaymentDeclined(
            f"The card was declined ({outcome.decline_code or 'no reason given'}).",
            extra={"decline_code": outcome.decline_code or ""},
        )
    return "paid" if outcome.decision == Decision.APPROVED else "pending"


def _installment_pay_by_card(
    *,
    plan_id: int,
    number: int,
    amount: Money,
    customer_id: int | None,
    actor: Any,
    idempotency: IdempotencyClaim | None,
) -> ExtraPayment:
    """Charge the plan's card off-session for ``amount`` toward one installment.

    Checked first (nothing is charged for a refused amount), under the plan's lock, in the
    short transaction that records the charge request: a concurrent payment, payoff or
    cancel waits for it and then sees the charge in flight (``bnpl.charge_in_flight``). The
    settlement handler books the capture with the payment fact. Each call sends a fresh
    gateway key: the Idempotency-Key of the request, not the gateway key, is what makes a
    client's retry safe.
    """
    key = f"bnpl:plan:{plan_id}:installment:{number}:extra:{uuid.uuid4().hex}"
    with transaction.atomic(durable=True):
        locked = _lock(plan_id, customer_id=customer_id)
        installment = locked.installment(number)
        _check_payable(locked.plan, installment, amount)
        _refuse_charge_in_flight(
            locked.plan, [installment], _locked_debits(locked.plan, [installment])
        )
        payment = _card_charge_open(
            plan=locked.plan,
            reference_type=INSTALLMENT_REFERENCE,
            reference_id=str(installment.pk),
            amount=amount,
            key=key,
        )
    status = _card_charge_send(
        payment=payment, amount=amount, key=key, payment_method=locked.plan.payment_method
    )
    with transaction.atomic(durable=True):
        plan = Plan.objects.get(pk=plan_id)
        installment.refresh_from_db()
        result = ExtraPayment(plan, installment, amount, CARD, status, payment.pk)
        audit_record(
            actor=actor,
            action="bnpl.installment_extra_payment",
            target=plan,
            changes={
                "installment": number,
                "amount": str(amount),
                "source": CARD,
                "status": status,
                "payment_transaction": payment.pk,
            },
        )
        if idempotency is not None:
            idempotency.complete(result)
    return result


def installment_pay(
    *,
    plan_id: int,
    number: int,
    amount: Money,
    source: str,
    customer_id: int | None = None,
    actor: Any = None,
    idempotency: IdempotencyClaim | None = None,
) -> ExtraPayment:
    """Pay ``amount`` toward installment ``number`` only, from the wallet or the plan's card.

    More than the installment owes is ``bnpl.overpayment``; the other installments do not
    change.
    """
    pay = {WALLET: _installment_pay_from_wallet, CARD: _installment_pay_by_card}.get(source)
    if pay is None:
        raise InvalidInput(fields={"source": [f"One of {WALLET}, {CARD}."]})
    return pay(
        plan_id=plan_id,
        number=number,
        amount=amount,
        customer_id=customer_id,
        actor=actor,
        idempotency=idempotency,
    )


# --- early payoff -------------------------------------------------------------------------


@dataclass(frozen=True)
class PayoffLine:
    number: int
    interest_kept: int  # minor units: the installment's interest after the payoff
    interest_waived: int
    pays: int  # what the payoff pays toward it


@dataclass(frozen=True)
class PayoffQuote:
    plan_id: int
    as_of: date
    currency: str
    lines: list[PayoffLine] = field(default_factory=list)
    principal: Money | None = None
    interest: Money | None = None
    interest_waived: Money | None = None
    fees: Money | None = None
    total: Money | None = None


def payoff_quote(plan: Plan, installments: Sequence[Installment], *, today: date) -> PayoffQuote:
    """Pure: what paying the plan off on ``today`` costs (rule: the module docstring)."""
    terms = pricing.Terms.from_json(plan.terms)
    declining = terms.interest_method == pricing.INTEREST_DECLINING
    rows = sorted(installments, key=lambda i: i.number)
    lines = []
    principal = interest = fees = waived = 0
    for index, row in enumerate(rows):
        if row.status not in OPEN_INSTALLMENT:
            continue
        kept = row.interest
        if declining and row.due_date > today:
            period_start = rows[index - 1].due_date if index else plan.start_date
            if period_start >= today:
                kept = 0
            else:
                span = (row.due_date - period_start).days
                elapsed = (today - period_start).days
                kept = pricing.minor_of_fraction(
                    Fraction(row.interest * elapsed, span), plan.currency
                )
            kept = min(row.interest, max(kept, row.paid_interest))
        line_principal = row.principal - row.paid_principal
        line_interest = kept - row.paid_interest
        line_fees = row.fee - row.paid_fee + row.late_fee - row.paid_late_fee
        lines.append(
            PayoffLine(
                number=row.number,
                interest_kept=kept,
                interest_waived=row.interest - kept,
                pays=line_principal + line_interest + line_fees,
            )
        )
        principal += line_principal
        interest += line_interest
        fees += line_fees
        waived += row.interest - kept
    currency = plan.currency
    return PayoffQuote(
        plan_id=plan.pk,
        as_of=today,
        currency=currency,
        lines=lines,
        principal=_m(principal, currency),
        interest=_m(interest, currency),
        interest_waived=_m(waived, currency),
        fees=_m(fees, currency),
        total=_m(principal + interest + fees, currency),
    )


def plan_payoff_preview(*, plan_id: int, customer_id: int | None = None) -> PayoffQuote:
    """What paying the plan off today costs; writes nothing."""
    read = _read(plan_id, customer_id=customer_id)
    _require_active(read.plan, "paid off")
    return payoff_quote(read.plan, read.installments, today=clock.business_date())


@dataclass(frozen=True)
class Payoff:
    plan: Plan
    quote: PayoffQuote
    source: str  # wallet | card | manual
    status: str = "paid"  # pending: the card processor has not answered yet
    payment_transaction_id: int | None = None


def plan_pay_off(
    *,
    plan_id: int,
    source: str,
    expected_total: Money | None = None,
    customer_id: int | None = None,
    actor: Any = None,
    note: str = "",
    idempotency: IdempotencyClaim | None = None,
) -> Payoff:
    """Pay the whole plan off now: from the wallet or the plan's card (the customer), or as
    money received outside the gateways (``manual``: staff, e.g. a bank transfer). The
    plan completes; its debit requests stop.

    ``expected_total``, the total the customer was shown, must still be the payoff total
    (``bnpl.payoff_quote_changed`` otherwise, e.g. after midnight).
    """
    pay = {
        WALLET: _plan_pay_off_booked,
        MANUAL: _plan_pay_off_booked,
        CARD: _plan_pay_off_by_card,
    }.get(source)
    if pay is None:
        raise InvalidInput(fields={"source": [f"One of {WALLET}, {CARD}, {MANUAL}."]})
    return pay(
        plan_id=plan_id,
        source=source,
        expected_total=expected_total,
        customer_id=customer_id,
        actor=actor,
        note=note,
        idempotency=idempotency,
    )


def _quote_checked(locked: _Locked, expected_total: Money | None) -> PayoffQuote:
    """The payoff quote of a locked plan, refused while a charge for it is in flight."""
    _require_active(locked.plan, "paid off")
    open_rows = [r for r in locked.installments if r.status in OPEN_INSTALLMENT]
    _refuse_charge_in_flight(locked.plan, open_rows, _locked_debits(locked.plan, open_rows))
    quote = payoff_quote(locked.plan, locked.installments, today=clock.business_date())
    if expected_total is not None and expected_total != quote.total:
        raise PayoffQuoteChanged(
            f"The payoff total is now {quote.total}, not {expected_total}.",
            extra={"total": quote.total.as_dict()},
        )
    return quote


def _settle_payoff(
    locked: _Locked, quote: PayoffQuote, pay: Callable[[Installment, Money], None]
) -> None:
    """Waive the unearned interest of the locked plan and pay every open installment with
    ``pay``; stop its debit requests and complete it."""
    plan = locked.plan
    by_number = {line.number: line for line in quote.lines}
    now = clock.now()
    for row in locked.installments:
        line = by_number.get(row.number)
        if line is None:
            continue
        if row.interest != line.interest_kept:
            row.interest = line.interest_kept
            row.save(update_fields=["interest"])
        if line.pays:
            pay(row, _m(line.pays, plan.currency))
            continue
        row.status = InstallmentStatus.PAID
        row.paid_at = now
        row.save(update_fields=["status", "paid_at"])
        DebitRequest.objects.filter(installment=row).exclude(
            status=DebitRequestStatus.SETTLED
        ).update(status=DebitRequestStatus.SETTLED, next_attempt_at=None)
    DebitRequest.objects.filter(
        plan=plan,
        status__in=(
            DebitRequestStatus.SCHEDULED,
            DebitRequestStatus.ACTION_REQUIRED,
            DebitRequestStatus.EXHAUSTED,
        ),
    ).update(status=DebitRequestStatus.CANCELLED, next_attempt_at=None)
    plan_complete_if_done(plan=plan)


def _payoff_audit(plan: Plan, quote: PayoffQuote, source: str, actor: Any, note: str, **more):
    audit_record(
        actor=actor,
        action="bnpl.plan_paid_off",
        target=plan,
        changes={
            "source": source,
            "total": str(quote.total),
            "interest_waived": str(quote.interest_waived),
            "as_of": str(quote.as_of),
            **more,
        },
        note=note,
    )


@transaction.atomic(durable=True)
def _plan_pay_off_booked(
    *,
    plan_id: int,
    source: str,
    expected_total: Money | None,
    customer_id: int | None,
    actor: Any,
    note: str,
    idempotency: IdempotencyClaim | None,
) -> Payoff:
    locked = _lock(
        plan_id, customer_id=customer_id, wallet="existing" if source == WALLET else None
    )
    plan = locked.plan
    quote = _quote_checked(locked, expected_total)
    if source == WALLET:
        wallet_ensure_covers(wallet=locked.wallet, amount=quote.total)

    def pay(row: Installment, amount: Money) -> None:
        if source == WALLET:
            _pay_from_wallet_booked(
                locked=locked, installment=row, amount=amount, kind="bnpl.payoff", actor=actor
            )
            return
        installment_apply_payment(
            plan=plan,
            installment=row,
            amount=amount,
            source=system(Purpose.CASH_CLEARING, plan.currency),
            kind="bnpl.payoff",
            reference_type=PLAN_REFERENCE,
            reference_id=str(plan.pk),
            memo=f"payoff of installment {row.number}: {note}"[:255],
            actor=actor,
        )

    _settle_payoff(locked, quote, pay)
    _payoff_audit(plan, quote, source, actor, note)
    result = Payoff(plan, quote, source)
    if idempotency is not None:
        idempotency.complete(result)
    return result


def _plan_pay_off_by_card(
    *,
    plan_id: int,
    source: str,
    expected_total: Money | None,
    customer_id: int | None,
    actor: Any,
    note: str,
    idempotency: IdempotencyClaim | None,
) -> Payoff:
    """Charge the payoff total on the plan's card off-session (reference
    ``bnpl.plan_payoff``); ``plan_payoff_settle`` books it with the capture.

    Quoted and checked under the plan's lock in the short transaction that records the
    charge request, so a concurrent payment, payoff or cancel sees it in flight."""
    key = f"bnpl:plan:{plan_id}:payoff:{uuid.uuid4().hex}"
    with transaction.atomic(durable=True):
        locked = _lock(plan_id, customer_id=customer_id)
        quote = _quote_checked(locked, expected_total)
        payment = _card_charge_open(
            plan=locked.plan,
            reference_type=PAYOFF_REFERENCE,
            reference_id=str(plan_id),
            amount=quote.total,
            key=key,
        )
    status = _card_charge_send(
        payment=payment, amount=quote.total, key=key, payment_method=locked.plan.payment_method
    )
    with transaction.atomic(durable=True):
        plan = Plan.objects.get(pk=plan_id)
        audit_record(
            actor=actor,
            action="bnpl.plan_payoff_charged",
            target=plan,
            changes={"total": str(quote.total), "status": status, "payment": payment.pk},
            note=note,
        )
        result = Payoff(plan, quote, CARD, status, payment.pk)
        if idempotency is not None:
            idempotency.complete(result)
    return result


def plan_payoff_settle(
    *, payment: PaymentTransaction, kind: str, amount: Money, clearing: str
) -> None:
    """Payments' settlement handler for ``bnpl.plan_payoff`` (see ``payments.events``).

    A capture that covers the payoff total as of its settlement pays the plan off (unearned
    interest waived). One that does not (the quote grew since it was charged) pays the open
    installments in number order like ordinary payments. Whatever is left over, or arrives
    for a plan no longer active, goes back to the customer's wallet after commit
    (``bnpl.services.plan_overpayment_record``). A refund of such a capture: see
    ``bnpl.services.refund_drafts``. No customer or wallet is locked (they come first).
    """
    if kind == EventKind.REFUND:
        ledger_post_many(
            refund_drafts(
                [Settlement(payment.pk, payment.reference_id, kind, amount, clearing)],
                kind="bnpl.payoff_refunded",
            )
        )
        return
    locked = _lock(int(payment.reference_id))
    plan = locked.plan

    def pay(row: Installment, money: Money) -> None:
        installment_apply_payment(
            plan=plan,
            installment=row,
            amount=money,
            source=clearing,
            kind="bnpl.payoff",
            reference_type="payments.transaction",
            reference_id=str(payment.pk),
            memo=f"payoff of installment {row.number} of plan {plan.pk}",
        )

    left = amount
    if plan.status == PlanStatus.ACTIVE:
        quote = payoff_quote(plan, locked.installments, today=clock.business_date())
        if amount >= quote.total:
            _settle_payoff(locked, quote, pay)
            _payoff_audit(plan, quote, CARD, None, "", payment=payment.pk)
            left = amount - quote.total
        else:
            for row in locked.installments:
                take = min(left.minor, row.outstanding)
                if row.status in OPEN_INSTALLMENT and take > 0:
                    pay(row, _m(take, plan.currency))
                    left = left - _m(take, plan.currency)
    if not left.is_positive():
        return
    if plan.status == PlanStatus.WRITTEN_OFF:
        pay(locked.installments[-1], left)  # booked as a recovery
        return
    plan_overpayment_record(
        plan=plan,
        amount=left,
        source=clearing,
        reference_type="payments.transaction",
        reference_id=str(payment.pk),
        changes={"payoff": True},
    )


# --- merchant refunds of a financed order --------------------------------------------------


@dataclass(frozen=True)
class PlanRefund:
    plan: Plan
    amount: Money
    reduced: Money  # unpaid principal the refund cancelled
    returned: Money  # already paid: credited to the customer's wallet
    reductions: dict[int, int]  # installment number → principal reduced, minor units


def _refund_reductions(rows: list[Installment], amount: int, allocation: str) -> dict[int, int]:
    unpaid = {r.number: r.principal - r.paid_principal for r in rows}
    unpaid = {n: p for n, p in unpaid.items() if p > 0}
    reducible = min(amount, sum(unpaid.values()))
    if reducible == 0:
        return {}
    if allocation == pricing.REFUND_RESPREAD:
        numbers = sorted(unpaid)
        parts = allocate(reducible, [unpaid[n] for n in numbers])
        return {n: p for n, p in zip(numbers, parts, strict=True) if p}
    reductions, left = {}, reducible
    for number in sorted(unpaid, reverse=True):
        take = min(left, unpaid[number])
        if take:
            reductions[number] = take
            left -= take
    return reductions


@transaction.atomic(durable=True)
def plan_refund(
    *,
    plan_id: int,
    amount: Money,
    lines: list[dict[str, Any]] | None = None,
    actor: Any = None,
    note: str = "",
) -> PlanRefund:
    """A merchant refund of ``amount`` of the financed order (rules: the module docstring).

    ``lines`` (optional) describes the refunded order lines, for the audit trail; the amount
    is what counts. A plan whose order belongs to oms is refunded by refunding the order
    (``oms.services.order_refund``), so the order and its plan cannot disagree.
    """
    _refuse_owned(plan_id, customer_id=None)
    return plan_refund_apply(plan_id=plan_id, amount=amount, lines=lines, actor=actor, note=note)


def plan_refund_apply(
    *,
    plan_id: int,
    amount: Money,
    lines: list[dict[str, Any]] | None = None,
    actor: Any = None,
    note: str = "",
) -> PlanRefund:
    """``plan_refund`` in the caller's transaction: oms refunds an order and its plan at once.

    The caller has locked, in order, the customer, the wallet and the order.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("plan_refund_apply runs inside the caller's transaction")
    locked = _lock(plan_id, wallet="create")
    plan = locked.plan
    if plan.status not in (PlanStatus.ACTIVE, PlanStatus.COMPLETED):
        raise RefundNotPossible(f"Plan #{plan.pk} is {plan.status}.")
    left = _m(plan.amount - plan.refunded_amount, plan.currency)
    if amount.currency != plan.currency or not amount.is_positive():
        raise InvalidInput(
            code="bnpl.invalid_amount",
            fields={"amount": [f"A positive amount in {plan.currency}."]},
        )
    if amount > left:
        raise RefundExceedsOrder(
            f"{left} of the order is left to refund; {amount} was asked.",
            fields={"amount": [f"At most {left.amount_str()}."]},
        )
    terms = pricing.Terms.from_json(plan.terms)
    open_rows = [r for r in locked.installments if r.status in OPEN_INSTALLMENT]
    # A charge already sent would land on installments the refund is about to shrink.
    _refuse_charge_in_flight(plan, open_rows, _locked_debits(plan, open_rows))
    reductions = _refund_reductions(open_rows, amount.minor, terms.refund_allocation)
    now = clock.now()
    for row in open_rows:
        cut = reductions.get(row.number, 0)
        if not cut:
            continue
        unpaid_before = row.principal - row.paid_principal
        unpaid_after = unpaid_before - cut
        row.principal -= cut
        unpaid_interest = row.interest - row.paid_interest
        if unpaid_after == 0:
            row.interest = row.paid_interest
            row.fee = row.paid_fee
        elif unpaid_interest:
            row.interest = row.paid_interest + allocate(unpaid_interest, [unpaid_after, cut])[0]
        fields = ["principal", "interest", "fee"]
        if row.outstanding == 0:
            row.status = InstallmentStatus.PAID if row.paid else InstallmentStatus.CANCELLED
            row.paid_at = now if row.paid else None
            fields += ["status", "paid_at"]
            DebitRequest.objects.filter(installment=row).exclude(
                status=DebitRequestStatus.SETTLED
            ).update(status=DebitRequestStatus.CANCELLED, next_attempt_at=None)
        row.save(update_fields=fields)
    reduced = _m(sum(reductions.values()), plan.currency)
    returned = amount - reduced
    merchant = system(Purpose.MERCHANT, plan.currency)
    memo = f"refund of plan #{plan.pk}: {note}"[:255]
    if reduced.is_positive():
        ledger_post(
            kind="bnpl.plan_refund",
            legs=[
                debit(merchant, reduced),
                credit(
                    plan_receivable(customer_id=plan.customer_id, currency=plan.currency), reduced
                ),
            ],
            reference_type=PLAN_REFERENCE,
            reference_id=str(plan.pk),
            memo=memo,
        )
    if returned.is_positive():
        wallet_refund(
            wallet=locked.wallet,
            amount=returned,
            reference_type=PLAN_REFERENCE,
            reference_id=str(plan.pk),
            actor=actor,
            note=memo,
        )
    plan.refunded_amount += amount.minor
    plan.save(update_fields=["refunded_amount"])
    if plan.status == PlanStatus.ACTIVE:
        if plan.refunded_amount == plan.amount:
            _cancel_rest(plan, locked.installments)
            plan.cancel(at=now)
            plan.save(update_fields=["status", "cancelled_at"])
        else:
            plan_complete_if_done(plan=plan)
    audit_record(
        actor=actor,
        action="bnpl.plan_refunded",
        target=plan,
        changes={
            "amount": str(amount),
            "reduced": str(reduced),
            "returned_to_wallet": str(returned),
            "reductions": {str(n): str(_m(p, plan.currency)) for n, p in reductions.items()},
            "allocation": terms.refund_allocation,
            "lines": lines or [],
            "status": plan.status,
        },
        note=note,
    )
    return PlanRefund(plan, amount, reduced, returned, reductions)


def _cancel_rest(plan: Plan, rows: Sequence[Installment]) -> None:
    for row in rows:
        if row.status in OPEN_INSTALLMENT:
            row.status = InstallmentStatus.CANCELLED
            row.save(update_fields=["status"])
    DebitRequest.objects.filter(plan=plan).exclude(status=DebitRequestStatus.SETTLED).update(
        status=DebitRequestStatus.CANCELLED, next_attempt_at=None
    )


# --- cancel before the first debit ---------------------------------------------------------


@transaction.atomic(durable=True)
def plan_cancel(
    *,
    plan_id: int,
    customer_id: int | None = None,
    actor: Any = None,
    reason: str = "",
    idempotency: IdempotencyClaim | None = None,
) -> Plan:
    """Cancel a plan whose installments have not been debited yet (rules: module docstring).

    A plan that pays for an order is cancelled with its order (``oms.services.order_cancel``):
    a shipped order keeps its plan until its lines are returned.
    """
    _refuse_owned(plan_id, customer_id=customer_id)
    plan = plan_cancel_apply(plan_id=plan_id, customer_id=customer_id, actor=actor, reason=reason)
    if idempotency is not None:
        idempotency.complete(plan)
    return plan


def plan_cancel_apply(
    *, plan_id: int, customer_id: int | None = None, actor: Any = None, reason: str = ""
) -> Plan:
    """``plan_cancel`` in the caller's transaction (oms cancels the order with its plan).

    The caller has locked, in order, the customer, the wallet and the order.
    """
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("plan_cancel_apply runs inside the caller's transaction")
    locked = _lock(plan_id, customer_id=customer_id, wallet="create")
    plan, rows = locked.plan, locked.installments
    _require_active(plan, "cancelled")
    debits = {
        d.installment_id: d
        for d in DebitRequest.objects.select_for_update(no_key=True).filter(plan=plan)
    }
    for row in rows:
        request = debits.get(row.pk)
        if request is None:
            continue  # the checkout line: its down payment is returned below
        if request.attempts_made or request.status != DebitRequestStatus.SCHEDULED or row.paid:
            raise CancelRefused(
                f"Installment {row.number} has been debited or paid: the plan can no longer "
                "be cancelled."
            )
    # A down payment or an extra card payment still with the processor: once it is settled
    # the plan is cancelled (its money returned) or no longer cancellable.
    _refuse_charge_in_flight(plan, rows)
    currency = plan.currency
    merchant = system(Purpose.MERCHANT, currency)
    unpaid = sum(r.principal - r.paid_principal for r in rows if r.status in OPEN_INSTALLMENT)
    if unpaid:
        ledger_post(
            kind="bnpl.plan_cancelled",
            legs=[
                debit(merchant, _m(unpaid, currency)),
                credit(
                    plan_receivable(customer_id=plan.customer_id, currency=currency),
                    _m(unpaid, currency),
                ),
            ],
            reference_type=PLAN_REFERENCE,
            reference_id=str(plan.pk),
            memo=reason[:255],
        )
    paid_principal = sum(r.paid_principal for r in rows)
    paid_interest = sum(r.paid_interest for r in rows)
    paid_fees = sum(r.paid_fee + r.paid_late_fee for r in rows)
    returned = paid_principal + paid_interest + paid_fees
    if paid_interest or paid_fees:
        # Income booked on the down payment goes back through the merchant account, from
        # which the whole down payment is returned.
        legs: list = [credit(merchant, _m(paid_interest + paid_fees, currency))]
        sources: list[tuple[AccountLike, int]] = [
            (system(Purpose.INTEREST_INCOME, currency), paid_interest),
            (system(Purpose.FEE_INCOME, currency), paid_fees),
        ]
        legs += [debit(account, _m(minor, currency)) for account, minor in sources if minor]
        ledger_post(
            kind="bnpl.plan_cancel_income_returned",
            legs=legs,
            reference_type=PLAN_REFERENCE,
            reference_id=str(plan.pk),
        )
    if returned:
        wallet_refund(
            wallet=locked.wallet,
            amount=_m(returned, currency),
            reference_type=PLAN_REFERENCE,
            reference_id=str(plan.pk),
            actor=actor,
            note=f"Plan #{plan.pk} cancelled: down payment returned",
        )
    for row in rows:
        if row.status != InstallmentStatus.CANCELLED:
            row.status = InstallmentStatus.CANCELLED
            row.save(update_fields=["status"])
    DebitRequest.objects.filter(plan=plan).update(
        status=DebitRequestStatus.CANCELLED, next_attempt_at=None
    )
    plan.refunded_amount = paid_principal
    plan.cancel(at=clock.now())
    plan.save(update_fields=["status", "cancelled_at", "refunded_amount"])
    audit_record(
        actor=actor,
        action="bnpl.plan_cancelled",
        target=plan,
        changes={
            "receivable_reversed": str(_m(unpaid, currency)),
            "returned_to_wallet": str(_m(returned, currency)),
        },
        note=reason,
    )
    return plan


# --- the customer's opt-in to income-aligned dates -----------------------------------------


@transaction.atomic
def borrower_income_aligned_set(
    *, customer: Customer, enabled: bool, actor: Any = None
) -> BorrowerProfile:
    """Opt in (or out) of due dates aligned with the customer's observed income days."""
    profile, _ = BorrowerProfile.objects.select_for_update(no_key=True).get_or_create(
        customer=customer
    )
    if profile.income_aligned_dates != enabled:
        audit_record(
            actor=actor,
            action="bnpl.income_aligned_dates",
            target=profile,
            changes={"income_aligned_dates": [profile.income_aligned_dates, enabled]},
        )
        profile.income_aligned_dates = enabled
        profile.save(update_fields=["income_aligned_dates"])
    return profile
