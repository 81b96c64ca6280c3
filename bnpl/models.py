"""Installment plans: products and promotions, credit applications, plans, installments and
the scheduled debit requests that collections executes.

Amounts are minor units of the row's currency (``BigIntegerField``); rates are ``Decimal``
percentages. A plan snapshots the priced terms of its product (``Plan.terms``), so editing a
product never changes a running plan.
"""

from decimal import Decimal

from django.conf import settings
from django.db import models
from django_fsm import FSMField, transition

from bnpl.pricing import (
    APR_ABOVE_CEILING,
    APR_NO_FINITE_RATE,
    APR_RATE,
    Terms,
    apply_promotion,
)
from core.money import Money

# --- products and promotions ----------------------------------------------------------


class Frequency(models.TextChoices):
    WEEKLY = "weekly", "Weekly"
    BIWEEKLY = "biweekly", "Every 2 weeks"
    MONTHLY = "monthly", "Monthly"


class DownPayment(models.TextChoices):
    NONE = "none", "None: every installment is debited later"
    FIRST_INSTALLMENT = "first_installment", "The first installment is charged at checkout"
    PERCENT = "percent", "A percentage of the order is charged at checkout"


class InterestMethod(models.TextChoices):
    ZERO = "zero", "No interest (0%)"
    FLAT = "flat", "Flat: the annual rate on the original principal for the whole term"
    DECLINING = "declining", "Declining balance: level payments amortizing at the APR"


class Decider(models.TextChoices):
    INTERNAL = "internal", "The internal credit decision"
    PARTNER = "partner", "A lending partner decides and funds"


class RefundAllocation(models.TextChoices):
    LAST_FIRST = "last_first", "Reduce the last installments first"
    RESPREAD = "respread", "Spread the reduction over the remaining installments"


