"""Celery tasks of the debit run: thin, named, idempotent, acknowledged late.

A chunk redelivered after a worker crash charges nobody twice (requests in flight or settled
are not due; attempts are unique per request and number). Database hiccups are retried with
backoff; a task that still fails lands in core's dead-letter list, from which it can be
replayed.
"""

from __future__ import annotations

from datetime import date, timedelta

from celery import shared_task
from django.db import InterfaceError, OperationalError

from collections_ import debits, delinquency, reminders
from core import clock
from core.tasks import deliver_emails

RETRYABLE = (OperationalError, InterfaceError)


@shared_task(name="collections.debit_run", acks_late=True)
def debit_run(business_date: str | None = None) -> dict[str, int]:
    """Start the debit run for a business date (default: today's)."""
    day = date.fromisoformat(business_date) if business_date else clock.business_date()
    run = debits.debit_run_start(business_date=day)
    return {"run": run.pk, "due": run.due_count, "chunks": run.chunks_total}


@shared_task(
    name="collections.debit_chunk",
    acks_late=True,
    autoretry_for=RETRYABLE,
    retry_backoff=True,
    retry_jitter=True,
    max_retries=5,
)
def debit_chunk(run_id: int, chunk_no: int) -> dict[str, int]:
    """Charge one chunk of a run (about ``chunk_size`` debit requests)."""
    return debits.debit_chunk_process(run_id=run_id, chunk_no=chunk_no)


@shared_task(
    name="collections.retry_due",
    acks_late=True,
    autoretry_for=RETRYABLE,
    retry_backoff=True,
    max_retries=3,
)
def retry_due() -> dict[str, dict[str, int]]:
    """Every minute: settle attempts without an answer first, then charge due retries."""
    reconciled = debits.debit_attempts_reconcile()
    retried = debits.debit_retries_process()
    return {"reconciled": reconciled, "retried": retried}


@shared_task(
    name="collections.reconcile_attempts",
    acks_late=True,
    autoretry_for=RETRYABLE,
    retry_backoff=True,
    max_retries=3,
)
def reconcile_attempts(pending_older_than_seconds: int = 300) -> dict[str, int]:
    """Ask the provider about stale attempts, and re-send lost chunks of unfinished runs."""
    grace = timedelta(seconds=pending_older_than_seconds)
    counts = debits.debit_attempts_reconcile(pending_older_than=grace)
    counts["chunks_resent"] = debits.debit_runs_resume(older_than=grace)
    return counts


# --- delinquency and reminders (collections_.delinquency, collections_.reminders) -------


@shared_task(name="collections.delinquency_run", acks_late=True)
def delinquency_run(business_date: str | None = None) -> dict[str, int]:
    """Daily: mark overdue installments, update days past due and buckets, run their actions.

    Idempotent: a second run the same day marks, charges and sends nothing more.
    """
    day = date.fromisoformat(business_date) if business_date else clock.business_date()
    result = delinquency.delinquency_run(business_date=day)
    if result.delinquency.reminders:
        deliver_emails.delay()
    found = result.delinquency
    return {
        "marked_overdue": result.marked_overdue,
        "plans": found.plans,
        "transitions": found.transitions,
        "late_fees": found.late_fees,
        "blocked": found.blocked,
        "unblocked": found.unblocked,
        "flagged": found.flagged,
        "reminders": found.reminders,
    }


@shared_task(name="collections.reminders_run", acks_late=True)
def reminders_run(business_date: str | None = None) -> dict[str, int]:
    """Hourly: queue the failed-debit, upcoming-debit and overdue emails not yet queued."""
    day = date.fromisoformat(business_date) if business_date else clock.business_date()
    queued = reminders.reminders_run(business_date=day)
    if any(queued.values()):
        deliver_emails.delay()
    return queued
