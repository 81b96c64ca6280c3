"""Collections: debit runs and attempts, the retry and dunning settings, late fees.

Amounts are minor units. A run's counts and amounts are not stored: they are read from its
attempts (``collections_.selectors``), so progress is live and can never drift.
"""

from django.db import models

from bnpl.models import Plan


def default_soft_retry_days() -> list[int]:
    return [1, 3, 7]


def default_technical_retry_minutes() -> list[int]:
    return [5, 15, 60, 240]


def default_buckets() -> list[dict]:
    return [
        {"name": "1-30", "min_days": 1, "max_days": 30, "actions": ["reminder", "late_fee"]},
        {
            "name": "31-60",
            "min_days": 31,
            "max_days": 60,
            "actions": ["reminder", "late_fee", "block_bnpl"],
        },
        {
            "name": "61-90",
            "min_days": 61,
            "max_days": 90,
            "actions": ["reminder", "late_fee", "block_bnpl"],
        },
        {
            "name": "90+",
            "min_days": 91,
            "max_days": None,
            "actions": ["reminder", "block_bnpl", "flag_write_off"],
        },
    ]


class CollectionsSettings(models.Model):
    """The one settings record of collections (primary key 1). Every change is audited."""

    soft_retry_days = models.JSONField(
        default=default_soft_retry_days, help_text="Days after a soft decline, e.g. [1, 3, 7]"
    )
    technical_retry_minutes = models.JSONField(
        default=default_technical_retry_minutes,
        help_text="Minutes after a technical failure, e.g. [5, 15, 60, 240]",
    )
    reminder_days_before = models.PositiveSmallIntegerField(default=3)
    overdue_reminder_interval_days = models.PositiveSmallIntegerField(default=7)
    buckets = models.JSONField(default=default_buckets)
    chunk_size = models.PositiveIntegerField(default=1000)
    updated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "Collections settings"
        verbose_name_plural = "Collections settings"
        constraints = [
            models.CheckConstraint(condition=models.Q(pk=1), name="collections_settings_singleton"),
            models.CheckConstraint(
                condition=models.Q(chunk_size__gte=1), name="collections_chunk_size_positive"
            ),
        ]

    def __str__(self) -> str:
        return "Collections settings"


class RunStatus(models.TextChoices):
    RUNNING = "running", "Chunks are being processed"
    FINISHED = "finished", "Every chunk processed"


class DebitRun(models.Model):
    """One execution of the daily debit run for a business date."""

    business_date = models.DateField(db_index=True)
    status = models.CharField(max_length=10, choices=RunStatus.choices, default=RunStatus.RUNNING)
    due_count = models.PositiveIntegerField(default=0)
    chunks_total = models.PositiveIntegerField(default=0)
    chunks_done = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self) -> str:
        return f"Debit run {self.business_date} #{self.pk}"


class DebitRunChunk(models.Model):
    """One Celery task's share of a run: the request ids it was handed.

    Kept so that a run whose chunk messages were lost can be resumed, and so that a chunk
    redelivered after a worker crash counts towards progress once.
    """

    run = models.ForeignKey(DebitRun, on_delete=models.CASCADE, related_name="chunks")
    number = models.PositiveIntegerField()
    request_ids = models.JSONField()
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "number"]
        constraints = [
            models.UniqueConstraint(fields=["run", "number"], name="debit_run_chunk_unique"),
        ]

    def __str__(self) -> str:
        return f"Chunk {self.number} of {self.run}"


class AttemptStatus(models.TextChoices):
    PENDING = "pending", "Committed before the charge was sent"
    SUCCEEDED = "succeeded", "Charged; the installment is paid"
    FAILED = "failed", "Declined or failed"
    UNKNOWN = "unknown", "No answer in time: reconciled with the provider before anything else"


class FailureClass(models.TextChoices):
    TECHNICAL = "technical", "Technical (timeout, 5xx): retried within minutes"
    SOFT = "soft", "Soft decline (e.g. insufficient funds): retried after days"
    HARD = "hard", "Hard decline (card lost or closed): no retry, a new method is needed"