class PlanProduct(models.Model):
    """An installment product a customer can choose at checkout."""

    code = models.SlugField(max_length=40, unique=True)
    name = models.CharField(max_length=100)
    active = models.BooleanField(default=True)
    currency = models.CharField(max_length=3, default="EUR")
    installment_count = models.PositiveSmallIntegerField(
        help_text="Installments after any percentage down payment"
    )
    frequency = models.CharField(
        max_length=10, choices=Frequency.choices, default=Frequency.MONTHLY
    )
    down_payment = models.CharField(
        max_length=20, choices=DownPayment.choices, default=DownPayment.NONE
    )
    down_payment_percent = models.DecimalField(
        max_digits=5, decimal_places=2, default=Decimal(0), help_text="With “percent” only"
    )
    interest_method = models.CharField(
        max_length=10, choices=InterestMethod.choices, default=InterestMethod.ZERO
    )
    apr = models.DecimalField(
        max_digits=6, decimal_places=3, default=Decimal(0), help_text="Percent per year"
    )
    # Minor units.
    origination_fee_flat = models.BigIntegerField(default=0)
    origination_fee_percent = models.DecimalField(max_digits=5, decimal_places=2, default=0)
    installment_fee = models.BigIntegerField(default=0, help_text="Minor units, per installment")
    min_amount = models.BigIntegerField(default=0, help_text="Minor units")
    max_amount = models.BigIntegerField(default=1_000_000, help_text="Minor units")
    # Late fees (charged by collections within the caps).
    late_fee_amount = models.BigIntegerField(
        default=0, help_text="Minor units per late installment"
    )
    late_fee_grace_days = models.PositiveSmallIntegerField(default=3)
    late_fee_cap_installment = models.BigIntegerField(
        default=0, help_text="Minor units; 0 means no cap of its own"
    )
    late_fee_cap_plan_percent = models.DecimalField(
        max_digits=5, decimal_places=2, default=Decimal(25), help_text="Of the order amount"
    )
    refund_allocation = models.CharField(
        max_length=12, choices=RefundAllocation.choices, default=RefundAllocation.LAST_FIRST
    )
    # Rescheduling policy.
    reschedule_max_days = models.PositiveSmallIntegerField(default=14)
    reschedule_max_count = models.PositiveSmallIntegerField(default=2)
    reschedule_fee = models.BigIntegerField(default=0, help_text="Minor units")
    cash_flow_aware = models.BooleanField(
        default=False, help_text="Suggest due dates aligned with the customer's income days"
    )
    decider = models.CharField(max_length=10, choices=Decider.choices, default=Decider.INTERNAL)
    partner_account = models.ForeignKey(
        "payments.ProviderAccount",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The lending partner, when it decides",
    )
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["code"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(installment_count__gte=1, installment_count__lte=120),
                name="product_installment_count_range",
            ),
            models.CheckConstraint(
                condition=models.Q(min_amount__gte=0, max_amount__gte=models.F("min_amount")),
                name="product_amount_limits_ordered",
            ),
            models.CheckConstraint(
                condition=models.Q(
                    apr__gte=0,
                    down_payment_percent__gte=0,
                    down_payment_percent__lt=100,
                    origination_fee_percent__gte=0,
                    late_fee_cap_plan_percent__gte=0,
                ),
                name="product_rates_non_negative",
            ),
            models.CheckConstraint(
                condition=models.Q(
                    origination_fee_flat__gte=0,
                    installment_fee__gte=0,
                    late_fee_amount__gte=0,
                    late_fee_cap_installment__gte=0,
                    reschedule_fee__gte=0,
                ),
                name="product_fees_non_negative",
            ),
            models.CheckConstraint(
                condition=~models.Q(decider="partner") | models.Q(partner_account__isnull=False),
                name="product_partner_decider_has_account",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def terms(self, promotion: "Promotion | None" = None) -> Terms:
        """The product's priced terms, with ``promotion`` applied when it changes them.

        Raises ``ValueError`` for inconsistent terms (the admin form refuses those).
        """
        terms = Terms(
            currency=self.currency,
            installment_count=self.installment_count,
            frequency=str(self.frequency),
            down_payment=str(self.down_payment),
            down_payment_percent=Decimal(self.down_payment_percent),
            interest_method=str(self.interest_method),
            apr=Decimal(self.apr),
            origination_fee_flat=self.origination_fee_flat,
            origination_fee_percent=Decimal(self.origination_fee_percent),
            installment_fee=self.installment_fee,
            late_fee_amount=self.late_fee_amount,
            late_fee_grace_days=self.late_fee_grace_days,
            late_fee_cap_installment=self.late_fee_cap_installment,
            late_fee_cap_plan_percent=Decimal(self.late_fee_cap_plan_percent),
            refund_allocation=str(self.refund_allocation),
            reschedule_max_days=self.reschedule_max_days,
            reschedule_max_count=self.reschedule_max_count,
            reschedule_fee=self.reschedule_fee,
        )
        if promotion is None:
            return terms
        promoted = apply_promotion(
            terms, kind=promotion.kind, code=promotion.code, apr=promotion.apr
        )
        return promoted or terms


class PromotionKind(models.TextChoices):
    ZERO_INTEREST = "zero_interest", "Zero interest"
    REDUCED_APR = "reduced_apr", "Reduced APR"
    FEE_WAIVED = "fee_waived", "Fees waived"


class Promotion(models.Model):
    """A better offer for some merchant categories and/or customer tiers, for a while."""

    code = models.SlugField(max_length=40, unique=True)
    name = models.CharField(max_length=100)
    active = models.BooleanField(default=True)
    kind = models.CharField(max_length=20, choices=PromotionKind.choices)
    apr = models.DecimalField(
        max_digits=6, decimal_places=3, default=Decimal(0), help_text="With “reduced APR”"
    )
    merchant_categories = models.JSONField(default=list, blank=True, help_text="Empty: any")
    customer_tiers = models.JSONField(default=list, blank=True, help_text="Empty: any")
    products = models.ManyToManyField(PlanProduct, blank=True, related_name="promotions")
    valid_from = models.DateTimeField()
    valid_until = models.DateTimeField(null=True, blank=True)
    priority = models.PositiveSmallIntegerField(default=100, help_text="Lower wins")
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["priority", "code"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(apr__gte=0), name="promotion_apr_non_negative"
            ),
            models.CheckConstraint(
                condition=models.Q(valid_until__isnull=True)
                | models.Q(valid_until__gt=models.F("valid_from")),
                name="promotion_window_ordered",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class BorrowerProfile(models.Model):
    """A customer's standing for installment plans: limit, opt-ins, blocks."""

    customer = models.OneToOneField(
        "customers.Customer", on_delete=models.CASCADE, related_name="borrower_profile"
    )
    # Minor units; replaces the default exposure limit when set.
    credit_limit_override = models.BigIntegerField(null=True, blank=True)
    # The customer agreed that due dates follow their observed income days.
    income_aligned_dates = models.BooleanField(default=False)
    # Set by collections (a delinquency bucket's action) or staff; new plans are refused.
    blocked_at = models.DateTimeField(null=True, blank=True)
    blocked_reason = models.CharField(max_length=255, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(credit_limit_override__gte=0)
                | models.Q(credit_limit_override__isnull=True),
                name="borrower_limit_non_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"Borrower profile of {self.customer}"


# --- credit applications --------------------------------------------------------------


class ApplicationStatus(models.TextChoices):
    PENDING = "pending", "Waiting for the credit decision"
    REVIEW = "review", "Waiting for a staff review"
    REFERRED = "referred", "Waiting for the lending partner's decision"
    APPROVED = "approved", "Approved; the plan exists"
    DECLINED = "declined", "Declined"
    EXPIRED = "expired", "No decision in time; the order was released"
    CANCELLED = "cancelled", "Withdrawn (the order was cancelled)"


class CreditApplication(models.Model):
    """The credit decision behind one order paid in installments (dual authorization)."""

    customer = models.ForeignKey(
        "customers.Customer", on_delete=models.PROTECT, related_name="credit_applications"
    )
    product = models.ForeignKey(PlanProduct, on_delete=models.PROTECT, related_name="+")
    promotion = models.ForeignKey(
        Promotion, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    # What it finances, e.g. ("oms.order", "42").
    reference_type = models.CharField(max_length=100)
    reference_id = models.CharField(max_length=64)
    currency = models.CharField(max_length=3)
    amount = models.BigIntegerField(help_text="Minor units: the order total")
    # The priced terms offered (pricing.Terms.to_json()).
    terms = models.JSONField()
    # The saved card token debited for the installments.
    payment_method = models.CharField(max_length=64)
    # What is financed, for a lending partner and the reviewer: [{"sku", "name", "quantity",
    # "unit_price", "total", "merchant_category"}], amounts in minor units.
    lines = models.JSONField(default=list, blank=True)
    status = FSMField(
        default=ApplicationStatus.PENDING,
        choices=ApplicationStatus.choices,
        protected=True,
        db_index=True,
    )
    decided_by = models.CharField(max_length=10, choices=Decider.choices, blank=True)
    # Explainable outcome: [{"code": ..., "message": ...}], the score and its inputs.
    reasons = models.JSONField(default=list, blank=True)
    score = models.IntegerField(null=True, blank=True)
    explanation = models.JSONField(default=dict, blank=True)
    partner_reference = models.CharField(max_length=128, blank=True)
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(db_index=True)
    # Past this the hold is released and the order cancelled.
    expires_at = models.DateTimeField()
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["reference_type", "reference_id"], name="application_one_per_reference"
            ),
            models.CheckConstraint(
                condition=models.Q(amount__gt=0), name="application_amount_positive"
            ),
        ]
        indexes = [
            models.Index(
                fields=["expires_at"],
                name="application_open_expiry",
                condition=models.Q(status__in=["pending", "review", "referred"]),
            ),
        ]

    def __str__(self) -> str:
        return f"Application #{self.pk} ({self.status})"

    @property
    def amount_money(self) -> Money:
        return Money(self.amount, self.currency)

    OPEN = (ApplicationStatus.PENDING, ApplicationStatus.REVIEW, ApplicationStatus.REFERRED)

    @transition(field=status, source=ApplicationStatus.PENDING, target=ApplicationStatus.REVIEW)
    def refer_to_staff(self) -> None:
        pass

    @transition(field=status, source=ApplicationStatus.PENDING, target=ApplicationStatus.REFERRED)
    def refer_to_partner(self, *, partner_reference: str = "") -> None:
        self.partner_reference = partner_reference or self.partner_reference

    @transition(field=status, source=OPEN, target=ApplicationStatus.APPROVED)
    def approve(self, *, at, decided_by: str) -> None:
        self.decided_at = at
        self.decided_by = decided_by

    @transition(field=status, source=OPEN, target=ApplicationStatus.DECLINED)
    def decline(self, *, at, decided_by: str) -> None:
        self.decided_at = at
        self.decided_by = decided_by

    @transition(field=status, source=OPEN, target=ApplicationStatus.EXPIRED)
    def expire(self, *, at) -> None:
        self.decided_at = at

    @transition(field=status, source=OPEN, target=ApplicationStatus.CANCELLED)
    def withdraw(self, *, at) -> None:
        self.decided_at = at


# --- plans, installments, debit requests ----------------------------------------------


class PlanStatus(models.TextChoices):
    ACTIVE = "active", "Running: installments are being collected"
    COMPLETED = "completed", "Everything paid"
    CANCELLED = "cancelled", "Cancelled before the first debit, or refunded in full"
    WRITTEN_OFF = "written_off", "Remaining balance written off"


class AprStatus(models.TextChoices):
    """What a plan's ``apr`` is (``bnpl.pricing``, "APR shown")."""

    RATE = APR_RATE, "The effective annual rate of the cost of credit (0: the plan costs nothing)"
    ABOVE_CEILING = APR_ABOVE_CEILING, "Above 9,999.99 % a year: no rate is shown"
    NO_FINITE_RATE = (
        APR_NO_FINITE_RATE,
        "No finite rate: the checkout payment covers the amount, the rest is cost without credit",
    )


class Plan(models.Model):
    """An order converted into installments. ``terms`` is the snapshot it is serviced by."""

    application = models.OneToOneField(
        CreditApplication, on_delete=models.PROTECT, related_name="plan"
    )
    # Indexed by (customer, -created_at) below, which serves lookups by customer too.
    customer = models.ForeignKey(
        "customers.Customer", on_delete=models.PROTECT, related_name="plans", db_index=False
    )
    product = models.ForeignKey(PlanProduct, on_delete=models.PROTECT, related_name="plans")
    promotion = models.ForeignKey(
        Promotion, null=True, blank=True, on_delete=models.PROTECT, related_name="plans"
    )
    reference_type = models.CharField(max_length=100)
    reference_id = models.CharField(max_length=64)
    currency = models.CharField(max_length=3)
    # Minor units: the order total, of which ``down_payment`` was charged at checkout.
    amount = models.BigIntegerField()
    down_payment = models.BigIntegerField(default=0)
    terms = models.JSONField()
    # Percent a year; null when no finite rate can be shown (``apr_status`` says why).
    apr = models.DecimalField(max_digits=8, decimal_places=4, null=True, default=Decimal(0))
    apr_status = models.CharField(max_length=16, choices=AprStatus.choices, default=AprStatus.RATE)
    status = FSMField(default=PlanStatus.ACTIVE, choices=PlanStatus.choices, protected=True)
    # The saved card token the debit requests charge.
    payment_method = models.CharField(max_length=64)
    funded_by = models.CharField(max_length=10, choices=Decider.choices, default=Decider.INTERNAL)
    partner_reference = models.CharField(max_length=128, blank=True)
    start_date = models.DateField()
    reschedule_count = models.PositiveSmallIntegerField(default=0)
    # Collections: debits wait while a dispute is open on the order.
    debits_paused = models.BooleanField(default=False)
    paused_reason = models.CharField(max_length=255, blank=True)
    # Collections: the worst days past due of an unpaid installment, and its bucket.
    days_past_due = models.PositiveIntegerField(default=0)
    delinquency_bucket = models.CharField(max_length=20, blank=True)
    write_off_flagged_at = models.DateTimeField(null=True, blank=True)
    written_off_amount = models.BigIntegerField(default=0, help_text="Minor units of principal")
    recovered_amount = models.BigIntegerField(default=0, help_text="Minor units after write-off")
    # Merchant refunds of the financed order (bnpl.servicing.plan_refund), never above amount.
    refunded_amount = models.BigIntegerField(default=0, help_text="Minor units refunded")
    created_at = models.DateTimeField(db_index=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    written_off_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["reference_type", "reference_id"], name="plan_one_per_reference"
            ),
            models.CheckConstraint(condition=models.Q(amount__gt=0), name="plan_amount_positive"),
            models.CheckConstraint(
                condition=models.Q(down_payment__gte=0, down_payment__lt=models.F("amount")),
                name="plan_down_payment_within_amount",
            ),
            models.CheckConstraint(
                condition=models.Q(written_off_amount__gte=0, recovered_amount__gte=0),
                name="plan_write_off_non_negative",
            ),
            models.CheckConstraint(
                condition=models.Q(refunded_amount__gte=0, refunded_amount__lte=models.F("amount")),
                name="plan_refunded_within_amount",
            ),
            models.CheckConstraint(
                condition=models.Q(apr_status=AprStatus.RATE, apr__isnull=False)
                | (~models.Q(apr_status=AprStatus.RATE) & models.Q(apr__isnull=True)),
                name="plan_apr_null_only_without_rate",
            ),
            models.CheckConstraint(
                condition=models.Q(recovered_amount__lte=models.F("written_off_amount")),
                name="plan_recovered_within_written_off",
            ),
        ]
        # Plain indexes (not db_index, which adds a LIKE index per text column on
        # PostgreSQL): every plan write maintains each of them. None on ``status``: every
        # query by status also names the customer, or scans all plans anyway, and without
        # it completing a plan changes no indexed column (an update in place, see
        # migration 0004).
        indexes = [
            models.Index(fields=["customer", "-created_at"]),
            models.Index(fields=["delinquency_bucket"], name="plan_delinquency_bucket"),
        ]

    def __str__(self) -> str:
        return f"Plan #{self.pk}"

    @property
    def amount_money(self) -> Money:
        return Money(self.amount, self.currency)

    @transition(field=status, source=PlanStatus.ACTIVE, target=PlanStatus.COMPLETED)
    def complete(self, *, at) -> None:
        self.completed_at = at

    @transition(field=status, source=PlanStatus.COMPLETED, target=PlanStatus.ACTIVE)
    def reopen(self) -> None:
        """An installment is owed again (a lost dispute took its payment back)."""
        self.completed_at = None

    @transition(field=status, source=PlanStatus.ACTIVE, target=PlanStatus.CANCELLED)
    def cancel(self, *, at) -> None:
        self.cancelled_at = at

    @transition(field=status, source=PlanStatus.ACTIVE, target=PlanStatus.WRITTEN_OFF)
    def write_off(self, *, at, amount: int) -> None:
        self.written_off_at = at
        self.written_off_amount = amount


class InstallmentStatus(models.TextChoices):
    SCHEDULED = "scheduled", "Not yet due, or due today"
    OVERDUE = "overdue", "Past due date, not fully paid"
    PAID = "paid", "Fully paid"
    CANCELLED = "cancelled", "Nothing left to pay: reduced by a refund or the plan cancelled"
    WRITTEN_OFF = "written_off", "Written off with the plan"


class Installment(models.Model):
    """One payment of a plan. Number 0 is a percentage down payment.

    Amounts are minor units. What is owed is principal + interest + fee + late_fee; the
    ``paid_*`` counters say how much of each part has been paid (fees first, then interest,
    then principal), so the ledger can credit each part to its own account.
    """

    # Indexed by the unique (plan, number) below.
    plan = models.ForeignKey(
        Plan, on_delete=models.PROTECT, related_name="installments", db_index=False
    )
    number = models.PositiveSmallIntegerField()
    due_date = models.DateField()
    original_due_date = models.DateField()
    principal = models.BigIntegerField()
    interest = models.BigIntegerField(default=0)
    fee = models.BigIntegerField(default=0)
    late_fee = models.BigIntegerField(default=0)
    paid_principal = models.BigIntegerField(default=0)
    paid_interest = models.BigIntegerField(default=0)
    paid_fee = models.BigIntegerField(default=0)
    paid_late_fee = models.BigIntegerField(default=0)
    status = models.CharField(
        max_length=12, choices=InstallmentStatus.choices, default=InstallmentStatus.SCHEDULED
    )
    overdue_since = models.DateField(null=True, blank=True)
    paid_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["plan", "number"]
        constraints = [
            models.UniqueConstraint(fields=["plan", "number"], name="installment_unique_number"),
            models.CheckConstraint(
                condition=models.Q(principal__gte=0, interest__gte=0, fee__gte=0, late_fee__gte=0),
                name="installment_parts_non_negative",
            ),
            models.CheckConstraint(
                condition=models.Q(
                    paid_principal__gte=0,
                    paid_interest__gte=0,
                    paid_fee__gte=0,
                    paid_late_fee__gte=0,
                    paid_principal__lte=models.F("principal"),
                    paid_interest__lte=models.F("interest"),
                    paid_fee__lte=models.F("fee"),
                    paid_late_fee__lte=models.F("late_fee"),
                ),
                name="installment_paid_within_parts",
            ),
        ]
        indexes = [
            models.Index(
                fields=["status", "due_date"],
                name="installment_open_due",
                condition=models.Q(status__in=["scheduled", "overdue"]),
            ),
        ]

    def __str__(self) -> str:
        return f"Installment {self.number} of plan {self.plan_id}"

    @property
    def total(self) -> int:
        return self.principal + self.interest + self.fee + self.late_fee

    @property
    def paid(self) -> int:
        return self.paid_principal + self.paid_interest + self.paid_fee + self.paid_late_fee

    @property
    def outstanding(self) -> int:
        return self.total - self.paid


class DebitRequestStatus(models.TextChoices):
    SCHEDULED = "scheduled", "Waiting for its date (or its next retry)"
    ACTION_REQUIRED = "action_required", "Hard decline: waiting for a new payment method"
    EXHAUSTED = "exhausted", "Soft retries used up: delinquency follows up (or a new method)"
    SETTLED = "settled", "The installment is paid"
    CANCELLED = "cancelled", "Nothing to collect any more"


class DebitRequest(models.Model):
    """The standing order to charge one installment off-session; collections executes it.

    Its amount is the installment's outstanding amount when an attempt is made (an extra
    payment or a refund may have reduced it). ``next_attempt_at`` is the due date's start in
    the business time zone, or the next retry.
    """

    installment = models.OneToOneField(
        Installment, on_delete=models.PROTECT, related_name="debit_request"
    )
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="debit_requests")
    payment_method = models.CharField(max_length=64)
    # Attempt n is sent to the gateway with f"{idempotency_key}:{n}".
    idempotency_key = models.CharField(max_length=100)  # unique: see Meta
    status = models.CharField(
        max_length=16, choices=DebitRequestStatus.choices, default=DebitRequestStatus.SCHEDULED
    )
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    attempts_made = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["next_attempt_at", "id"]
        # A constraint, not unique=True, which adds a LIKE index on PostgreSQL.
        constraints = [
            models.UniqueConstraint(fields=["idempotency_key"], name="debit_request_unique_key")
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at", "id"],
                name="debit_request_due",
                condition=models.Q(status="scheduled"),
            ),
        ]

    def __str__(self) -> str:
        return f"Debit request for {self.installment}"


class PlanRecovery(models.Model):
    """Money received for a plan after its write-off (bank transfer, cash, a late charge).

    Each reduces the write-off expense; their sum is ``Plan.recovered_amount``, never more
    than ``Plan.written_off_amount``. ``key`` makes recording the same receipt twice a no-op.
    """

    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="recoveries")
    key = models.CharField(max_length=120, unique=True)
    currency = models.CharField(max_length=3)
    amount = models.BigIntegerField(help_text="Minor units")
    # The system account code the money arrived on, e.g. "cash_clearing:EUR".
    source = models.CharField(max_length=64)
    note = models.CharField(max_length=255, blank=True)
    recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(amount__gt=0), name="plan_recovery_amount_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"Recovery of {self.amount} on plan {self.plan_id}"
