import json
import time

import pytest
from celery import current_app
from django.test import Client

from core import clock
from payments import crypto, webhooks
from payments.models import PaymentTransaction, Provider, ProviderAccount
from payments.services import provider_webhook_secret_rotate


@pytest.fixture
def eager_celery():
    """Tasks enqueued on commit run at once, in the enqueuing thread."""
    previous = current_app.conf.task_always_eager
    current_app.conf.task_always_eager = True
    yield
    current_app.conf.task_always_eager = previous


@pytest.fixture
def card_account(db):
    now = clock.now()
    account = ProviderAccount.objects.create(
        provider=Provider.CARD,
        enabled=True,
        base_url="http://127.0.0.1:9/card",
        created_at=now,
        updated_at=now,
    )
    account.secret = provider_webhook_secret_rotate(account_id=account.pk)
    return account


@pytest.fixture
def make_payment(card_account):
    def make(reference: str = "pay_1", amount: int = 10000) -> PaymentTransaction:
        return PaymentTransaction.objects.create(
            account=card_account,
            reference_type="oms.order",
            reference_id=reference,
            provider_reference=reference,
            currency="EUR",
            amount=amount,
            created_at=clock.now(),
        )

    return make


def event(
    event_id: str, kind: str, payment_id: str, amount: int, currency: str = "EUR", **data
) -> dict:
    return {
        "id": event_id,
        "type": kind,
        "data": {"payment_id": payment_id, "amount": amount, "currency": currency, **data},
    }


def deliver(
    client: Client,
    payload: dict | bytes,
    secret: str,
    *,
    timestamp: int | None = None,
    header: str | None = None,
    provider: str = "card",
):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {}
    if header is None:
        header = webhooks.signature_header(secret, body, timestamp or int(time.time()))
    if header:
        headers["HTTP_WEBHOOK_SIGNATURE"] = header
    return client.post(f"/webhooks/{provider}/", body, content_type="application/json", **headers)


@pytest.fixture
def account(card_processor):
    return card_processor


@pytest.fixture
def klarna_account(sandbox):
    """A Klarna account pointed at the sandbox."""
    now = clock.now()
    return ProviderAccount.objects.create(
        provider=Provider.KLARNA,
        enabled=True,
        base_url=f"{sandbox}/klarna",
        credentials_encrypted=crypto.encrypt({"id": "K1", "secret": "pw"}),
        created_at=now,
        updated_at=now,
    )
