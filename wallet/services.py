"""Every write to wallets and wallet BNPL debts. Money moves only through ``ledger_post``.

Lock order (ARCHITECTURE.md): customer → wallet → debts (oldest first) → … → ledger
accounts. Every debt change happens under its wallet's lock, so the wallet lock alone
serializes everything that reads or changes a customer's debt in that currency.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Sum
from stdnum import iban as stdnum_iban
from stdnum.exceptions import ValidationError as StdnumValidationError

from core import clock
from core.audit import audit_record
from core.db import update_in_chunks
from core.errors import Conflict, InvalidInput
from core.idempotency import IdempotencyClaim
from core.money import Money
from core.notifications import EmailDraft, email_queue
from customers.models import Customer, Feature
from customers.services import customer_require_kyc_for
from ledger.models import Account, JournalEntry, Posting, Purpose
from ledger.services import AccountLike, account_get_or_create, credit, debit, ledger_post, system
from wallet import signals
from wallet.bnpl import (
    TOP_UP,
    Reason,
    bnpl_settings,
    customer_profile,
    debt_amounts,
    interest_accrued,
    wallet_checkout_verdict,
)
from wallet.errors import (
    DebtNotFound,
    DebtNotOpen,
    InsufficientBalance,
    InvalidCreditReason,
    InvalidIban,
    OverRepayment,
    WithdrawalBlocked,
)
from wallet.models import (
    BnplCustomerProfile,
    DebtDailySnapshot,
    DebtResolution,
    DebtStatus,
    Direction,
    TransactionKind,
    Wallet,
    WalletDebt,
    WalletTransaction,
    Withdrawal,
)

# Where the money of each kind of credit comes from.
CREDIT_SOURCES: dict[str, Purpose] = {
    TransactionKind.TOP_UP: Purpose.CASH_CLEARING,
    TransactionKind.GOODWILL: Purpose.GOODWILL_EXPENSE,
    TransactionKind.CASHBACK: Purpose.GOODWILL_EXPENSE,
}


def _actor(actor: Any) -> Any:
    return actor if getattr(actor, "is_authenticated", False) else None


def wallet_get_or_create(*, customer: Customer, currency: str) -> Wallet:
    """The customer's wallet in ``currency``, created with its ledger account if missing."""
    wallet = Wallet.objects.filter(customer=customer, currency=currency).first()
    if wallet is not None:
        return wallet
    with transaction.atomic():
        account = account_get_or_create(
            code=f"wallet:{customer.pk}:{currency}",
            purpose=Purpose.CUSTOMER_WALLET,
            currency=currency,
            customer=customer,
            non_negative=True,
        )
        wallet, _ = Wallet.objects.get_or_create(
            customer=customer,
            currency=currency,
            defaults={"account": account, "created_at": clock.now()},
        )
    return wallet


def wallet_lock(*, customer_id: int, currency: str) -> Wallet | None:
    """Lock and return the customer's wallet in ``currency``; ``None`` if there is none.

    The wallet's ledger account row is locked in the same statement: PostgreSQL re-reads
    only locked rows after waiting for a lock, so locking the wallet alone would leave a
    stale balance on the joined account. The customer and user rows are read, not locked.
    """
    return (
        Wallet.objects.select_for_update(no_key=True, of=("self", "account"))
        .select_related("account", "customer__user")
        .filter(customer_id=customer_id, currency=currency)
        .first()
    )


def _receivable(customer: Customer, currency: str) -> Account:
    return account_get_or_create(
        code=f"bnpl:{customer.pk}:{currency}",
        purpose=Purpose.CUSTOMER_BNPL_RECEIVABLE,
        currency=currency,
        customer=customer,
    )


