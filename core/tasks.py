from celery import shared_task

from core.notifications import emails_deliver


@shared_task(name="core.deliver_emails", acks_late=True)
def deliver_emails() -> int:
    """Send what is queued. Safe to run any number of times, concurrently too."""
    return emails_deliver()