class DebitAttempt(models.Model):
    """One try at charging a debit request. Unique per request and attempt number."""

    # Indexed by the unique (request, attempt_no) below.
    request = models.ForeignKey(
        "bnpl.DebitRequest", on_delete=models.PROTECT, related_name="attempts", db_index=False
    )
    attempt_no = models.PositiveSmallIntegerField()
    run = models.ForeignKey(
        DebitRun, null=True, blank=True, on_delete=models.PROTECT, related_name="attempts"
    )
    currency = models.CharField(max_length=3)
    amount = models.BigIntegerField()
    # Sent to the gateway; the provider charges a key at most once.
    idempotency_key = models.CharField(max_length=120)  # unique: see Meta
    status = models.CharField(
        max_length=10, choices=AttemptStatus.choices, default=AttemptStatus.PENDING
    )
    failure_class = models.CharField(max_length=10, choices=FailureClass.choices, blank=True)
    decline_code = models.CharField(max_length=60, blank=True)
    # The retry calendar in force when the attempt was made (a settings change leaves it be).
    retry_schedule = models.JSONField(default=dict, blank=True)
    next_retry_at = models.DateTimeField(null=True, blank=True)
    payment_transaction = models.ForeignKey(  # never looked up from the payment side
        "payments.PaymentTransaction",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
    )
    created_at = models.DateTimeField()
    # When the charge request (``payment_transaction``) was recorded with the attempt, right
    # before its batch was sent: the reconciler's grace counts from it.
    sent_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["request", "attempt_no"], name="attempt_unique_per_request_number"
            ),
            # Not unique=True / db_index=True: on PostgreSQL those add a LIKE index per
            # text column, which every attempt written (a thousand a chunk) maintains.
            models.UniqueConstraint(fields=["idempotency_key"], name="attempt_unique_key"),
            models.CheckConstraint(
                condition=models.Q(amount__gt=0), name="attempt_amount_positive"
            ),
        ]
        indexes = [
            # What the reconciler asks about and the failed-debit emails read; the
            # succeeded attempts (nearly all) are left out, so recording a success adds
            # no entry here.
            models.Index(
                fields=["status", "finished_at"],
                name="attempt_open_or_failed",
                condition=models.Q(
                    status__in=[AttemptStatus.PENDING, AttemptStatus.UNKNOWN, AttemptStatus.FAILED]
                ),
            )
        ]

    def __str__(self) -> str:
        return f"Attempt {self.attempt_no} of {self.request}"


# --- delinquency ----------------------------------------------------------------------


class BucketAction(models.TextChoices):
    REMINDER = "reminder", "Email the customer that the plan is past due"
    BLOCK_BNPL = "block_bnpl", "Refuse new installment plans until the plan is current"
    LATE_FEE = "late_fee", "Charge each late installment a fee, within the product's caps"
    FLAG_WRITE_OFF = "flag_write_off", "Flag the plan for a staff write-off decision"


class DelinquencyTransition(models.Model):
    """A plan moving from one delinquency bucket to another ("" is current). Never edited."""

    plan = models.ForeignKey(
        "bnpl.Plan", on_delete=models.PROTECT, related_name="delinquency_transitions"
    )
    from_bucket = models.CharField(max_length=20, blank=True)
    to_bucket = models.CharField(max_length=20, blank=True)
    days_past_due = models.PositiveIntegerField()
    business_date = models.DateField()
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["plan", "-created_at"])]

    def __str__(self) -> str:
        before, after = self.from_bucket or "current", self.to_bucket or "current"
        return f"Plan {self.plan_id}: {before} → {after}"


class BucketActionDone(models.Model):
    """An action of a bucket carried out for a plan: at most once per (plan, bucket, action).

    Late fees are per installment (``LateFeeCharge``); this row records the first one the
    bucket charged for the plan.
    """

    plan = models.ForeignKey(
        "bnpl.Plan", on_delete=models.PROTECT, related_name="delinquency_actions"
    )
    bucket = models.CharField(max_length=20)
    action = models.CharField(max_length=20, choices=BucketAction.choices)
    business_date = models.DateField()
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["plan", "bucket", "action"], name="bucket_action_once_per_plan"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.action} for plan {self.plan_id} in {self.bucket}"


class LateFeeCharge(models.Model):
    """A late fee added to an installment's ``late_fee``; one per installment and reason.

    The reason is the delinquency bucket the installment had reached, so an installment that
    stays unpaid is charged at most once per bucket that charges late fees, and never past
    the product's caps. Nothing is posted to the ledger: a late fee is income when it is
    paid (cash basis, like interest and fees).
    """

    installment = models.ForeignKey(
        "bnpl.Installment", on_delete=models.PROTECT, related_name="late_fee_charges"
    )
    plan = models.ForeignKey("bnpl.Plan", on_delete=models.PROTECT, related_name="+")
    reason = models.CharField(max_length=40)
    currency = models.CharField(max_length=3)
    amount = models.BigIntegerField(help_text="Minor units")
    days_past_due = models.PositiveIntegerField()
    business_date = models.DateField()
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["installment", "reason"], name="late_fee_once_per_installment_reason"
            ),
            models.CheckConstraint(
                condition=models.Q(amount__gt=0), name="late_fee_amount_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"Late fee {self.amount} on installment {self.installment_id} ({self.reason})"


class DelinquentPlan(Plan):
    """Plans seen by collections: buckets, days past due, write-off and recovery."""

    class Meta:
        proxy = True
        verbose_name = "Delinquent plan"
        verbose_name_plural = "Delinquent plans"