def _move(
    *,
    wallet: Wallet,
    kind: TransactionKind,
    direction: Direction,
    amount: Money,
    counterpart: AccountLike,
    reference_type: str,
    reference_id: str,
    actor: AbstractBaseUser | None = None,
    note: str = "",
    idempotency_key: str | None = None,
) -> WalletTransaction:
    """Move ``amount`` between a locked wallet and ``counterpart``.

    One balanced journal entry and one activity row, in the caller's transaction. The
    locked wallet's in-memory balance follows, so several moves can run in a row.
    """
    into_wallet = direction == Direction.CREDIT
    wallet_leg, counter_leg = (credit, debit) if into_wallet else (debit, credit)
    entry = ledger_post(
        kind=f"wallet.{kind}",
        legs=[wallet_leg(wallet.account_id, amount), counter_leg(counterpart, amount)],
        reference_type=reference_type,
        reference_id=reference_id,
        memo=note,
    )
    wallet.account.balance += amount.minor if into_wallet else -amount.minor
    return WalletTransaction.objects.create(
        wallet=wallet,
        kind=kind,
        direction=direction,
        amount=amount.minor,
        balance_after=wallet.account.balance,
        journal_entry=entry,
        reference_type=reference_type,
        reference_id=str(reference_id),
        idempotency_key=idempotency_key,
        actor=_actor(actor),
        note=note[:255],
        created_at=clock.now(),
    )


# --- credits, and the automatic repayment they trigger --------------------------------


def _credit_and_repay(
    *,
    wallet: Wallet,
    kind: TransactionKind,
    amount: Money,
    counterpart: AccountLike,
    reference_type: str,
    reference_id: str,
    actor: AbstractBaseUser | None,
    note: str = "",
    idempotency_key: str | None = None,
) -> WalletTransaction:
    """Credit a locked wallet; outstanding debts are then repaid from it, oldest first.

    Both happen in the caller's transaction, so only the surplus is ever spendable. A
    customer who opted out of auto-deduct keeps the whole credit.
    """
    txn = _move(
        wallet=wallet,
        kind=kind,
        direction=Direction.CREDIT,
        amount=amount,
        counterpart=counterpart,
        reference_type=reference_type,
        reference_id=reference_id,
        actor=actor,
        note=note,
        idempotency_key=idempotency_key,
    )
    if customer_profile(wallet.customer).auto_deduct:
        _repay_oldest_first(wallet=wallet, actor=actor)
    return txn


def _repay_oldest_first(*, wallet: Wallet, actor: AbstractBaseUser | None) -> None:
    debts = list(
        WalletDebt.objects.select_for_update(no_key=True)
        .filter(wallet=wallet)
        .exclude(status=DebtStatus.REPAID)
        .order_by("created_at", "id")
    )
    if not debts:
        return
    conf, today = bnpl_settings(), clock.business_date()
    for debt in debts:
        available = wallet.account.balance
        if available <= 0:
            break
        debt.wallet = wallet
        owed = debt_amounts(debt, conf, today)["total"]
        _repay(
            debt=debt,
            wallet=wallet,
            amount=Money(min(available, owed), wallet.currency),
            conf=conf,
            on=today,
            actor=actor,
        )


@transaction.atomic(durable=True)
def wallet_credit(
    *,
    customer_id: int,
    amount: Money,
    kind: TransactionKind,
    idempotency_key: str,
    actor: AbstractBaseUser | None = None,
    note: str = "",
) -> WalletTransaction:
    """Credit a customer's wallet with money from outside (top-up, goodwill, cashback).

    Outstanding debts are repaid first, oldest first. Idempotent per wallet and
    ``idempotency_key``: a repeat returns the first credit.
    """
    if kind not in CREDIT_SOURCES:
        raise InvalidCreditReason(
            f"{kind!r} is not a wallet credit reason.",
            fields={"kind": [f"One of {sorted(CREDIT_SOURCES)}."]},
        )
    if not amount.is_positive():
        raise InvalidCreditReason(
            "A credit must be positive.",
            code="wallet.invalid_amount",
            fields={"amount": ["Must be greater than zero."]},
        )
    customer = Customer.objects.select_for_update(no_key=True).get(pk=customer_id)
    wallet_get_or_create(customer=customer, currency=amount.currency)
    wallet = wallet_lock(customer_id=customer_id, currency=amount.currency)
    existing = WalletTransaction.objects.filter(
        wallet=wallet, idempotency_key=idempotency_key
    ).first()
    if existing is not None:
        if (existing.amount, existing.kind) != (amount.minor, kind):
            raise Conflict(
                f"This key already credited {existing.money} ({existing.kind}).",
                code="wallet.idempotency_key_reused",
            )
        return existing
    txn = _credit_and_repay(
        wallet=wallet,
        kind=kind,
        amount=amount,
        counterpart=system(CREDIT_SOURCES[kind], amount.currency),
        reference_type="wallet.wallet",
        reference_id=str(wallet.pk),
        actor=actor,
        note=note,
        idempotency_key=idempotency_key,
    )
    audit_record(
        actor=actor,
        action=f"wallet.{kind}",
        target=wallet,
        changes={"amount": str(amount), "balance_after": str(wallet.balance)},
        note=note,
    )
    return txn


