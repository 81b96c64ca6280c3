"""Wallet BNPL races against committed rows: threads with their own connections."""

from collections import Counter

import pytest
from django.db.models import Sum
from rest_framework.test import APIClient

from tests.factories import (
    ChannelFactory,
    StockItemFactory,
    approve_kyc,
    borrow,
    enable_wallet_bnpl,
    fund,
    line,
    make_customer,
    money,
    token_for,
)
from tests.wallet.conftest import receivable_matches_debts
from wallet.models import DebtStatus, Wallet, WalletDebt, WalletTransaction
from wallet.services import customer_auto_deduct_set

pytestmark = pytest.mark.django_db(transaction=True)


def client_for(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def test_twenty_concurrent_checkouts_never_push_debt_past_the_cap(concurrently):
    ChannelFactory(code="web")
    StockItemFactory(sku="ITEM", on_hand=1000)
    enable_wallet_bnpl(max_debt_per_user=10000)  # 100.00
    customer = approve_kyc(make_customer())
    token = token_for(customer)

    def buy(i: int):
        response = client_for(token).post(
            "/api/v1/orders",
            {"payment_method": "wallet", "lines": [line("ITEM", 1, "15.00")]},
            format="json",
        )
        return response.status_code, response.json()

    results = concurrently(20, buy)
    assert Counter(status for status, _ in results) == {201: 6, 422: 14}, results
    assert all(
        [r["code"] for r in body["error"]["bnpl_reasons"]] == ["cap_exceeded"]
        for status, body in results
        if status == 422
    )
    total = WalletDebt.objects.aggregate(total=Sum("principal"))["total"]
    assert total == 9000 <= 10000
    receivable_matches_debts(customer)


def test_concurrent_top_ups_and_manual_repayments_never_repay_twice_or_lose_money(concurrently):
    ChannelFactory(code="web")
    enable_wallet_bnpl()
    customer = approve_kyc(make_customer())
    debt_id = borrow(customer, "50.00")
    customer_auto_deduct_set(customer=customer, enabled=False)
    fund(customer, "100.00")
    customer_auto_deduct_set(customer=customer, enabled=True)
    token = token_for(customer)

    def act(i: int):
        if i % 2:
            fund(customer, "5.00")  # auto-deduct repays what is left, first
            return "top_up", 201
        response = client_for(token).post(
            f"/api/v1/wallet/debts/{debt_id}/repay", {"amount": money("10.00")}, format="json"
        )
        return "repay", response.status_code

    results = concurrently(20, act)
    repays = Counter(status for kind, status in results if kind == "repay")
    assert set(repays) <= {200, 409, 422}, results

    debt = WalletDebt.objects.get(pk=debt_id)
    assert debt.status == DebtStatus.REPAID
    assert debt.principal_repaid == 5000  # repaid exactly once in total
    repaid = WalletTransaction.objects.filter(kind="bnpl_repayment").aggregate(total=Sum("amount"))[
        "total"
    ]
    assert repaid == 5000
    # No credit lost: 100.00 + 10 × 5.00 in, 50.00 repaid, the rest in the balance.
    assert Wallet.objects.get(customer=customer).balance.minor == 10000 + 10 * 500 - 5000
    receivable_matches_debts(customer)


def test_two_concurrent_daily_runs_queue_each_reminder_once(concurrently):
    from datetime import timedelta

    from core import clock
    from core.models import OutboundEmail
    from wallet.tasks import daily_debt_run

    ChannelFactory(code="web")
    enable_wallet_bnpl()
    customers = [approve_kyc(make_customer()) for _ in range(5)]
    debts = [borrow(customer, "10.00") for customer in customers]
    day = (clock.business_date() + timedelta(days=31)).isoformat()

    results = concurrently(4, lambda i: daily_debt_run(business_date=day))
    assert sum(r["marked_overdue"] for r in results) == 5
    keys = sorted(OutboundEmail.objects.values_list("dedupe_key", flat=True))
    assert keys == sorted(f"wallet.debt_overdue:{pk}:week-0" for pk in debts)


@pytest.mark.postgres  # SKIP LOCKED; SQLite has one writer at a time
def test_overdue_marking_skips_a_debt_being_repaid_instead_of_waiting_for_it():
    import threading
    from datetime import timedelta

    from django.db import connections, transaction

    from core import clock
    from wallet.services import debts_mark_overdue

    ChannelFactory(code="web")
    enable_wallet_bnpl()
    customer = approve_kyc(make_customer())
    held, *others = [borrow(customer, "10.00") for _ in range(4)]
    locked, release = threading.Event(), threading.Event()

    def hold_like_a_repayment() -> None:
        try:
            with transaction.atomic():
                WalletDebt.objects.select_for_update().get(pk=held)
                locked.set()
                release.wait(timeout=30)
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold_like_a_repayment)
    holder.start()
    try:
        assert locked.wait(timeout=10)
        day = clock.business_date() + timedelta(days=31)
        assert debts_mark_overdue(business_date=day) == 3  # did not wait for the held one
        assert WalletDebt.objects.get(pk=held).status == DebtStatus.OUTSTANDING
    finally:
        release.set()
        holder.join()
    assert debts_mark_overdue(business_date=day) == 1  # the next run takes it
    assert set(WalletDebt.objects.values_list("status", flat=True)) == {DebtStatus.OVERDUE}
    assert sorted(others) == sorted(
        WalletDebt.objects.exclude(pk=held).values_list("pk", flat=True)
    )
