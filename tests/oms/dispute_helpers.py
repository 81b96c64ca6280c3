"""Shared by the dispute tests: a financed order, the sandbox's notifications wired to the
live app, and the card processor's dispute notifications."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import requests
from celery import current_app
from django.test import Client

from bnpl.models import Plan
from oms.models import Order
from payments import webhooks
from payments.models import PaymentTransaction
from payments.services import provider_webhook_secret_rotate
from tests.bnpl.factories import make_product
from tests.factories import approve_kyc, line, saved_card


def wire_card_notifications(sandbox, card_processor, live_server):
    """The sandbox signs its notifications with the account's secret and sends them to
    the live app; the app's tasks run at once."""
    secret = provider_webhook_secret_rotate(account_id=card_processor.pk)
    requests.post(
        f"{sandbox}/sandbox/config",
        json={"webhook_url": f"{live_server.url}/webhooks/card/", "webhook_secret": secret},
        timeout=5,
    )
    previous = current_app.conf.task_always_eager
    current_app.conf.task_always_eager = True
    yield secret
    current_app.conf.task_always_eager = previous


def place_financed_order(customer, customer_api, stock) -> Order:
    """A confirmed 300.00 order on a pay-in-3 plan: 75.00 charged at checkout."""
    approve_kyc(customer)
    saved_card(customer, "pm_card_ok")
    make_product(
        code="pay-in-3",
        down_payment="percent",
        down_payment_percent=Decimal(25),
        min_amount=1_000,
        max_amount=500_000,
    )
    stock("A", 10)
    saved_card(customer, "pm_card_ok")
    response = customer_api.post(
        "/api/v1/orders",
        {
            "payment_method": "installments",
            "lines": [line("A", 1, "300.00")],
            "plan_product": "pay-in-3",
            "card_payment_method": "pm_card_ok",
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    return Order.objects.get(pk=response.json()["id"])


def plan_of(order: Order) -> Plan:
    return Plan.objects.get(reference_type="oms.order", reference_id=str(order.pk))


def down_payment_charge(order: Order) -> PaymentTransaction:
    installment = plan_of(order).installments.get(number=0)
    return PaymentTransaction.objects.get(
        reference_type="bnpl.installment", reference_id=str(installment.pk)
    )


def dispute_at_processor(sandbox: str, charge: str, **body) -> dict:
    answer = requests.post(
        f"{sandbox}/sandbox/charges/{charge}/dispute", json=body, timeout=15
    ).json()
    assert answer["webhook_status"] == 200, answer
    return answer["dispute"]


def close_at_processor(sandbox: str, dispute_id: str, outcome: str) -> dict:
    answer = requests.post(
        f"{sandbox}/sandbox/disputes/{dispute_id}/close", json={"outcome": outcome}, timeout=15
    ).json()
    assert answer["webhook_status"] == 200, answer
    return answer["dispute"]


def deliver(secret: str, event_id: str, kind: str, data: dict):
    """A signed card processor notification, as the sandbox sends it."""
    body = json.dumps({"id": event_id, "type": kind, "data": data}).encode()
    return Client().post(
        "/webhooks/card/",
        body,
        content_type="application/json",
        HTTP_WEBHOOK_SIGNATURE=webhooks.signature_header(secret, body, int(time.time())),
    )


def dispute_data(charge: PaymentTransaction, status: str, dispute_id: str = "dp_900") -> dict:
    return {
        "dispute_id": dispute_id,
        "payment_id": charge.provider_reference,
        "amount": 7_500,
        "currency": "EUR",
        "reason": "product_not_received",
        "status": status,
    }