def wallet_refund(
    *,
    wallet: Wallet,
    amount: Money,
    reference_type: str,
    reference_id: str,
    actor: AbstractBaseUser | None = None,
    note: str = "",
    counterpart: AccountLike | None = None,
) -> WalletTransaction:
    """Give ``amount`` of a paid order back to a wallet locked by ``wallet_lock``.

    Like every credit, it repays outstanding debts first; only the surplus is spendable.
    The money comes from the merchant, or from ``counterpart`` when another account holds
    it (an installment plan's overpayment, owed to the customer on the plan receivable).
    """
    return _credit_and_repay(
        wallet=wallet,
        kind=TransactionKind.REFUND,
        amount=amount,
        counterpart=counterpart or system(Purpose.MERCHANT, amount.currency),
        reference_type=reference_type,
        reference_id=reference_id,
        actor=actor,
        note=note,
    )


def wallet_refund_reverse(
    *,
    wallet: Wallet,
    amount: Money,
    counterpart: AccountLike,
    reference_type: str,
    reference_id: str,
    actor: AbstractBaseUser | None = None,
    note: str = "",
) -> WalletTransaction:
    """Take back from a locked wallet, to ``counterpart``, a refund that was paid twice (an
    installment overpayment the card processor refunded too); at most the balance."""
    return _move(
        wallet=wallet,
        kind=TransactionKind.REFUND,
        direction=Direction.DEBIT,
        amount=amount,
        counterpart=counterpart,
        reference_type=reference_type,
        reference_id=reference_id,
        actor=actor,
        note=note,
    )


def wallet_refund_order(
    *,
    wallet: Wallet,
    amount: Money,
    reference_type: str,
    reference_id: str,
    actor: AbstractBaseUser | None = None,
    note: str = "",
) -> None:
    """Refund a cancelled purchase to a locked wallet; the purchase's own debt comes first.

    Interest accrued so far is booked first (the base changes, so percent interest runs on
    the new base from today). What the customer still owes on the purchase is settled from
    the refund, and a debt owing nothing closes as ``cancelled``. If the debt was written
    off, refunds recover the write-off expense first, only what is not yet recovered
    (``recovered`` ≤ ``written_off``). Only what the customer actually paid reaches the
    wallet, where, like every credit, it repays other debts first.
    """
    currency = amount.currency
    merchant = system(Purpose.MERCHANT, currency)
    debt = (
        WalletDebt.objects.select_for_update(no_key=True)
        .filter(wallet=wallet, reference_type=reference_type, reference_id=str(reference_id))
        .first()
    )
    left = amount
    if debt is not None and debt.is_open:
        # The base is about to change: book what accrued on the old one, run on from today.
        conf, today = bnpl_settings(), clock.business_date()
        _crystallize_interest(debt=debt, conf=conf, on=today)
        debt.interest_before_base = debt.interest_charged
        debt.interest_base_since = today
        owed = min(left, Money(debt.principal_outstanding + debt.interest_unpaid_charged, currency))
        if owed.is_positive():
            ledger_post(
                kind="wallet.debt_cancel",
                legs=[debit(merchant, owed), credit(_receivable(wallet.customer, currency), owed)],
                reference_type="wallet.debt",
                reference_id=str(debt.pk),
                memo=note,
            )
            to_interest = min(owed.minor, debt.interest_unpaid_charged)
            debt.interest_paid += to_interest
            debt.principal_repaid += owed.minor - to_interest
            debt.principal_refunded += owed.minor - to_interest
            debt.refund_paid_interest += to_interest
            left = left - owed
        if debt.principal_outstanding == 0 and debt.interest_unpaid_charged == 0:
            _close(debt, DebtResolution.CANCELLED, actor)
        debt.save(
            update_fields=[
                "interest_paid",
                "principal_repaid",
                "principal_refunded",
                "refund_paid_interest",
                "interest_charged",
                "interest_before_base",
                "interest_base_since",
                "status",
                "resolution",
                "repaid_at",
                "resolved_by",
            ]
        )
    elif debt is not None and debt.resolution == DebtResolution.WRITTEN_OFF:
        recovered = min(left, Money(debt.written_off - debt.recovered, currency))
        if recovered.is_positive():
            debt.recovered += recovered.minor
            debt.save(update_fields=["recovered"])
            ledger_post(
                kind="wallet.debt_write_off_recovery",
                legs=[
                    debit(merchant, recovered),
                    credit(system(Purpose.WRITE_OFF_EXPENSE, currency), recovered),
                ],
                reference_type="wallet.debt",
                reference_id=str(debt.pk),
                memo=note,
            )
            left = left - recovered
    if left.is_positive():
        wallet_refund(
            wallet=wallet,
            amount=left,
            reference_type=reference_type,
            reference_id=reference_id,
            actor=actor,
            note=note,
        )


