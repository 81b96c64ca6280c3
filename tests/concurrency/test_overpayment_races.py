"""Settlements of installment and payoff captures never wait for a customer or a wallet.

A settlement runs with a payment transaction locked and locks ledger accounts; the customer
and the wallet come first in the lock order (a wallet payment holds the wallet, then locks
ledger accounts), so a settlement that waited for them could deadlock. Here another
connection holds the lock; the settlement must finish under a lock timeout without it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime

import pytest
from django.db import connection, connections, transaction

from bnpl import servicing, tasks
from bnpl.models import Plan, PlanStatus
from bnpl.services import installments_settle, plan_receivable
from core import clock
from core.money import Money
from customers.models import Customer
from ledger.models import Purpose
from ledger.services import system
from payments import crypto
from payments.events import Settlement
from payments.models import PaymentTransaction, Provider, ProviderAccount
from tests.bnpl.factories import make_plan
from tests.factories import ChannelFactory, fund, make_customer
from wallet.models import Wallet
from wallet.services import wallet_lock

# Row locks and lock_timeout are PostgreSQL's; SQLite locks the whole file.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]


def eur(amount: str) -> Money:
    return Money.parse(amount, "EUR")


@contextmanager
def held_by_another_connection(lock: Callable[[], object]) -> Iterator[None]:
    """``lock()`` runs in a thread with its own connection, whose transaction holds what it
    locked until the block ends."""
    held, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def hold() -> None:
        try:
            with transaction.atomic():
                lock()
                held.set()
                release.wait()
        except BaseException as exc:
            errors.append(exc)
            held.set()
        finally:
            connections.close_all()

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait()
    try:
        yield
    finally:
        release.set()
        thread.join()
    assert not errors, errors


def no_waiting_for_locks() -> None:
    """In the current transaction, a lock still held elsewhere after a while is an error."""
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL lock_timeout = '3s'")


@pytest.fixture
def borrower():
    ChannelFactory(code="web")
    customer = make_customer()
    fund(customer, "500.00")
    plan = make_plan(customer=customer, amount="300.00", start_date=date(2026, 1, 10))
    return customer, plan


def wallet_balance(customer) -> int:
    return Wallet.objects.select_related("account").get(customer=customer).account.balance


def test_an_overpayment_the_batch_did_not_foresee_does_not_wait_for_the_wallet(borrower):
    """Two captures for one installment in one chunk: each alone fits what is owed, the
    second overpays. The wallet is held by a wallet payment (customer → wallet → ledger)."""
    customer, plan = borrower
    first = plan.installments.get(number=1)
    clearing = system(Purpose.GATEWAY_CLEARING, "EUR")
    batch = [
        Settlement(9101, str(first.pk), "capture", eur("100.00"), clearing),
        Settlement(9102, str(first.pk), "capture", eur("100.00"), clearing),
    ]

    hold_wallet = held_by_another_connection(
        lambda: wallet_lock(customer_id=customer.pk, currency="EUR")
    )
    with hold_wallet, transaction.atomic():
        no_waiting_for_locks()
        installments_settle(batch)

    # The second capture is a credit on the receivable until the return task runs.
    assert plan_receivable(customer_id=customer.pk, currency="EUR").balance == 20_000 - 10_000
    assert tasks.plan_credit_return(customer.pk, "EUR") == 10_000
    assert wallet_balance(customer) == 50_000 + 10_000
    assert plan_receivable(customer_id=customer.pk, currency="EUR").balance == 20_000


def test_a_payoff_capture_beyond_the_quote_does_not_wait_for_the_customer(borrower):
    customer, plan = borrower
    now = clock.now()
    account = ProviderAccount.objects.create(
        provider=Provider.CARD,
        enabled=True,
        base_url="http://127.0.0.1:9/card",
        credentials_encrypted=crypto.encrypt({"secret": "sk_test_sandbox"}),
        created_at=now,
        updated_at=now,
    )
    payment = PaymentTransaction.objects.create(
        account=account,
        reference_type=servicing.PAYOFF_REFERENCE,
        reference_id=str(plan.pk),
        currency="EUR",
        amount=40_000,
        created_at=now,
    )
    clearing = system(Purpose.GATEWAY_CLEARING, "EUR")
    lock_customer = Customer.objects.select_for_update(no_key=True).filter(pk=customer.pk)

    jan_10 = clock.travel_to(datetime(2026, 1, 10, 12, tzinfo=UTC))
    with held_by_another_connection(lambda: list(lock_customer)), jan_10, transaction.atomic():
        no_waiting_for_locks()
        servicing.plan_payoff_settle(
            payment=payment, kind="capture", amount=eur("400.00"), clearing=clearing
        )

    assert Plan.objects.get(pk=plan.pk).status == PlanStatus.COMPLETED
    assert tasks.plan_credit_return(customer.pk, "EUR") == 10_000
    assert wallet_balance(customer) == 50_000 + 10_000
