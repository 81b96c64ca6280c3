import json
import time
from datetime import timedelta

import pytest
from django.test import Client

from core import clock
from payments import webhooks
from payments.models import PaymentEvent, PaymentTransaction, ProviderAccount, WebhookEvent
from payments.selectors import payment_amounts
from payments.services import provider_webhook_secret_rotate
from tests.payments.conftest import deliver, event

pytestmark = pytest.mark.django_db


def test_only_the_validly_signed_delivery_is_accepted(
    card_account, make_payment, eager_celery, django_capture_on_commit_callbacks
):
    make_payment("pay_1")
    client, secret = Client(), card_account.secret
    payload = event("evt_1", "payment.authorized", "pay_1", 10000)
    body = json.dumps(payload).encode()
    now = int(time.time())
    tampered = body.replace(b"10000", b"10001")
    assert len(tampered) == len(body)
    vectors = {
        "tampered body": (
            deliver(client, tampered, secret, header=webhooks.signature_header(secret, body, now)),
            "webhooks.signature_invalid",
        ),
        "wrong secret": (deliver(client, body, "whsec_wrong"), "webhooks.signature_invalid"),
        # Well past the 300 s tolerance: a slow run must not bring "late" back within it.
        "400 s early": (
            deliver(client, body, secret, timestamp=now - 400),
            "webhooks.timestamp_out_of_tolerance",
        ),
        "400 s late": (
            deliver(client, body, secret, timestamp=now + 400),
            "webhooks.timestamp_out_of_tolerance",
        ),
        "missing header": (deliver(client, body, secret, header=""), "webhooks.signature_missing"),
        "malformed header": (
            deliver(client, body, secret, header="v1=abc"),
            "webhooks.signature_malformed",
        ),
    }
    for name, (response, code) in vectors.items():
        assert response.status_code == 400, name
        assert response.json()["error"]["code"] == code, name
    assert WebhookEvent.objects.count() == 0

    with django_capture_on_commit_callbacks(execute=True):
        valid = deliver(client, body, secret)
    assert (valid.status_code, valid.json()["duplicate"]) == (200, False)
    assert WebhookEvent.objects.get().status == WebhookEvent.Status.PROCESSED
    with django_capture_on_commit_callbacks(execute=True):
        replay = deliver(client, body, secret)
    assert (replay.status_code, replay.json()["duplicate"]) == (200, True)
    assert WebhookEvent.objects.count() == 1
    assert PaymentEvent.objects.count() == 1


def test_both_secrets_verify_during_a_rotation_and_only_the_new_one_after(card_account):
    old = card_account.secret
    new = provider_webhook_secret_rotate(account_id=card_account.pk)
    client = Client()
    assert deliver(client, event("e1", "payment.authorized", "x", 1), old).status_code == 200
    assert deliver(client, event("e2", "payment.authorized", "x", 1), new).status_code == 200
    with clock.travel(timedelta(hours=card_account.rotation_overlap_hours, minutes=1)):
        stale = deliver(client, event("e3", "payment.authorized", "x", 1), old)
        assert stale.json()["error"]["code"] == "webhooks.signature_invalid"
        assert deliver(client, event("e4", "payment.authorized", "x", 1), new).status_code == 200


def test_unknown_provider_and_malformed_events_are_refused(card_account):
    client = Client()
    assert (
        deliver(
            client, event("e", "payment.authorized", "x", 1), card_account.secret, provider="klarna"
        ).status_code
        == 404
    )
    missing_id = deliver(client, {"type": "payment.authorized"}, card_account.secret)
    assert (missing_id.status_code, missing_id.json()["error"]["code"]) == (
        400,
        "webhooks.malformed_event",
    )
    not_json = deliver(client, b"{nope", card_account.secret)
    assert not_json.status_code == 400
    assert WebhookEvent.objects.count() == 0


