"""Provider accounts, payment transactions and their append-only event log, webhooks.

Amounts are minor units. A transaction's authorized, captured and refunded amounts are
never stored: they are derived from its succeeded events (``payments.selectors``).
"""

from django.db import models

from customers.models import Customer


class Provider(models.TextChoices):
    KLARNA = "klarna", "Klarna"
    AFTERPAY = "afterpay", "Afterpay / Clearpay"
    CARD = "card", "Card processor"
    LENDING_PARTNER = "lending_partner", "Lending partner (decides and funds plans)"


class Mode(models.TextChoices):
    SANDBOX = "sandbox", "Sandbox (test)"
    LIVE = "live", "Live"


class ProviderAccount(models.Model):
    """One provider's settings. Secrets are encrypted at rest and never shown again."""

    provider = models.CharField(max_length=20, choices=Provider.choices, unique=True)
    enabled = models.BooleanField(default=False)
    mode = models.CharField(max_length=10, choices=Mode.choices, default=Mode.SANDBOX)
    region = models.CharField(
        max_length=10, default="eu", help_text="Klarna: eu, na, oc. Afterpay: eu, us, au."
    )
    base_url = models.URLField(help_text="The provider's API root (or the payment sandbox)")
    # Fernet tokens (payments.crypto), never plain text.
    credentials_encrypted = models.TextField(blank=True)
    webhook_secret_encrypted = models.TextField(blank=True)
    previous_webhook_secret_encrypted = models.TextField(blank=True)
    # Until then the previous secret still verifies webhooks (rotation overlap).
    previous_secret_valid_until = models.DateTimeField(null=True, blank=True)
    rotation_overlap_hours = models.PositiveIntegerField(default=24)
    currency = models.CharField(max_length=3, default="EUR")
    # Minor units; orders outside the limits are not offered this provider.
    min_order = models.BigIntegerField(null=True, blank=True)
    max_order = models.BigIntegerField(null=True, blank=True)
    merchant_categories = models.JSONField(
        default=list, blank=True, help_text="Categories it may serve; empty: all"
    )
    # The last periodic health check (reading the provider's configuration endpoint).
    health_ok = models.BooleanField(null=True, blank=True)
    health_checked_at = models.DateTimeField(null=True, blank=True)
    health_detail = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["provider"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(min_order__isnull=True)
                | models.Q(max_order__isnull=True)
                | models.Q(min_order__lte=models.F("max_order")),
                name="provider_account_limits_ordered",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_provider_display()} ({self.mode})"


class PaymentTransaction(models.Model):
    """One order's payment at one provider."""

    # Not indexed alone: nothing lists an account's transactions (there are a handful of
    # accounts), and lookups by provider reference lead with it in the unique index below.
    account = models.ForeignKey(
        ProviderAccount, on_delete=models.PROTECT, related_name="transactions", db_index=False
    )
    # What it pays for, e.g. ("oms.order", "42").
    reference_type = models.CharField(max_length=100)
    reference_id = models.CharField(max_length=64)
    # The provider's id for it (Klarna order id, Afterpay payment id, card charge id).
    provider_reference = models.CharField(max_length=128, null=True, blank=True)
    currency = models.CharField(max_length=3)
    # What we asked for, minor units.
    amount = models.BigIntegerField()
    # When the provider lets the authorization lapse (Klarna: expires_at, Afterpay: 13
    # days); what is not captured by then cannot be.
    authorization_expires_at = models.DateTimeField(null=True, blank=True)
    # Set when a provider reports something that does not match ours.
    flagged = models.BooleanField(default=False)  # indexed where set (Meta)
    flag_reason = models.TextField(blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["account", "provider_reference"],
                condition=models.Q(provider_reference__isnull=False),
                name="payment_provider_reference_unique",
            ),
            models.CheckConstraint(
                condition=models.Q(amount__gt=0), name="payment_amount_positive"
            ),
        ]
        indexes = [
            models.Index(fields=["reference_type", "reference_id"]),
            # Only the few flagged rows: an index on every row's flag cost each write.
            models.Index(
                fields=["flagged"], name="payment_flagged", condition=models.Q(flagged=True)
            ),
        ]

    def __str__(self) -> str:
        paid_for = f"{self.reference_type}:{self.reference_id}"
        return f"{self.account.provider} payment #{self.pk} for {paid_for}"


class EventKind(models.TextChoices):
    AUTHORIZATION = "authorization", "Authorization"
    CAPTURE = "capture", "Capture"
    REFUND = "refund", "Refund"
    CANCEL = "cancel", "Cancel / void of what is not captured"


