"""An off-session charge's capture is one fact, whatever route reports it.

``payment_authorize(capture=True)`` records the capture under ``"<request key>:capture"``
when the answer comes in time; the provider's signed ``payment.captured`` notification and
the reconciler's read-back must land on that key, or the money is counted (and booked)
twice.
"""

import pytest
import requests
from django.test import Client

from core.money import Money
from ledger.models import JournalEntry
from payments.gateway import Decision
from payments.models import EventKind, PaymentTransaction, WebhookEvent
from payments.processing import payment_authorize, payment_reconcile
from payments.selectors import payment_amounts
from payments.services import provider_webhook_secret_rotate
from tests.payments.conftest import deliver, event

pytestmark = pytest.mark.django_db

# No owner registers for it: captures take the default booking (clearing → merchant).
REFERENCE = "tests.off_session"


def charge(account, payment_method: str, key: str, *, capture: bool = True):
    return payment_authorize(
        account=account,
        reference_type=REFERENCE,
        reference_id=key,
        amount=Money(3000, "EUR"),
        payment_method=payment_method,
        idempotency_key=key,
        capture=capture,
    )


def notify(account, on_commit, event_id: str, kind: str, txn, request_id: str) -> WebhookEvent:
    """Deliver a signed notification about ``txn`` and process it."""
    secret = provider_webhook_secret_rotate(account_id=account.pk)
    with on_commit(execute=True):
        response = deliver(
            Client(),
            event(event_id, kind, txn.provider_reference, 3000, request_id=request_id),
            secret,
        )
    assert response.status_code == 200, response.content
    return WebhookEvent.objects.get(event_id=event_id)


def capture_entries(txn) -> int:
    return JournalEntry.objects.filter(
        kind="payments.capture", reference_type="payments.transaction", reference_id=str(txn.pk)
    ).count()


def keys(txn) -> set[str]:
    return set(txn.events.values_list("idempotency_key", flat=True))


def test_a_captured_notification_for_a_charge_already_answered_changes_nothing(
    account, eager_celery, django_capture_on_commit_callbacks
):
    txn, result = charge(account, "pm_card", "offs-1")
    assert result.decision == Decision.APPROVED
    assert payment_amounts(txn).captured == Money(3000, "EUR")

    notice = notify(
        account, django_capture_on_commit_callbacks, "evt-c1", "payment.captured", txn, "offs-1"
    )
    assert notice.status == WebhookEvent.Status.PROCESSED
    amounts = payment_amounts(txn)
    assert (amounts.authorized.minor, amounts.captured.minor) == (3000, 3000)  # not 6000
    assert keys(txn) == {"offs-1", "offs-1:result", "offs-1:capture"}
    assert capture_entries(txn) == 1  # the money is booked once
    assert not PaymentTransaction.objects.get(pk=txn.pk).flagged


@pytest.mark.parametrize("first", ["notification", "read_back"])
def test_a_reviewed_charge_is_captured_once_by_notification_and_read_back(
    account, sandbox, eager_celery, django_capture_on_commit_callbacks, first
):
    txn, result = charge(account, "pm_review", "offs-2")
    assert result.decision == Decision.PENDING
    txn.refresh_from_db()
    # The review is approved at the processor; no webhook URL is configured, so the app
    # hears of it by whichever route the test takes first.
    approved = requests.post(
        f"{sandbox}/sandbox/charges/{txn.provider_reference}/review",
        json={"decision": "approve"},
        timeout=15,
    ).json()
    assert approved["charge"]["status"] == "captured"
    assert approved["webhook_status"] == 0  # not delivered

    def by_notification():
        notify(
            account,
            django_capture_on_commit_callbacks,
            "evt-c2",
            "payment.captured",
            txn,
            "offs-2",
        )

    def by_read_back():
        payment_reconcile(transaction_id=txn.pk)

    routes = [by_notification, by_read_back]
    for route in routes if first == "notification" else reversed(routes):
        route()
        amounts = payment_amounts(txn)
        assert (amounts.authorized.minor, amounts.captured.minor) == (3000, 3000)
        assert keys(txn) == {"offs-2", "offs-2:result", "offs-2:capture"}
        assert capture_entries(txn) == 1
    assert payment_reconcile(transaction_id=txn.pk) == 0  # nothing left open
    assert not PaymentTransaction.objects.get(pk=txn.pk).flagged


def test_a_capture_notification_for_a_plain_authorization_is_a_capture_of_its_own(
    account, eager_celery, django_capture_on_commit_callbacks
):
    """Only an off-session charge request (sent with capture) has a capture fact of its
    own; a capture reported against an authorization-only request is another fact."""
    txn, result = charge(account, "pm_card", "auth-3", capture=False)
    assert result.decision == Decision.APPROVED
    notify(account, django_capture_on_commit_callbacks, "evt-c3", "payment.captured", txn, "auth-3")
    (captured,) = txn.events.filter(kind=EventKind.CAPTURE)
    assert captured.idempotency_key == "webhook:evt-c3"
    assert payment_amounts(txn).captured == Money(3000, "EUR")
    assert capture_entries(txn) == 1
