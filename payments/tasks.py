from celery import shared_task

from payments import services


@shared_task(name="payments.process_webhook_event", acks_late=True)
def process_webhook_event(event_id: int) -> str:
    """Apply one stored notification; idempotent (a processed event is left alone)."""
    return services.webhook_event_process(event_id=event_id).status
