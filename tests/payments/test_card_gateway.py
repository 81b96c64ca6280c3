"""The real card adapter against the payment sandbox, over HTTP."""

import pytest
import requests

from core import clock
from core.money import Money
from payments import reliability
from payments.errors import CaptureExceedsAuthorized
from payments.gateway import Decision, GatewayTechnicalError
from payments.processing import (
    payment_authorize,
    payment_capture,
    payment_reconcile,
    payment_refund,
    payment_void,
)
from payments.selectors import payment_amounts

pytestmark = pytest.mark.django_db

EUR = "EUR"


def charges(sandbox) -> list[dict]:
    return requests.get(f"{sandbox}/sandbox/charges", timeout=5).json()["data"]


def eur(amount: str) -> Money:
    return Money.parse(amount, EUR)


def authorize(account, order_id: str, amount: Money, payment_method: str, key: str):
    """Authorize a payment for order ``order_id``: (transaction, result)."""
    return payment_authorize(
        account=account,
        reference_type="oms.order",
        reference_id=order_id,
        amount=amount,
        payment_method=payment_method,
        idempotency_key=key,
    )


def test_authorize_partial_capture_partial_refund_cancel_the_rest(account, sandbox):
    txn, result = authorize(account, "1", eur("100.00"), "pm_card", "auth-1")
    assert result.decision == Decision.APPROVED
    assert txn.provider_reference == result.provider_reference
    assert (
        payment_capture(
            transaction_id=txn.pk, amount=eur("60.00"), idempotency_key="cap-1"
        ).decision
        == Decision.APPROVED
    )
    assert (
        payment_refund(transaction_id=txn.pk, amount=eur("15.00"), idempotency_key="ref-1").decision
        == Decision.APPROVED
    )
    assert payment_void(transaction_id=txn.pk, idempotency_key="void-1").decision == (
        Decision.APPROVED
    )
    amounts = payment_amounts(txn)
    assert (amounts.authorized, amounts.captured, amounts.refunded, amounts.cancelled) == (
        eur("100.00"),
        eur("60.00"),
        eur("15.00"),
        eur("40.00"),
    )
    [charge] = charges(sandbox)  # the provider's own record agrees
    assert (charge["amount_captured"], charge["amount_refunded"]) == (6000, 1500)
    with pytest.raises(CaptureExceedsAuthorized):  # refused before any call
        payment_capture(transaction_id=txn.pk, amount=eur("0.01"), idempotency_key="cap-2")
    assert len(charges(sandbox)) == 1


def test_a_decline_is_recorded_and_never_retried(account, sandbox):
    txn, result = authorize(account, "2", eur("10.00"), "pm_decline", "auth-2")
    assert (result.decision, result.decline_code) == (Decision.DECLINED, "insufficient_funds")
    assert txn.events.filter(outcome="failed").count() == 1
    assert payment_amounts(txn).status == "pending"
    assert len(charges(sandbox)) == 1


def test_pending_review_waits_for_the_providers_notification(account):
    txn, result = authorize(account, "3", eur("10.00"), "pm_review", "auth-3")
    assert result.decision == Decision.PENDING
    assert list(txn.events.values_list("outcome", flat=True)) == ["requested"]


def test_a_timeout_is_unknown_until_reconciled_with_the_provider(account, sandbox):
    txn, result = authorize(account, "4", eur("10.00"), "pm_timeout", "auth-4")
    assert result.decision == Decision.UNKNOWN
    assert payment_amounts(txn).authorized.minor == 0
    assert payment_reconcile(transaction_id=txn.pk) == 1  # asks; the charge was made
    assert payment_amounts(txn).authorized == eur("10.00")
    assert payment_reconcile(transaction_id=txn.pk) == 0
    assert len(charges(sandbox)) == 1  # reconciling never charged again


def test_a_request_that_never_arrived_is_unknown_then_failed_by_the_reconciler(account, sandbox):
    txn, result = authorize(account, "4b", eur("10.00"), "pm_unreachable", "auth-4b")
    assert result.decision == Decision.UNKNOWN
    assert charges(sandbox) == []  # the processor never saw it
    assert payment_reconcile(transaction_id=txn.pk) == 1  # asks by key: unseen
    assert list(txn.events.values_list("outcome", flat=True).order_by("pk")) == [
        "requested",
        "failed",
    ]
    assert payment_amounts(txn).authorized.minor == 0
    assert payment_reconcile(transaction_id=txn.pk) == 0
    assert charges(sandbox) == []  # reconciling never charged


def test_a_500_is_retried_with_the_same_key_and_charges_once(account, sandbox):
    txn, result = authorize(account, "5", eur("10.00"), "pm_error_once", "auth-5")
    assert result.decision == Decision.APPROVED
    assert payment_amounts(txn).authorized == eur("10.00")
    assert len(charges(sandbox)) == 1


def test_the_circuit_opens_after_repeated_failures_and_closes_after_a_good_trial(account):
    now = [0.0]
    breaker = reliability.CircuitBreaker(
        "card", failure_threshold=2, reset_seconds=30, clock=lambda: now[0]
    )
    reliability._breakers["card"] = breaker
    good_url = account.base_url
    account.base_url = "http://127.0.0.1:9/card"  # nothing listens: connection refused
    account.save()
    for i in range(2):
        with pytest.raises(GatewayTechnicalError):
            payment_authorize(
                account=account,
                reference_type="oms.order",
                reference_id="6",
                amount=eur("1.00"),
                payment_method="pm_card",
                idempotency_key=f"c-{i}",
            )
    assert breaker.state == "open"
    with pytest.raises(reliability.CircuitOpen):  # refused at once, no call made
        authorize(account, "6", eur("1.00"), "pm_card", "c-x")
    now[0] = 31.0
    assert breaker.state == "half_open"
    account.base_url = good_url
    account.save()
    _, result = authorize(account, "6", eur("1.00"), "pm_card", "c-trial")
    assert result.decision == Decision.APPROVED
    assert breaker.state == "closed"