# --- paying an order, with wallet BNPL for the shortfall ------------------------------


@dataclass(frozen=True)
class Funding:
    """How an order will be paid from the wallet: balance first, the rest borrowed."""

    wallet: Wallet
    from_balance: Money
    borrowed: Money


def _refusal(
    *, balance: Money, amount: Money, reasons: list[Reason], options: list[str]
) -> InsufficientBalance:
    short = amount - balance
    return InsufficientBalance(
        f"The wallet holds {balance}; this order needs {amount} ({short} short).",
        extra={
            "balance": balance.as_dict(),
            "required": amount.as_dict(),
            "shortfall": short.as_dict(),
            "bnpl_reasons": [{"code": r.code, "message": r.message} for r in reasons],
            "options": options,
        },
    )


def wallet_plan_funding(
    *, customer: Customer, wallet: Wallet, amount: Money, categories: set[str] | None = None
) -> Funding:
    """Decide how a locked wallet pays ``amount``, or refuse with every reason.

    The gates are ``wallet_checkout_verdict``'s (what the eligibility endpoint shows): a
    customer the wallet needs KYC from is refused (``customers.kyc_required``); a short
    balance is borrowed through wallet BNPL when the customer is eligible, otherwise
    ``wallet.insufficient_balance`` names the reasons and the options.
    """
    verdict = wallet_checkout_verdict(
        customer=customer, balance=wallet.balance, amount=amount, categories=categories
    )
    if verdict.refusal is not None:
        raise verdict.refusal
    if not verdict.eligible:
        raise _refusal(
            balance=verdict.balance,
            amount=amount,
            reasons=verdict.reasons,
            options=verdict.options,
        )
    from_balance = amount if verdict.balance >= amount else verdict.balance
    return Funding(wallet, from_balance, verdict.shortfall)


def wallet_record_payment(
    *,
    wallet: Wallet,
    amount: Money,
    journal_entry: JournalEntry,
    reference_type: str,
    reference_id: str,
    actor: AbstractBaseUser | None = None,
    note: str = "",
) -> WalletTransaction:
    """The activity row of a payment out of a wallet locked by ``wallet_lock`` whose journal
    entry the caller posted in the same transaction (debiting the wallet's account by
    ``amount``): a higher app that splits the money over its own accounts (an installment
    paid from the wallet) books it, and the wallet keeps its activity line."""
    wallet.account.balance -= amount.minor
    return WalletTransaction.objects.create(
        wallet=wallet,
        kind=TransactionKind.PAYMENT,
        direction=Direction.DEBIT,
        amount=amount.minor,
        balance_after=wallet.account.balance,
        journal_entry=journal_entry,
        reference_type=reference_type,
        reference_id=str(reference_id),
        actor=_actor(actor),
        note=note[:255],
        created_at=clock.now(),
    )


def wallet_ensure_covers(*, wallet: Wallet | None, amount: Money) -> None:
    """Raise ``wallet.insufficient_balance`` unless the balance alone covers ``amount``."""
    balance = wallet.balance if wallet is not None else Money.zero(amount.currency)
    if balance < amount:
        raise _refusal(balance=balance, amount=amount, reasons=[], options=[TOP_UP])


