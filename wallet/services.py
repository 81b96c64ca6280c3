"""Every write to wallets. Money moves only through ``ledger_post``.

Lock order (ARCHITECTURE.md): customer → wallet → order → … → ledger accounts.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from core import clock
from core.audit import audit_record
from core.money import Money
from customers.models import Customer
from ledger.models import Account, Purpose
from ledger.services import account_get_or_create, credit, debit, ledger_post, system_account
from wallet.errors import InsufficientBalance, InvalidCreditReason
from wallet.models import Direction, TransactionKind, Wallet, WalletTransaction

# Where the money of each kind of credit comes from.
CREDIT_SOURCES: dict[str, Purpose] = {
    TransactionKind.TOP_UP: Purpose.CASH_CLEARING,
    TransactionKind.GOODWILL: Purpose.GOODWILL_EXPENSE,
    TransactionKind.CASHBACK: Purpose.GOODWILL_EXPENSE,
}


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
    stale balance on the joined account.
    """
    return (
        Wallet.objects.select_for_update()
        .select_related("account")
        .filter(customer_id=customer_id, currency=currency)
        .first()
    )


def _move(
    *,
    wallet: Wallet,
    kind: TransactionKind,
    direction: Direction,
    amount: Money,
    counterpart: Account,
    reference_type: str,
    reference_id: str,
    actor: AbstractBaseUser | None = None,
    note: str = "",
    idempotency_key: str | None = None,
) -> WalletTransaction:
    """Move ``amount`` between a locked wallet and ``counterpart``.

    One balanced journal entry and one activity row, in the caller's transaction.
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
    return WalletTransaction.objects.create(
        wallet=wallet,
        kind=kind,
        direction=direction,
        amount=amount.minor,
        balance_after=wallet.account.balance + (amount.minor if into_wallet else -amount.minor),
        journal_entry=entry,
        reference_type=reference_type,
        reference_id=str(reference_id),
        idempotency_key=idempotency_key,
        actor=actor if getattr(actor, "is_authenticated", False) else None,
        note=note[:255],
        created_at=clock.now(),
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

    Idempotent per wallet and ``idempotency_key``: a repeat returns the first credit.
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
    customer = Customer.objects.select_for_update().get(pk=customer_id)
    wallet_get_or_create(customer=customer, currency=amount.currency)
    wallet = wallet_lock(customer_id=customer_id, currency=amount.currency)
    existing = WalletTransaction.objects.filter(
        wallet=wallet, idempotency_key=idempotency_key
    ).first()
    if existing is not None:
        return existing
    txn = _move(
        wallet=wallet,
        kind=kind,
        direction=Direction.CREDIT,
        amount=amount,
        counterpart=system_account(CREDIT_SOURCES[kind], amount.currency),
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
        changes={
            "amount": str(amount),
            "balance_after": str(Money(txn.balance_after, amount.currency)),
        },
        note=note,
    )
    return txn


def wallet_ensure_covers(*, wallet: Wallet | None, amount: Money) -> None:
    """Raise ``wallet.insufficient_balance``, with the figures, unless the wallet covers it."""
    balance = wallet.balance if wallet is not None else Money.zero(amount.currency)
    if balance >= amount:
        return
    short = amount - balance
    raise InsufficientBalance(
        f"The wallet holds {balance}; this order needs {amount} ({short} short).",
        extra={
            "balance": {"amount": balance.amount_str(), "currency": balance.currency},
            "required": {"amount": amount.amount_str(), "currency": amount.currency},
            "shortfall": {"amount": short.amount_str(), "currency": short.currency},
            "options": ["top_up"],
        },
    )


def wallet_pay(
    *,
    wallet: Wallet | None,
    amount: Money,
    reference_type: str,
    reference_id: str,
    actor: AbstractBaseUser | None = None,
) -> WalletTransaction:
    """Pay ``amount`` from a wallet locked by ``wallet_lock``, inside the caller's transaction.

    The money goes to the merchant account. A short balance raises
    ``wallet.insufficient_balance`` with the figures; nothing is written.
    """
    wallet_ensure_covers(wallet=wallet, amount=amount)
    return _move(
        wallet=wallet,
        kind=TransactionKind.PAYMENT,
        direction=Direction.DEBIT,
        amount=amount,
        counterpart=system_account(Purpose.MERCHANT, amount.currency),
        reference_type=reference_type,
        reference_id=reference_id,
        actor=actor,
    )


def wallet_refund(
    *,
    wallet: Wallet,
    amount: Money,
    reference_type: str,
    reference_id: str,
    actor: AbstractBaseUser | None = None,
    note: str = "",
) -> WalletTransaction:
    """Give ``amount`` of a paid order back to a wallet locked by ``wallet_lock``."""
    return _move(
        wallet=wallet,
        kind=TransactionKind.REFUND,
        direction=Direction.CREDIT,
        amount=amount,
        counterpart=system_account(Purpose.MERCHANT, amount.currency),
        reference_type=reference_type,
        reference_id=reference_id,
        actor=actor,
        note=note,
    )
