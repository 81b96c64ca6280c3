import pytest
from django.db import IntegrityError, transaction
from django.urls import reverse

from core.money import Money
from payments import crypto
from payments.errors import CaptureExceedsAuthorized, RefundExceedsCaptured
from payments.models import EventKind, Outcome, PaymentEvent, ProviderAccount, Source
from payments.selectors import payment_amounts
from payments.services import payment_event_record

pytestmark = pytest.mark.django_db


def record(payment, kind, outcome, amount, key, source=Source.API):
    return payment_event_record(
        transaction_id=payment.pk,
        kind=kind,
        outcome=outcome,
        amount=Money(amount, "EUR"),
        idempotency_key=key,
        source=source,
    )


def test_amounts_are_derived_and_requests_are_held_to_them(make_payment):
    payment = make_payment()
    record(payment, EventKind.AUTHORIZATION, Outcome.SUCCEEDED, 10000, "auth")
    record(payment, EventKind.CAPTURE, Outcome.REQUESTED, 6000, "cap-1")
    record(payment, EventKind.CAPTURE, Outcome.SUCCEEDED, 6000, "cap-1-ok")
    with pytest.raises(CaptureExceedsAuthorized):
        record(payment, EventKind.CAPTURE, Outcome.REQUESTED, 4001, "cap-2")
    record(payment, EventKind.REFUND, Outcome.REQUESTED, 2500, "ref-1")
    record(payment, EventKind.REFUND, Outcome.SUCCEEDED, 2500, "ref-1-ok")
    with pytest.raises(RefundExceedsCaptured):
        record(payment, EventKind.REFUND, Outcome.REQUESTED, 3501, "ref-2")
    record(payment, EventKind.CANCEL, Outcome.SUCCEEDED, 4000, "void")
    amounts = payment_amounts(payment)
    assert (
        amounts.authorized.minor,
        amounts.captured.minor,
        amounts.refunded.minor,
        amounts.cancelled.minor,
    ) == (10000, 6000, 2500, 4000)
    assert amounts.capturable.minor == 0
    assert amounts.status == "partially_refunded"


def test_events_are_idempotent_per_key_and_append_only(make_payment):
    payment = make_payment()
    first = record(payment, EventKind.AUTHORIZATION, Outcome.SUCCEEDED, 10000, "auth")
    again = record(payment, EventKind.AUTHORIZATION, Outcome.SUCCEEDED, 10000, "auth")
    assert first.pk == again.pk
    assert PaymentEvent.objects.count() == 1
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        PaymentEvent.objects.filter(pk=first.pk).update(amount=1)
    with pytest.raises(IntegrityError, match="append-only"), transaction.atomic():
        PaymentEvent.objects.filter(pk=first.pk).delete()


def test_credentials_are_write_only_and_encrypted_at_rest(admin_client):
    form = {
        "provider": "klarna",
        "enabled": "on",
        "mode": "sandbox",
        "region": "eu",
        "base_url": "http://127.0.0.1:9/klarna",
        "currency": "EUR",
        "merchant_categories": "[]",
        "rotation_overlap_hours": "24",
        "credential_id": "K123456_abcdef",
        "credential_secret": "s3cr3t-password-value",
    }
    response = admin_client.post(reverse("admin:payments_provideraccount_add"), form)
    assert response.status_code == 302, response.content[:3000]
    account = ProviderAccount.objects.get()
    assert "s3cr3t" not in account.credentials_encrypted
    assert crypto.decrypt(account.credentials_encrypted) == {
        "id": "K123456_abcdef",
        "secret": "s3cr3t-password-value",
    }
    page = admin_client.get(reverse("admin:payments_provideraccount_change", args=[account.pk]))
    html = page.content.decode()
    assert "s3cr3t-password-value" not in html
    assert "••••alue" in html
    assert "/webhooks/klarna/" in html
    # Saving with blank credential fields keeps what is stored.
    admin_client.post(
        reverse("admin:payments_provideraccount_change", args=[account.pk]),
        {**form, "credential_id": "", "credential_secret": ""},
    )
    account.refresh_from_db()
    assert crypto.decrypt(account.credentials_encrypted)["secret"] == "s3cr3t-password-value"


def test_rotating_the_webhook_secret_shows_it_once_on_its_own_page(admin_client, card_account):
    response = admin_client.post(
        reverse("admin:payments_provideraccount_changelist"),
        {"action": "rotate_webhook_secret", "_selected_action": [card_account.pk]},
    )
    assert response.status_code == 200
    html = response.content.decode()
    card_account.refresh_from_db()
    secret = crypto.decrypt(card_account.webhook_secret_encrypted)
    assert secret in html
    assert card_account.previous_secret_valid_until is not None
    page = admin_client.get(reverse("admin:payments_provideraccount_changelist"))
    assert secret not in page.content.decode()


def test_payments_in_another_currency_are_refused_when_we_ask(make_payment):
    from core.errors import InvalidInput

    payment = make_payment()
    with pytest.raises(InvalidInput):
        payment_event_record(
            transaction_id=payment.pk,
            kind=EventKind.AUTHORIZATION,
            outcome=Outcome.REQUESTED,
            amount=Money(100, "USD"),
            idempotency_key="usd",
            source=Source.API,
        )
    record(payment, EventKind.AUTHORIZATION, Outcome.SUCCEEDED, 10000, "auth")
    payment_event_record(
        transaction_id=payment.pk,
        kind=EventKind.CAPTURE,
        outcome=Outcome.SUCCEEDED,
        amount=Money(500, "USD"),
        idempotency_key="usd-report",
        source=Source.WEBHOOK,
    )
    payment.refresh_from_db()
    assert payment.flagged
    assert payment_amounts(payment).captured.minor == 0  # flagged, never added in


def test_the_provider_account_add_form_opens(admin_client):
    """No provider is chosen yet, so there is no webhook URL to show: a dash, not a 500."""
    response = admin_client.get(reverse("admin:payments_provideraccount_add"))
    assert response.status_code == 200
