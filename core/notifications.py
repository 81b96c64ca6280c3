"""Outbound email: record first, send after commit, never twice for one event.

``email_queue`` renders and stores emails in the caller's transaction; the unique
``dedupe_key`` makes a repeat of the same event a no-op, even from two concurrent jobs.
``emails_deliver`` sends queued rows outside any transaction: it claims a batch in a short
transaction, sends, then marks each row sent. A worker that dies between sending and
marking leaves the row ``sending``; it is retried after ``CLAIM_TIMEOUT`` (at least once).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.template.loader import render_to_string
from django.utils import timezone

from core import clock
from core.models import OutboundEmail

log = logging.getLogger(__name__)

CLAIM_TIMEOUT = timedelta(minutes=10)
MAX_ATTEMPTS = 5


@dataclass(frozen=True)
class EmailDraft:
    dedupe_key: str
    template: str  # "wallet/debt_overdue" → templates/emails/wallet/debt_overdue.{txt,html}
    to: str
    subject: str
    context: dict[str, Any] = field(default_factory=dict)
    user_id: int | None = None


def email_queue(drafts: Sequence[EmailDraft]) -> int:
    """Store the drafts as queued emails, rendered in the business time zone; drafts whose
    event already has one are skipped.

    Returns how many new emails were queued. Runs in the caller's transaction.
    """
    if not drafts:
        return 0
    keys = [d.dedupe_key for d in drafts]
    existing = set(
        OutboundEmail.objects.filter(dedupe_key__in=keys).values_list("dedupe_key", flat=True)
    )
    now = clock.now()
    with timezone.override(clock.business_tz()):  # times read beside business dates
        rows = [
            OutboundEmail(
                dedupe_key=d.dedupe_key,
                template=d.template,
                to=d.to,
                user_id=d.user_id,
                subject=d.subject,
                body_text=render_to_string(f"emails/{d.template}.txt", d.context),
                body_html=render_to_string(f"emails/{d.template}.html", d.context),
                created_at=now,
            )
            for d in drafts
            if d.dedupe_key not in existing
        ]
    # ON CONFLICT DO NOTHING: a concurrent job that queued the same event first wins.
    OutboundEmail.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


def _claim(limit: int) -> list[OutboundEmail]:
    now = clock.now()
    with transaction.atomic(durable=True):
        rows = list(
            OutboundEmail.objects.select_for_update(skip_locked=True)
            .filter(status__in=[OutboundEmail.Status.QUEUED, OutboundEmail.Status.SENDING])
            .exclude(status=OutboundEmail.Status.SENDING, claimed_at__gt=now - CLAIM_TIMEOUT)
            .order_by("id")[:limit]
        )
        OutboundEmail.objects.filter(pk__in=[r.pk for r in rows]).update(
            status=OutboundEmail.Status.SENDING, claimed_at=now
        )
    return rows


def emails_deliver(*, limit: int = 500) -> int:
    """Send up to ``limit`` queued emails; returns how many were sent."""
    sent = 0
    for email in _claim(limit):
        message = EmailMultiAlternatives(
            email.subject, email.body_text, settings.DEFAULT_FROM_EMAIL, [email.to]
        )
        if email.body_html:
            message.attach_alternative(email.body_html, "text/html")
        try:
            message.send()
        except Exception as exc:  # the mail server's error, whatever it is
            log.warning("email %s to %s failed: %s", email.pk, email.to, exc)
            attempts = email.attempts + 1
            OutboundEmail.objects.filter(pk=email.pk).update(
                attempts=attempts,
                last_error=str(exc)[:2000],
                status=(
                    OutboundEmail.Status.FAILED
                    if attempts >= MAX_ATTEMPTS
                    else OutboundEmail.Status.QUEUED
                ),
            )
            continue
        OutboundEmail.objects.filter(pk=email.pk).update(
            status=OutboundEmail.Status.SENT, sent_at=clock.now(), attempts=email.attempts + 1
        )
        sent += 1
    return sent