def test_a_capture_before_its_authorization_ends_in_the_right_state(
    card_account, make_payment, eager_celery, django_capture_on_commit_callbacks
):
    payment = make_payment("pay_9")
    client = Client()
    with django_capture_on_commit_callbacks(execute=True):
        deliver(client, event("c1", "payment.captured", "pay_9", 4000), card_account.secret)
    assert payment_amounts(payment).captured.minor == 4000  # recorded, whatever the order
    with django_capture_on_commit_callbacks(execute=True):
        deliver(client, event("a1", "payment.authorized", "pay_9", 10000), card_account.secret)
        deliver(client, event("r1", "payment.refunded", "pay_9", 1000), card_account.secret)
    amounts = payment_amounts(payment)
    assert (amounts.authorized.minor, amounts.captured.minor, amounts.refunded.minor) == (
        10000,
        4000,
        1000,
    )
    assert amounts.status == "partially_refunded"


def test_amounts_that_do_not_match_ours_are_flagged_not_accepted_silently(
    card_account, make_payment, eager_celery, django_capture_on_commit_callbacks
):
    from core.money import Money
    from payments.models import EventKind, Outcome, Source
    from payments.services import payment_event_record

    payment = make_payment("pay_7")
    payment_event_record(
        transaction_id=payment.pk,
        kind=EventKind.AUTHORIZATION,
        outcome=Outcome.REQUESTED,
        amount=Money(10000, "EUR"),
        idempotency_key="auth-1",
        source=Source.API,
    )
    with django_capture_on_commit_callbacks(execute=True):
        deliver(
            Client(),
            event("a7", "payment.authorized", "pay_7", 9999, request_id="auth-1"),
            card_account.secret,
        )
        deliver(
            Client(),
            event("c7", "payment.captured", "pay_7", 100, currency="USD"),
            card_account.secret,
        )
    payment = PaymentTransaction.objects.get(pk=payment.pk)
    assert payment.flagged
    assert "reported as 99.99 EUR but 100.00 EUR was asked (auth-1)" in payment.flag_reason
    assert "reported in USD, transaction is in EUR" in payment.flag_reason


def test_an_event_for_an_unknown_payment_is_kept_as_failed_and_can_be_processed_again(
    card_account, make_payment, eager_celery, django_capture_on_commit_callbacks, admin_client
):
    from django.urls import reverse

    with django_capture_on_commit_callbacks(execute=True):
        deliver(
            Client(), event("early", "payment.authorized", "pay_late", 500), card_account.secret
        )
    stored = WebhookEvent.objects.get()
    assert (stored.status, stored.last_error) == ("failed", "no transaction 'pay_late'")
    make_payment("pay_late", amount=500)
    admin_client.post(
        reverse("admin:payments_webhookevent_changelist"),
        {"action": "process_again", "_selected_action": [stored.pk]},
    )
    assert WebhookEvent.objects.get().status == "processed"
    assert payment_amounts(PaymentTransaction.objects.get()).authorized.minor == 500


@pytest.mark.parametrize("provider", ["card", "lending_partner"])
@pytest.mark.parametrize(
    "header",
    [
        "t={now},v1=é",  # a non-ASCII signature
        "t={now},v1=" + "é" * 64,
        "t=١٢٣,v1=abc",  # Arabic-Indic digits in the timestamp
        "t={now},v1=abc\u00ff",
    ],
)
def test_a_non_ascii_signature_header_is_a_400_envelope(provider, header, unchanged_db):
    now = clock.now()
    account = ProviderAccount.objects.create(
        provider=provider,
        enabled=True,
        base_url="http://127.0.0.1:9/x",
        created_at=now,
        updated_at=now,
    )
    secret = provider_webhook_secret_rotate(account_id=account.pk)
    body = json.dumps(event("evt_x", "payment.authorized", "pay_x", 100)).encode()
    check = unchanged_db()
    response = deliver(
        Client(), body, secret, header=header.format(now=int(time.time())), provider=provider
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] in {
        "webhooks.signature_malformed",
        "webhooks.signature_invalid",
    }
    check()