class Outcome(models.TextChoices):
    REQUESTED = "requested", "Asked of the provider"
    SUCCEEDED = "succeeded", "Confirmed by the provider"
    FAILED = "failed", "Refused or failed at the provider"


class Source(models.TextChoices):
    API = "api", "Our call to the provider"
    WEBHOOK = "webhook", "The provider's notification"
    RECONCILE = "reconcile", "Read back from the provider"


class PaymentEvent(models.Model):
    """One fact about a transaction. Append-only (enforced by the database)."""

    # Indexed by the unique (transaction, idempotency_key) below.
    transaction = models.ForeignKey(
        PaymentTransaction, on_delete=models.PROTECT, related_name="events", db_index=False
    )
    kind = models.CharField(max_length=20, choices=EventKind.choices)
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    # Minor units of ``currency``.
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    # The key sent to the provider with the request, or "webhook:<event id>".
    idempotency_key = models.CharField(max_length=255)
    source = models.CharField(max_length=10, choices=Source.choices)
    detail = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["transaction", "idempotency_key"], name="payment_event_unique_key"
            ),
            models.CheckConstraint(
                condition=models.Q(amount__gte=0), name="payment_event_amount_non_negative"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.outcome} {self.amount} {self.currency}"


class WebhookEvent(models.Model):
    """A provider notification as received: stored once, processed after commit."""

    class Status(models.TextChoices):
        PENDING = "pending", "Stored, waiting to be processed"
        PROCESSED = "processed", "Applied to its transaction"
        FAILED = "failed", "Could not be applied (see last_error)"

    provider = models.CharField(max_length=20, choices=Provider.choices)
    event_id = models.CharField(max_length=128)
    event_type = models.CharField(max_length=60)
    payload = models.JSONField()
    received_at = models.DateTimeField()
    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    last_error = models.TextField(blank=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    # A failed dispute notification whose cause may pass (its payment not recorded yet, the
    # provider not answering) is tried again then (``payments.retry_dispute_events``).
    next_attempt_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-received_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "event_id"], name="webhook_event_unique_per_provider"
            ),
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(next_attempt_at__isnull=False),
                name="webhook_event_retry_due",
            )
        ]

    def __str__(self) -> str:
        return f"{self.provider} {self.event_type} {self.event_id} ({self.status})"


class PartnerApplicationStatus(models.TextChoices):
    SUBMITTING = "submitting", "Recorded; the partner's answer has not come in yet"
    REFERRED = "referred", "The partner decides later and notifies by signed webhook"
    UNKNOWN = "unknown", "No answer in time: read back from the partner, never resubmitted"
    APPROVED = "approved", "Approved by the partner, which funds the merchant"
    DECLINED = "declined", "Declined by the partner (see reasons)"
    FAILED = "failed", "Never reached the partner; nothing was decided"
    CANCELLED = "cancelled", "Cancelled at the partner at our request; nothing stands funded"


class PartnerCancelState(models.TextChoices):
    NONE = "", "Not asked to cancel"
    REQUESTED = "requested", "Cancellation asked for; the partner has not confirmed it yet"
    CANCELLED = "cancelled", "The partner cancelled it"
    REFUSED = "refused", "The partner refused to cancel it (see flag_reason)"
    NOT_NEEDED = "not_needed", "Nothing to cancel: the partner declined or never received it"


