"""1,000 signed notifications, each delivered 3 times, shuffled, 8 at a time."""

import random
from concurrent.futures import ThreadPoolExecutor

import pytest
from celery import current_app
from django.db import connections
from django.test import Client

from core import clock
from payments.models import (
    PaymentEvent,
    PaymentTransaction,
    Provider,
    ProviderAccount,
    WebhookEvent,
)
from payments.selectors import payment_amounts
from payments.services import provider_webhook_secret_rotate
from tests.payments.conftest import deliver, event

pytestmark = pytest.mark.django_db(transaction=True)


def test_each_of_1000_events_delivered_3_times_is_processed_exactly_once():
    now = clock.now()
    account = ProviderAccount.objects.create(
        provider=Provider.CARD,
        enabled=True,
        base_url="http://127.0.0.1:9/card",
        created_at=now,
        updated_at=now,
    )
    secret = provider_webhook_secret_rotate(account_id=account.pk)
    payments = 250
    PaymentTransaction.objects.bulk_create(
        PaymentTransaction(
            account=account,
            reference_type="oms.order",
            reference_id=str(i),
            provider_reference=f"pay_{i}",
            currency="EUR",
            amount=10000,
            created_at=now,
        )
        for i in range(payments)
    )
    # Four facts a payment, 1,000 in all: authorized, two partial captures, a refund.
    events = []
    for i in range(payments):
        events += [
            event(f"evt_{i}_a", "payment.authorized", f"pay_{i}", 10000),
            event(f"evt_{i}_c1", "payment.captured", f"pay_{i}", 3000),
            event(f"evt_{i}_c2", "payment.captured", f"pay_{i}", 2000 + i),
            event(f"evt_{i}_r", "payment.refunded", f"pay_{i}", 500),
        ]
    deliveries = events * 3
    random.Random(1234).shuffle(deliveries)

    def send(payload: dict) -> int:
        try:
            return deliver(Client(), payload, secret).status_code
        finally:
            connections.close_all()

    previous = current_app.conf.task_always_eager
    current_app.conf.task_always_eager = True  # processing runs on commit, in each thread
    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(pool.map(send, deliveries))
    finally:
        current_app.conf.task_always_eager = previous

    assert statuses == [200] * 3000
    assert WebhookEvent.objects.count() == 1000
    assert WebhookEvent.objects.filter(status="processed").count() == 1000
    assert PaymentEvent.objects.count() == 1000
    # The same state one in-order delivery gives, for every payment.
    for txn in PaymentTransaction.objects.all():
        i = int(txn.reference_id)
        amounts = payment_amounts(txn)
        assert (amounts.authorized.minor, amounts.captured.minor, amounts.refunded.minor) == (
            10000,
            5000 + i,
            500,
        )
        assert amounts.status == "partially_refunded"
    assert not PaymentTransaction.objects.filter(flagged=True).exists()
