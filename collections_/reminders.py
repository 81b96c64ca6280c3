"""Reminder emails about installments, each queued once per event (``core.notifications``).

Every email is an ``OutboundEmail`` row (who, what, when, sent or not) whose ``dedupe_key``
names the event, so a job that runs twice, or twice at once, queues it once:

- ``collections.debit_upcoming:<installment>:<due date>``: ``reminder_days_before`` days
  (default 3) before an automatic debit. Sent by the first run that finds the due date
  within that window, so a missed day still reminds; a rescheduled due date reminds again.
- ``collections.debit_failed:<attempt>``: on each soft-declined debit attempt (insufficient
  funds: retried after days), with the retry date and the link to update the payment
  method. A hard decline is emailed by the debit run (``payment_method_required``, with the
  same link); technical failures (timeouts, 5xx) are retried within minutes and not emailed.
- ``collections.installment_overdue:<installment>:week-<n>``: at most one per overdue
  installment per ``overdue_reminder_interval_days`` (default 7: weekly); ``n`` counts
  whole intervals since ``overdue_since``.

Wallet debts have their own weekly reminders (``wallet.daily_debt_run``).
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from django.conf import settings
from django.db import transaction

from bnpl.models import (
    DebitRequestStatus,
    Installment,
    InstallmentStatus,
    PlanStatus,
)
from collections_.models import AttemptStatus, DebitAttempt, FailureClass
from collections_.selectors import collections_settings
from core import clock
from core.money import Money
from core.notifications import EmailDraft, email_queue

BATCH = 2000


def payment_method_url(plan_id: int) -> str:
    return settings.COLLECTIONS_PAYMENT_METHOD_URL.format(plan_id=plan_id)


def _queue_in_batches(installments, draft) -> int:
    queued, batch = 0, []
    for installment in installments.iterator(chunk_size=BATCH):
        batch.append(draft(installment))
        if len(batch) >= BATCH:
            with transaction.atomic(durable=True):
                queued += email_queue(batch)
            batch = []
    with transaction.atomic(durable=True):
        queued += email_queue(batch)
    return queued


def _context(installment: Installment) -> dict:
    plan = installment.plan
    user = plan.customer.user
    return {
        "user": user,
        "plan": plan,
        "installment": installment,
        "amount": Money(installment.outstanding, plan.currency),
        "late_fee": Money(installment.late_fee - installment.paid_late_fee, plan.currency),
        "payment_method_url": payment_method_url(plan.pk),
    }


def reminders_upcoming_queue(*, business_date: date) -> int:
    """Remind of every automatic debit due within the next ``reminder_days_before`` days."""
    days = collections_settings().reminder_days_before
    if days == 0:
        return 0
    installments = (
        Installment.objects.filter(
            status=InstallmentStatus.SCHEDULED,
            due_date__gt=business_date,
            due_date__lte=business_date + timedelta(days=days),
            plan__status=PlanStatus.ACTIVE,
            plan__debits_paused=False,
            debit_request__status=DebitRequestStatus.SCHEDULED,
        )
        .select_related("plan__customer__user")
        .order_by("pk")
    )

    def draft(installment: Installment) -> EmailDraft:
        context = _context(installment)
        return EmailDraft(
            dedupe_key=f"collections.debit_upcoming:{installment.pk}:{installment.due_date}",
            template="collections/debit_upcoming",
            to=context["user"].email,
            user_id=context["user"].pk,
            subject=f"{context['amount']} will be debited on {installment.due_date:%d %B %Y}",
            context=context,
        )

    return _queue_in_batches(installments, draft)


def reminders_overdue_queue(*, business_date: date) -> int:
    """Remind of each overdue installment at most once per reminder interval."""
    interval = max(collections_settings().overdue_reminder_interval_days, 1)
    installments = (
        Installment.objects.filter(
            status=InstallmentStatus.OVERDUE,
            overdue_since__lte=business_date,
            plan__status=PlanStatus.ACTIVE,
            plan__debits_paused=False,
        )
        .select_related("plan__customer__user")
        .order_by("pk")
    )

    def draft(installment: Installment) -> EmailDraft:
        context = _context(installment)
        period = (business_date - installment.overdue_since).days // interval
        context["days_past_due"] = (business_date - installment.due_date).days
        return EmailDraft(
            dedupe_key=f"collections.installment_overdue:{installment.pk}:week-{period}",
            template="collections/installment_overdue",
            to=context["user"].email,
            user_id=context["user"].pk,
            subject=f"Your installment of {context['amount']} is overdue",
            context=context,
        )

    return _queue_in_batches(installments, draft)


def reminders_debit_failed_queue(*, since: datetime) -> int:
    """Email each soft-declined attempt finished since ``since``: when it is retried, how
    to use another card. Hard declines are emailed by the debit run itself the moment they
    happen (``collections/payment_method_required``); technical failures not at all.
    """
    attempts = (
        DebitAttempt.objects.filter(
            status=AttemptStatus.FAILED,
            failure_class=FailureClass.SOFT,
            finished_at__gte=since,
            request__plan__status=PlanStatus.ACTIVE,
        )
        .select_related("request__installment__plan__customer__user")
        .order_by("pk")
    )
    queued, batch = 0, []
    for attempt in attempts.iterator(chunk_size=BATCH):
        context = _context(attempt.request.installment) | {
            "attempted": Money(attempt.amount, attempt.currency),
            # The day of the retry in the business time zone (what the customer's calendar says).
            "next_retry_on": attempt.next_retry_at
            and attempt.next_retry_at.astimezone(clock.business_tz()).date(),
        }
        batch.append(
            EmailDraft(
                dedupe_key=f"collections.debit_failed:{attempt.pk}",
                template="collections/debit_failed",
                to=context["user"].email,
                user_id=context["user"].pk,
                subject=f"We could not debit {context['attempted']} for your installment",
                context=context,
            )
        )
        if len(batch) >= BATCH:
            with transaction.atomic(durable=True):
                queued += email_queue(batch)
            batch = []
    with transaction.atomic(durable=True):
        queued += email_queue(batch)
    return queued


# Failed debits older than this are not emailed any more (the job runs hourly).
FAILED_LOOKBACK = timedelta(days=2)


def reminders_run(*, business_date: date) -> dict[str, int]:
    """The reminder job (hourly; each email once): failed, upcoming and overdue debits."""
    return {
        "debit_failed": reminders_debit_failed_queue(since=clock.now() - FAILED_LOOKBACK),
        "upcoming": reminders_upcoming_queue(business_date=business_date),
        "overdue": reminders_overdue_queue(business_date=business_date),
    }