def wallet_fund_order(
    *,
    customer: Customer,
    funding: Funding,
    reference_type: str,
    reference_id: str,
    actor: AbstractBaseUser | None = None,
) -> WalletDebt | None:
    """Pay an order as planned, in the caller's transaction; returns the debt, if any.

    One journal entry: the balance part leaves the wallet, the borrowed part becomes a
    receivable from the customer, the merchant is owed the whole amount.
    """
    total = funding.from_balance + funding.borrowed
    wallet = funding.wallet
    if not funding.borrowed.is_positive():
        _move(
            wallet=wallet,
            kind=TransactionKind.PAYMENT,
            direction=Direction.DEBIT,
            amount=total,
            counterpart=system(Purpose.MERCHANT, total.currency),
            reference_type=reference_type,
            reference_id=reference_id,
            actor=actor,
        )
        return None

    conf = bnpl_settings()
    legs = [
        debit(_receivable(customer, total.currency), funding.borrowed),
        credit(system(Purpose.MERCHANT, total.currency), total),
    ]
    if funding.from_balance.is_positive():
        legs.append(debit(wallet.account_id, funding.from_balance))
    entry = ledger_post(
        kind="wallet.bnpl_checkout",
        legs=legs,
        reference_type=reference_type,
        reference_id=reference_id,
    )
    if funding.from_balance.is_positive():
        wallet.account.balance -= funding.from_balance.minor
        WalletTransaction.objects.create(
            wallet=wallet,
            kind=TransactionKind.PAYMENT,
            direction=Direction.DEBIT,
            amount=funding.from_balance.minor,
            balance_after=wallet.account.balance,
            journal_entry=entry,
            reference_type=reference_type,
            reference_id=reference_id,
            actor=_actor(actor),
            note=f"BNPL covers the other {funding.borrowed}",
            created_at=clock.now(),
        )
    now = clock.now()
    debt = WalletDebt.objects.create(
        wallet=wallet,
        principal=funding.borrowed.minor,
        reference_type=reference_type,
        reference_id=reference_id,
        created_at=now,
        due_date=clock.business_date() + timedelta(days=conf.repayment_days),
    )
    audit_record(
        actor=actor,
        action="wallet.debt_created",
        target=debt,
        changes={
            "principal": str(funding.borrowed),
            "due_date": str(debt.due_date),
            "paid_from_balance": str(funding.from_balance),
        },
    )
    transaction.on_commit(lambda: signals.debt_created.send(sender=WalletDebt, debt=debt))
    return debt


# --- repaying, writing off -------------------------------------------------------------


def _crystallize_interest(*, debt: WalletDebt, conf, on: date) -> None:
    """Book the interest accrued up to ``on`` that is not yet in the ledger."""
    delta = interest_accrued(debt, conf, on) - debt.interest_charged
    if delta <= 0:
        return
    currency = debt.wallet.currency
    ledger_post(
        kind="wallet.debt_interest",
        legs=[
            debit(_receivable(debt.wallet.customer, currency), Money(delta, currency)),
            credit(system(Purpose.INTEREST_INCOME, currency), Money(delta, currency)),
        ],
        reference_type="wallet.debt",
        reference_id=str(debt.pk),
        memo=f"Interest accrued to {on}",
    )
    debt.interest_charged += delta


def _close(debt: WalletDebt, resolution: DebtResolution, actor: Any) -> None:
    debt.status = DebtStatus.REPAID
    debt.resolution = resolution
    debt.repaid_at = clock.now()
    debt.resolved_by = _actor(actor)
    transaction.on_commit(lambda: signals.debt_repaid.send(sender=WalletDebt, debt=debt))


def _repay(
    *,
    debt: WalletDebt,
    wallet: Wallet,
    amount: Money,
    conf,
    on: date,
    actor: AbstractBaseUser | None,
) -> WalletTransaction:
    """Pay ``amount`` of a locked debt from its locked wallet: interest first, then principal."""
    _crystallize_interest(debt=debt, conf=conf, on=on)
    txn = _move(
        wallet=wallet,
        kind=TransactionKind.BNPL_REPAYMENT,
        direction=Direction.DEBIT,
        amount=amount,
        counterpart=_receivable(wallet.customer, wallet.currency),
        reference_type="wallet.debt",
        reference_id=str(debt.pk),
        actor=actor,
    )
    to_interest = min(amount.minor, debt.interest_charged - debt.interest_paid)
    debt.interest_paid += to_interest
    debt.principal_repaid += amount.minor - to_interest
    if debt.principal_repaid == debt.principal and debt.interest_paid == debt.interest_charged:
        _close(debt, DebtResolution.REPAID, actor)
    debt.save(
        update_fields=[
            "interest_charged",
            "interest_paid",
            "principal_repaid",
            "status",
            "resolution",
            "repaid_at",
            "resolved_by",
        ]
    )
    return txn