def test_saving_a_card_keeps_only_the_token(account):
    from payments.processing import gateway_for

    token = gateway_for(account).save_payment_method(
        card_number="4242424242424242",
        exp_month=12,
        exp_year=clock.now().year + 4,
        idempotency_key="pm-1",
    )
    assert token.startswith("pm_")
    assert gateway_for(account).health() is True


def test_health_checks_show_in_readyz_and_the_admin(account, client, admin_client):
    from django.urls import reverse

    from payments.tasks import check_provider_health

    assert check_provider_health() == {"card": True}
    body = admin_client.get("/readyz").json()
    assert body["checks"]["payment_providers"]["status"] == "ok"
    assert body["checks"]["payment_providers"]["providers"]["card"]["healthy"] is True
    account.base_url = "http://127.0.0.1:9/card"
    account.save()
    assert check_provider_health() == {"card": False}
    response = client.get("/readyz")
    assert response.json()["checks"]["payment_providers"] == {"status": "degraded"}
    assert response.status_code == 200  # a provider down degrades, it does not gate
    page = admin_client.get(reverse("admin:payments_provideraccount_changelist"))
    assert b"icon-no" in page.content


def test_the_reconciler_task_settles_old_unanswered_requests_only(account, sandbox):
    from datetime import timedelta

    from payments.tasks import reconcile_unknown

    txn, result = authorize(account, "12", eur("10.00"), "pm_timeout", "auth-12")
    assert result.decision == Decision.UNKNOWN
    assert reconcile_unknown() == 0  # still in flight as far as we know
    with clock.travel(timedelta(minutes=5)):
        assert reconcile_unknown() == 1
        assert reconcile_unknown() == 0
    assert payment_amounts(txn).authorized == eur("10.00")


def test_authorization_expiry_is_kept_on_the_transaction(sandbox, klarna_account):

    klarna = klarna_account
    txn, result = authorize(klarna, "13", eur("10.00"), "tok_expiry_13", "auth-13")
    assert result.decision == Decision.APPROVED
    txn.refresh_from_db()
    assert txn.authorization_expires_at is not None
    assert txn.authorization_expires_at > klarna.created_at


def test_the_same_fact_by_answer_and_by_webhook_counts_once(
    account, eager_celery, django_capture_on_commit_callbacks
):
    from django.test import Client

    from payments.models import PaymentTransaction
    from payments.services import provider_webhook_secret_rotate
    from tests.payments.conftest import deliver, event

    txn, result = authorize(account, "14", eur("30.00"), "pm_card", "auth-14")
    assert result.decision == Decision.APPROVED
    secret = provider_webhook_secret_rotate(account_id=account.pk)
    with django_capture_on_commit_callbacks(execute=True):
        deliver(
            Client(),
            event(
                "e14", "payment.authorized", result.provider_reference, 3000, request_id="auth-14"
            ),
            secret,
        )
    assert payment_amounts(txn).authorized == eur("30.00")  # not 60.00
    assert not PaymentTransaction.objects.get(pk=txn.pk).flagged
    with django_capture_on_commit_callbacks(execute=True):
        deliver(
            Client(),
            event(
                "e14b", "payment.authorized", result.provider_reference, 2999, request_id="auth-14"
            ),
            secret,
        )
    assert payment_amounts(txn).authorized == eur("30.00")
    assert PaymentTransaction.objects.get(pk=txn.pk).flagged  # a disagreeing repeat is flagged


def test_captures_and_refunds_are_ledger_entries(account):
    from ledger.models import Account, JournalEntry

    txn, _ = authorize(account, "15", eur("80.00"), "pm_card", "auth-15")
    assert not JournalEntry.objects.filter(reference_id=str(txn.pk)).exists()  # a hold only
    payment_capture(transaction_id=txn.pk, amount=eur("50.00"), idempotency_key="cap-15")
    payment_refund(transaction_id=txn.pk, amount=eur("20.00"), idempotency_key="ref-15")
    kinds = list(
        JournalEntry.objects.filter(reference_type="payments.transaction", reference_id=str(txn.pk))
        .order_by("id")
        .values_list("kind", flat=True)
    )
    assert kinds == ["payments.capture", "payments.refund"]
    assert Account.objects.get(code="gateway_clearing:EUR").balance == 3000


def test_concurrent_requests_with_one_key_make_one_charge_at_the_sandbox(account, sandbox):
    from concurrent.futures import ThreadPoolExecutor

    from payments.adapters.card import CardGateway

    def charge(i: int):
        gateway = CardGateway(base_url=account.base_url, secret="sk")
        return gateway.charge_off_session(
            amount=eur("5.00"), reference="x", payment_method="pm_card", idempotency_key="same"
        )

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(charge, range(16)))
    assert {r.provider_reference for r in results} == {results[0].provider_reference}
    assert len(charges(sandbox)) == 1