class PartnerApplication(models.Model):
    """One credit application sent to a lending partner, and the partner's decision.

    The row is written before the call, under the idempotency key the partner sees, so an
    answer that never came is looked up by that key, never sent again as a new one. A
    decision is recorded once: a later report for a decided application changes nothing
    and is kept in ``ignored_reports`` (one that contradicts it flags the row).
    """

    OPEN = (
        PartnerApplicationStatus.SUBMITTING,
        PartnerApplicationStatus.REFERRED,
        PartnerApplicationStatus.UNKNOWN,
    )

    account = models.ForeignKey(
        ProviderAccount, on_delete=models.PROTECT, related_name="partner_applications"
    )
    # What it finances, e.g. ("bnpl.credit_application", "42").
    reference_type = models.CharField(max_length=100)
    reference_id = models.CharField(max_length=64)
    idempotency_key = models.CharField(max_length=255, unique=True)
    # The partner's id for the application, once it has answered.
    partner_reference = models.CharField(max_length=128, null=True, blank=True)
    status = models.CharField(
        max_length=12,
        choices=PartnerApplicationStatus.choices,
        default=PartnerApplicationStatus.SUBMITTING,
        db_index=True,
    )
    currency = models.CharField(max_length=3)
    # Minor units: the amount asked to be financed.
    amount = models.BigIntegerField()
    # The body sent to the partner (its wire shape), kept for audit and read-back.
    request = models.JSONField(default=dict)
    # [{"code": ..., "message": ...}] as the partner states them.
    reasons = models.JSONField(default=list, blank=True)
    # The plan terms as the partner states them (the adapter's PartnerTerms.to_json()).
    terms = models.JSONField(default=dict, blank=True)
    # Minor units the partner pays the merchant on approval.
    funded_amount = models.BigIntegerField(null=True, blank=True)
    partner_status = models.CharField(max_length=40, blank=True)
    # Reports that arrived after the decision: [{"source", "decision", "at", ...}].
    ignored_reports = models.JSONField(default=list, blank=True)
    flagged = models.BooleanField(default=False, db_index=True)
    flag_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(db_index=True)
    updated_at = models.DateTimeField()
    decided_at = models.DateTimeField(null=True, blank=True)
    # When the owner's decision handler last ran through; a final decision without it is
    # handed up again by the reconciler (handlers are idempotent).
    owner_notified_at = models.DateTimeField(null=True, blank=True)
    # Cancelling it at the partner (what it financed is gone): ``payments.lending.
    # partner_application_cancel``; a request still ``requested`` is sent again by the
    # reconciler under the same key.
    cancel_state = models.CharField(
        max_length=12,
        choices=PartnerCancelState.choices,
        default=PartnerCancelState.NONE,
        blank=True,
        db_index=True,
    )
    cancel_reason = models.TextField(blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    # For finance: the partner funded the merchant for a loan that has no plan (the
    # application ended first) and refused to cancel it. No ledger entry stands for it.
    funded_without_plan = models.BooleanField(default=False, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["account", "partner_reference"],
                condition=models.Q(partner_reference__isnull=False),
                name="partner_application_reference_unique",
            ),
            models.CheckConstraint(
                condition=models.Q(amount__gt=0), name="partner_application_amount_positive"
            ),
            models.CheckConstraint(
                condition=models.Q(funded_amount__isnull=True) | models.Q(funded_amount__gte=0),
                name="partner_application_funded_non_negative",
            ),
        ]
        indexes = [models.Index(fields=["reference_type", "reference_id"])]

    def __str__(self) -> str:
        return f"Partner application #{self.pk} for {self.reference_type}:{self.reference_id}"


class SavedPaymentMethod(models.Model):
    """A customer's card as the processor tokenized it: the token and what a person reads.

    A token belongs to one customer and is accepted only from that customer (checkout, a
    plan's card, extra payments and payoffs). Removal is soft (``removed_at``): the row
    stays, so plans and applications that used the token still name whose card it was.
    No card number is ever stored; ``fingerprint`` is the processor's opaque id of the card
    (the same card saved twice has one fingerprint, whatever its tokens).
    """

    customer = models.ForeignKey(
        Customer, on_delete=models.PROTECT, related_name="payment_methods", db_index=False
    )
    processor = models.CharField(max_length=20, choices=Provider.choices, default=Provider.CARD)
    # The processor's token (``pm_…``): what is sent with a charge; plans store it.
    token = models.CharField(max_length=64)
    brand = models.CharField(max_length=20, blank=True)
    last4 = models.CharField(max_length=4, blank=True)
    exp_month = models.PositiveSmallIntegerField(null=True, blank=True)
    exp_year = models.PositiveSmallIntegerField(null=True, blank=True)
    fingerprint = models.CharField(max_length=64, blank=True, db_index=True)
    created_at = models.DateTimeField()
    # Set when the customer removes it; never accepted again, kept for history.
    removed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["processor", "token"], name="saved_payment_method_token_unique"
            ),
            models.CheckConstraint(
                condition=models.Q(exp_month__isnull=True)
                | models.Q(exp_month__gte=1, exp_month__lte=12),
                name="saved_payment_method_exp_month_valid",
            ),
        ]
        indexes = [models.Index(fields=["customer", "created_at"])]

    def __str__(self) -> str:
        card = f"{self.brand or 'card'} ending {self.last4 or '?'}"
        return f"{card} ({self.token}){' removed' if self.removed_at else ''}"

    @property
    def active(self) -> bool:
        return self.removed_at is None
