from django.conf import settings
from django.db import models

from core import clock


class AuditEntry(models.Model):
    """Who changed what, written in the same transaction as the change. Never updated."""

    created_at = models.DateTimeField(db_index=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
    )
    # Who acted when there is no user (a sales channel, a scheduled job): "channel:web".
    actor_label = models.CharField(max_length=100, blank=True)
    action = models.CharField(max_length=100, db_index=True)
    target_type = models.CharField(max_length=100)
    target_id = models.CharField(max_length=64)
    changes = models.JSONField(default=dict, blank=True)
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["target_type", "target_id"])]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        who = self.actor or self.actor_label or "system"
        target = f"{self.target_type}#{self.target_id}"
        return f"{clock.business_time(self.created_at):%Y-%m-%d %H:%M} {who} {self.action} {target}"


class IdempotencyRecord(models.Model):
    """One ``Idempotency-Key`` of one caller, and the response it produced."""

    class State(models.TextChoices):
        IN_PROGRESS = "in_progress", "Claimed by a request that has not finished"
        COMPLETED = "completed", "Finished; its response is replayed to repeats"

    # Keys are scoped to their caller: "user:12", or "user:12:channel:3" for a channel.
    scope = models.CharField(max_length=100)
    key = models.CharField(max_length=255)
    method = models.CharField(max_length=10)
    path = models.CharField(max_length=255)
    # sha256 of method, path and the canonical JSON body.
    fingerprint = models.CharField(max_length=64)
    state = models.CharField(max_length=20, choices=State.choices, default=State.IN_PROGRESS)
    # Changes each time a request takes the claim, so a stale holder cannot complete it.
    claim_token = models.UUIDField()
    locked_at = models.DateTimeField()
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField()
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["scope", "key"], name="idempotency_unique_scope_key"),
            models.CheckConstraint(
                condition=models.Q(state="in_progress") | models.Q(response_status__isnull=False),
                name="idempotency_completed_has_response",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.scope} {self.key} ({self.state})"


class OutboundEmail(models.Model):
    """Every email the product sends: who, what, when. One row per event, ever."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Waiting to be sent"
        SENDING = "sending", "Claimed by a delivery worker"
        SENT = "sent", "Handed to the mail server"
        FAILED = "failed", "Gave up after repeated errors"

    # Names the event, e.g. "wallet.debt_overdue:42:week-0"; a second email for the same
    # event cannot exist.
    dedupe_key = models.CharField(max_length=200, unique=True)
    template = models.CharField(max_length=100)
    to = models.EmailField()
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    subject = models.CharField(max_length=255)
    body_text = models.TextField()
    body_html = models.TextField(blank=True)
    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField()
    claimed_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.template} to {self.to} ({self.status})"


class DeadLetter(models.Model):
    """A Celery task that failed after its retries; replayable from the admin."""

    task_name = models.CharField(max_length=200, db_index=True)
    task_id = models.CharField(max_length=64)
    args = models.JSONField(default=list)
    kwargs = models.JSONField(default=dict)
    exception = models.TextField()
    traceback = models.TextField(blank=True)
    failed_at = models.DateTimeField(db_index=True)
    replayed_at = models.DateTimeField(null=True, blank=True)
    replay_task_id = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["-failed_at", "-id"]

    def __str__(self) -> str:
        return f"{self.task_name} failed at {clock.business_time(self.failed_at):%Y-%m-%d %H:%M}"
