import logging

from celery import shared_task
from django.db import OperationalError

from payments import services

log = logging.getLogger(__name__)


@shared_task(
    name="payments.process_webhook_event",
    acks_late=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    retry_jitter=True,
    max_retries=5,
)
def process_webhook_event(event_id: int) -> str:
    """Apply one stored notification; idempotent (a processed event is left alone).

    Unsigned notifications (Klarna's) are confirmed by reading the order back first;
    dispute notifications go to the disputed payment's owner (``payments.disputes``).
    """
    from payments.disputes import dispute_event_process, is_dispute_event
    from payments.models import WebhookEvent
    from payments.processing import webhook_event_confirm
    from payments.webhooks import UNSIGNED

    provider, event_type = WebhookEvent.objects.values_list("provider", "event_type").get(
        pk=event_id
    )
    if is_dispute_event(provider, event_type):
        return dispute_event_process(event_id=event_id).status
    if provider == "lending_partner":
        from payments.lending import partner_webhook_process

        return partner_webhook_process(event_id=event_id).status
    if provider in UNSIGNED:
        return webhook_event_confirm(event_id=event_id).status
    return services.webhook_event_process(event_id=event_id).status


@shared_task(name="payments.check_provider_health", acks_late=True)
def check_provider_health() -> dict[str, bool]:
    """Read each enabled provider's health endpoint and record the answer."""
    from payments.lending import partner_client_for
    from payments.models import Provider, ProviderAccount
    from payments.processing import ProviderNotSupported, gateway_for

    results = {}
    for account in ProviderAccount.objects.filter(enabled=True):
        try:
            client = (
                partner_client_for(account)
                if account.provider == Provider.LENDING_PARTNER
                else gateway_for(account)
            )
            ok, detail = client.health(), ""
        except ProviderNotSupported as exc:
            ok, detail = False, exc.message
        services.provider_health_record(
            account_id=account.pk, ok=ok, detail=detail or ("ok" if ok else "no healthy answer")
        )
        results[account.provider] = ok
    return results


@shared_task(name="payments.reconcile_unknown", acks_late=True)
def reconcile_unknown(older_than_seconds: int = 120) -> int:
    """Ask the providers about every authorization request still without an answer.

    Only requests older than ``older_than_seconds`` are looked at, so a call still in
    flight is left alone. Returns how many transactions were reconciled.
    """
    from datetime import timedelta

    from django.db.models import Exists, OuterRef, Value
    from django.db.models.functions import Concat

    from core import clock
    from payments.models import EventKind, Outcome, PaymentEvent, Source
    from payments.processing import payment_reconcile

    cutoff = clock.now() - timedelta(seconds=older_than_seconds)
    answer = PaymentEvent.objects.filter(
        transaction_id=OuterRef("transaction_id"),
        idempotency_key=Concat(OuterRef("idempotency_key"), Value(":result")),
    )
    ids = list(
        PaymentEvent.objects.filter(
            kind=EventKind.AUTHORIZATION,
            outcome=Outcome.REQUESTED,
            source=Source.API,
            created_at__lt=cutoff,
        )
        .filter(~Exists(answer))
        .values_list("transaction_id", flat=True)
        .distinct()
        .order_by("transaction_id")
    )
    reconciled = 0
    for transaction_id in ids:
        try:
            payment_reconcile(transaction_id=transaction_id)
        except Exception:  # one provider failing must not starve the others' transactions
            log.exception("reconciling payment transaction %s failed", transaction_id)
        else:
            reconciled += 1
    return reconciled


@shared_task(name="payments.reconcile_partner_applications", acks_late=True)
def reconcile_partner_applications() -> dict:
    """Read back lending partner applications still referred or unanswered after
    ``PAYMENTS_PARTNER_RECONCILE_AFTER_SECONDS``; returns counts by decision."""
    from payments.lending import partner_applications_reconcile

    return partner_applications_reconcile()


@shared_task(name="payments.retry_dispute_events", acks_late=True)
def retry_dispute_events() -> dict[str, int]:
    """Process again failed dispute notifications whose next try is due (a passing cause:
    the provider did not answer, the payment was not recorded yet)."""
    from payments.disputes import dispute_events_retry

    return dispute_events_retry()
