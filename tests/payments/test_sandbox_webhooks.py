"""The sandbox notifies the app with signed webhooks, over real HTTP both ways."""

import pytest
import requests
from celery import current_app

from core.money import Money
from payments.gateway import Decision
from payments.models import WebhookEvent
from payments.processing import payment_authorize, payment_reconcile
from payments.selectors import payment_amounts
from payments.services import provider_webhook_secret_rotate

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def wired(sandbox, card_processor, live_server):
    secret = provider_webhook_secret_rotate(account_id=card_processor.pk)
    requests.post(
        f"{sandbox}/sandbox/config",
        json={"webhook_url": f"{live_server.url}/webhooks/card/", "webhook_secret": secret},
        timeout=5,
    )
    previous = current_app.conf.task_always_eager
    current_app.conf.task_always_eager = True
    yield
    current_app.conf.task_always_eager = previous


@pytest.mark.parametrize(
    ("decision", "authorized", "outcome"), [("approve", 2500, "succeeded"), ("reject", 0, "failed")]
)
def test_a_reviewed_charge_is_settled_by_the_providers_signed_notification(
    wired, sandbox, card_processor, decision, authorized, outcome
):
    txn, result = payment_authorize(
        account=card_processor,
        reference_type="oms.order",
        reference_id="7",
        amount=Money(2500, "EUR"),
        payment_method="pm_review",
        idempotency_key="auth-rev",
    )
    assert result.decision == Decision.PENDING
    assert payment_amounts(txn).authorized.minor == 0
    review = requests.post(
        f"{sandbox}/sandbox/charges/{result.provider_reference}/review",
        json={"decision": decision},
        timeout=15,
    ).json()
    assert review["webhook_status"] == 200, review
    assert WebhookEvent.objects.get().status == "processed"
    assert payment_amounts(txn).authorized.minor == authorized
    assert txn.events.filter(source="webhook").get().outcome == outcome


@pytest.mark.parametrize(
    ("decision", "status", "notification", "captured", "fact_keys"),
    [
        (
            "approve",
            "captured",
            "payment.captured",
            2500,
            {"charge-rev", "charge-rev:result", "charge-rev:capture"},
        ),
        (
            "reject",
            "declined",
            "payment.authorization_failed",
            0,
            {"charge-rev", "charge-rev:result"},
        ),
    ],
)
def test_a_reviewed_off_session_charge_is_captured_on_approval(
    wired, sandbox, card_processor, decision, status, notification, captured, fact_keys
):
    """A charge asked with capture is captured when its review approves it, as a processor
    does; the notification says so and the app records the one capture."""
    txn, result = payment_authorize(
        account=card_processor,
        reference_type="tests.off_session",
        reference_id="8",
        amount=Money(2500, "EUR"),
        payment_method="pm_review",
        idempotency_key="charge-rev",
        capture=True,
    )
    assert result.decision == Decision.PENDING
    review = requests.post(
        f"{sandbox}/sandbox/charges/{result.provider_reference}/review",
        json={"decision": decision},
        timeout=15,
    ).json()
    assert review["webhook_status"] == 200, review
    assert (review["charge"]["status"], review["charge"]["amount_captured"]) == (status, captured)
    notice = WebhookEvent.objects.get()
    assert (notice.event_type, notice.status) == (notification, "processed")
    amounts = payment_amounts(txn)
    assert (amounts.authorized.minor, amounts.captured.minor) == (captured, captured)
    assert set(txn.events.values_list("idempotency_key", flat=True)) == fact_keys
    assert payment_reconcile(transaction_id=txn.pk) == 0  # the notification answered it
