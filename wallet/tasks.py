from datetime import date

from celery import shared_task
from django.db import transaction

from core import clock
from core.tasks import deliver_emails
from wallet import services


@shared_task(name="wallet.daily_debt_run", acks_late=True)
def daily_debt_run(business_date: str | None = None) -> dict[str, int]:
    """Mark overdue debts, record the day's totals, queue this week's overdue reminders.

    Idempotent: a second run the same day marks nothing more and queues no reminder twice.
    """
    day = date.fromisoformat(business_date) if business_date else clock.business_date()
    marked = services.debts_mark_overdue(business_date=day)
    services.debt_snapshot_record(business_date=day)
    queued = services.debt_reminders_queue(business_date=day)
    if queued:
        transaction.on_commit(deliver_emails.delay)
    return {"marked_overdue": marked, "reminders_queued": queued}