def _locked_debt(*, customer_id: int, debt_id: int) -> tuple[Wallet, WalletDebt]:
    """Lock customer → wallet → debt for a change to one debt of this customer."""
    debt = (
        WalletDebt.objects.select_related("wallet")
        .filter(pk=debt_id, wallet__customer_id=customer_id)
        .first()
    )
    if debt is None:
        raise DebtNotFound()
    Customer.objects.select_for_update(no_key=True).get(pk=customer_id)
    wallet = wallet_lock(customer_id=customer_id, currency=debt.wallet.currency)
    debt = WalletDebt.objects.select_for_update(no_key=True).get(pk=debt_id)
    debt.wallet = wallet
    return wallet, debt


@transaction.atomic(durable=True)
def debt_repay(
    *,
    customer_id: int,
    debt_id: int,
    amount: Money,
    actor: AbstractBaseUser | None = None,
    idempotency: IdempotencyClaim | None = None,
) -> WalletDebt:
    """Repay part or all of one debt from the wallet balance, interest first."""
    wallet, debt = _locked_debt(customer_id=customer_id, debt_id=debt_id)
    if not debt.is_open:
        raise DebtNotOpen(f"Debt #{debt.pk} is {debt.get_resolution_display().lower()}.")
    if amount.currency != wallet.currency or not amount.is_positive():
        raise InvalidInput(
            fields={"amount": [f"A positive amount in {wallet.currency}."]},
            code="wallet.invalid_amount",
        )
    conf, today = bnpl_settings(), clock.business_date()
    owed = Money(debt_amounts(debt, conf, today)["total"], wallet.currency)
    if amount > owed:
        raise OverRepayment(
            f"Debt #{debt.pk} needs {owed}; {amount} is more than that.",
            fields={"amount": [f"At most {owed.amount_str()}."]},
            extra={"owed": owed.as_dict()},
        )
    wallet_ensure_covers(wallet=wallet, amount=amount)
    _repay(debt=debt, wallet=wallet, amount=amount, conf=conf, on=today, actor=actor)
    audit_record(
        actor=actor,
        action="wallet.debt_repay",
        target=debt,
        changes={"amount": str(amount), "status": debt.status},
    )
    if idempotency is not None:
        idempotency.complete(debt)
    return debt


@transaction.atomic(durable=True)
def debt_write_off(*, debt_id: int, actor: AbstractBaseUser, note: str = "") -> WalletDebt:
    """Forgive what is left of a debt (goodwill or uncollectable). Audited, ledgered.

    What was charged and not paid goes to the write-off expense; interest that accrued
    but was never charged is simply not charged.
    """
    customer_id = WalletDebt.objects.values_list("wallet__customer_id", flat=True).get(pk=debt_id)
    wallet, debt = _locked_debt(customer_id=customer_id, debt_id=debt_id)
    if not debt.is_open:
        raise DebtNotOpen(f"Debt #{debt.pk} is already {debt.get_resolution_display().lower()}.")
    remaining = debt.principal_outstanding + debt.interest_unpaid_charged
    amount = Money(remaining, wallet.currency)
    ledger_post(
        kind="wallet.debt_write_off",
        legs=[
            debit(system(Purpose.WRITE_OFF_EXPENSE, wallet.currency), amount),
            credit(_receivable(wallet.customer, wallet.currency), amount),
        ],
        reference_type="wallet.debt",
        reference_id=str(debt.pk),
        memo=note,
    )
    debt.written_off = remaining
    _close(debt, DebtResolution.WRITTEN_OFF, actor)
    debt.save(update_fields=["written_off", "status", "resolution", "repaid_at", "resolved_by"])
    audit_record(
        actor=actor,
        action="wallet.debt_write_off",
        target=debt,
        changes={"written_off": str(amount)},
        note=note,
    )
    return debt


# --- repairs --------------------------------------------------------------------------

OVER_RECOVERY = "wallet.debt_over_recovery"


