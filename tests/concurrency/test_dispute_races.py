"""Two notifications of one dispute at once: one record, at most one chargeback."""

from __future__ import annotations

import pytest
from celery import current_app

from ledger.models import JournalEntry
from oms.models import Dispute, DisputeStatus
from oms.services import order_fulfil
from payments.models import PaymentTransaction, WebhookEvent
from payments.services import provider_webhook_secret_rotate
from tests.factories import line, saved_card
from tests.oms.dispute_helpers import (
    deliver,
    dispute_data,
    down_payment_charge,
    place_financed_order,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def secret(card_processor):
    previous = current_app.conf.task_always_eager
    current_app.conf.task_always_eager = True  # processing runs on commit, in each thread
    yield provider_webhook_secret_rotate(account_id=card_processor.pk)
    current_app.conf.task_always_eager = previous


def card_sale(customer, customer_api, stock) -> PaymentTransaction:
    stock("A", 10)
    saved_card(customer, "pm_card")
    body = customer_api.post(
        "/api/v1/orders",
        {
            "payment_method": "wallet_card",
            "card_payment_method": "pm_card",
            "lines": [line("A", 1, "650.00")],
        },
        format="json",
    ).json()
    order_fulfil(order_id=body["id"])  # the card's 150.00 is captured
    return PaymentTransaction.objects.get(reference_type="oms.order", reference_id=body["id"])


@pytest.mark.parametrize(
    ("sale", "kind"), [("card", "oms.chargeback"), ("installment", "bnpl.installment_charged_back")]
)
def test_two_lost_notifications_of_one_dispute_at_once_book_one_chargeback(
    sale, kind, customer, customer_api, stock, secret, concurrently
):
    if sale == "card":
        charge = card_sale(customer, customer_api, stock)
    else:
        charge = down_payment_charge(place_financed_order(customer, customer_api, stock))
    data = dispute_data(charge, "lost", "dp_race")

    answers = concurrently(
        2, lambda i: deliver(secret, f"evt_race_{i}", "dispute.closed", data).status_code
    )

    assert answers == [200, 200]
    dispute = Dispute.objects.get()
    assert (dispute.status, dispute.charged_back) == (DisputeStatus.LOST, 7_500)
    assert JournalEntry.objects.filter(kind=kind).count() == 1
    assert set(WebhookEvent.objects.values_list("status", flat=True)) == {"processed"}