def _over_recoveries() -> dict[int, int]:
    """Debt id → what the ledger recovered for it beyond ``recovered``, less what was
    already returned to the customer for that (minor units, only the positive ones)."""
    booked = (
        Posting.objects.filter(
            entry__kind="wallet.debt_write_off_recovery",
            entry__reference_type="wallet.debt",
            amount__gt=0,
        )
        .values_list("entry__reference_id")
        .annotate(total=Sum("amount"))
    )
    booked = {int(debt_id): total for debt_id, total in booked}
    if not booked:
        return {}
    returned = dict(
        WalletTransaction.objects.filter(kind=TransactionKind.REFUND, reference_type="wallet.debt")
        .values_list("reference_id")
        .annotate(total=Sum("amount"))
    )
    excess = {}
    for debt_id, recovered in WalletDebt.objects.filter(pk__in=booked).values_list(
        "pk", "recovered"
    ):
        left = booked[debt_id] - recovered - returned.get(str(debt_id), 0)
        if left > 0:
            excess[debt_id] = left
    return excess


def debts_return_over_recoveries(*, actor: AbstractBaseUser | None = None) -> int:
    """Give customers back what returns before issue 12 recovered beyond a write-off.

    Each excess moves from the write-off expense to the wallet (repaying open debts
    first), audited; idempotent. Returns how many debts it repaired.
    """
    repaired = 0
    for debt_id in _over_recoveries():
        with transaction.atomic():
            customer_id = WalletDebt.objects.values_list("wallet__customer_id", flat=True).get(
                pk=debt_id
            )
            wallet, debt = _locked_debt(customer_id=customer_id, debt_id=debt_id)
            excess = _over_recoveries().get(debt_id, 0)
            if excess <= 0:
                continue
            amount = Money(excess, wallet.currency)
            wallet_refund(
                wallet=wallet,
                amount=amount,
                reference_type="wallet.debt",
                reference_id=str(debt.pk),
                actor=actor,
                note="Recovered beyond the write-off by a return before issue 12",
                counterpart=system(Purpose.WRITE_OFF_EXPENSE, wallet.currency),
            )
            audit_record(
                actor=actor,
                action=OVER_RECOVERY,
                target=debt,
                changes={"returned": str(amount)},
            )
            repaired += 1
    return repaired


# --- daily jobs -----------------------------------------------------------------------


OVERDUE_CHUNK = 50_000


def debts_mark_overdue(*, business_date: date, chunk: int = OVERDUE_CHUNK) -> int:
    """Mark every outstanding debt due before ``business_date`` overdue.

    Set-based (``core.db.update_in_chunks``): one UPDATE per ``chunk`` debts, walking the
    ids once, each committed on its own, skipping debts a repayment holds (the next run
    marks them). Listeners of ``debt_overdue`` get each chunk's ids after it commits.
    Returns how many were marked; running it again the same day marks nothing more.
    """

    def notify(ids: list[int]) -> None:
        transaction.on_commit(
            lambda: signals.debt_overdue.send(
                sender=WalletDebt, debt_ids=ids, business_date=business_date
            )
        )

    return update_in_chunks(
        table=WalletDebt._meta.db_table,
        assignments="status = %s, overdue_since = %s",
        assignment_params=[DebtStatus.OVERDUE, business_date],
        where="status = %s AND due_date < %s",
        where_params=[DebtStatus.OUTSTANDING, business_date],
        chunk=chunk,
        on_chunk=notify if signals.debt_overdue.has_listeners(WalletDebt) else None,
    )


def debt_reminders_queue(*, business_date: date, chunk: int = 2000) -> int:
    """Queue one overdue reminder per overdue debt per week it has been overdue.

    The email's dedupe key names the debt and the week, so running this several times a
    day, or twice at once, queues each reminder once.
    """
    conf = bnpl_settings()
    queued = 0
    debts = (
        WalletDebt.objects.filter(status=DebtStatus.OVERDUE)
        .select_related("wallet__customer__user")
        .order_by("pk")
    )
    batch: list[EmailDraft] = []
    for debt in debts.iterator(chunk_size=chunk):
        week = (business_date - (debt.overdue_since or business_date)).days // 7
        owed = debt_amounts(debt, conf, business_date)
        user = debt.wallet.customer.user
        batch.append(
            EmailDraft(
                dedupe_key=f"wallet.debt_overdue:{debt.pk}:week-{week}",
                template="wallet/debt_overdue",
                to=user.email,
                user_id=user.pk,
                subject=f"Your wallet balance is overdue: {Money(owed['total'], debt.currency)}",
                context={
                    "user": user,
                    "debt": debt,
                    "due_date": debt.due_date,
                    "principal": Money(owed["principal"], debt.currency),
                    "interest": Money(owed["interest"], debt.currency),
                    "total": Money(owed["total"], debt.currency),
                },
            )
        )
        if len(batch) >= chunk:
            with transaction.atomic(durable=True):
                queued += email_queue(batch)
            batch = []
    with transaction.atomic(durable=True):
        queued += email_queue(batch)
    return queued


def debt_snapshot_record(*, business_date: date) -> DebtDailySnapshot:
    """Store today's totals for the dashboard chart (replaces the day's earlier figure)."""
    from wallet.selectors import debt_totals

    totals = debt_totals()
    snapshot, _ = DebtDailySnapshot.objects.update_or_create(
        business_date=business_date,
        defaults={
            "currency": bnpl_settings().currency,
            "outstanding": totals["outstanding"],
            "overdue": totals["overdue"],
            "customers_in_debt": totals["customers"],
        },
    )
    return snapshot


# --- withdrawals ----------------------------------------------------------------------


def iban_validate(iban: str) -> str:
    """The IBAN in its compact form, or ``InvalidIban``: its country's length and layout
    (the ISO 13616 registry, as python-stdnum keeps it) and the mod-97 check digits."""
    try:
        return stdnum_iban.validate(iban)
    except StdnumValidationError as exc:
        raise InvalidIban(
            f"Not a valid IBAN: {exc.message}", fields={"iban": [exc.message]}
        ) from None


@transaction.atomic(durable=True)
def wallet_withdraw(
    *,
    customer: Customer,
    amount: Money,
    iban: str,
    actor: AbstractBaseUser | None = None,
    idempotency: IdempotencyClaim | None = None,
) -> Withdrawal:
    """Pay wallet balance out to the customer's bank account.

    Refused without approved KYC when withdrawals need it, and while any debt is open
    when the BNPL setting says so.
    """
    iban = iban_validate(iban)
    customer_require_kyc_for(customer=customer, feature=Feature.WITHDRAWAL)
    Customer.objects.select_for_update(no_key=True).get(pk=customer.pk)
    wallet = wallet_lock(customer_id=customer.pk, currency=amount.currency)
    conf = bnpl_settings()
    if (
        conf.block_withdrawal_while_in_debt
        and WalletDebt.objects.filter(wallet__customer=customer)
        .exclude(status=DebtStatus.REPAID)
        .exists()
    ):
        raise WithdrawalBlocked()
    wallet_ensure_covers(wallet=wallet, amount=amount)
    txn = _move(
        wallet=wallet,
        kind=TransactionKind.WITHDRAWAL,
        direction=Direction.DEBIT,
        amount=amount,
        counterpart=system(Purpose.CASH_CLEARING, amount.currency),
        reference_type="wallet.withdrawal",
        reference_id="",
        actor=actor,
        note=f"To {iban[:4]}…{iban[-4:]}",
    )
    withdrawal = Withdrawal.objects.create(
        wallet=wallet, amount=amount.minor, transaction=txn, iban=iban, created_at=clock.now()
    )
    audit_record(
        actor=actor, action="wallet.withdrawal", target=withdrawal, changes={"amount": str(amount)}
    )
    if idempotency is not None:
        idempotency.complete(withdrawal)
    return withdrawal


# --- settings and switches --------------------------------------------------------------


@transaction.atomic
def customer_auto_deduct_set(
    *, customer: Customer, enabled: bool, actor: AbstractBaseUser | None = None
) -> BnplCustomerProfile:
    profile, _ = BnplCustomerProfile.objects.select_for_update(no_key=True).get_or_create(
        customer=customer
    )
    if profile.auto_deduct != enabled:
        audit_record(
            actor=actor,
            action="wallet.auto_deduct",
            target=profile,
            changes={"auto_deduct": [profile.auto_deduct, enabled]},
        )
        profile.auto_deduct = enabled
        profile.save(update_fields=["auto_deduct"])
    return profile


def bnpl_settings_changed(*, before: dict[str, Any], after: dict[str, Any], actor: Any) -> None:
    """Audit a settings change: one row naming every field that changed, old and new."""
    changes = {k: [str(before.get(k)), str(v)] for k, v in after.items() if before.get(k) != v}
    if changes:
        audit_record(
            actor=actor, action="wallet.bnpl_settings", target=bnpl_settings(), changes=changes
        )
