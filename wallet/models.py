from datetime import date

from django.conf import settings
from django.db import models

from core import clock
from core.money import Money


class Wallet(models.Model):
    """Stored value of one customer in one currency. The balance is its ledger account's."""

    customer = models.ForeignKey(
        "customers.Customer", on_delete=models.PROTECT, related_name="wallets"
    )
    currency = models.CharField(max_length=3)
    account = models.OneToOneField(
        "ledger.Account", on_delete=models.PROTECT, related_name="wallet"
    )
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["customer", "currency"], name="wallet_one_per_customer_currency"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.customer} {self.currency}"

    @property
    def balance(self) -> Money:
        return Money(self.account.balance, self.currency)


class Direction(models.TextChoices):
    CREDIT = "credit", "Money into the wallet"
    DEBIT = "debit", "Money out of the wallet"


class TransactionKind(models.TextChoices):
    TOP_UP = "top_up", "Top-up (money received)"
    GOODWILL = "goodwill", "Goodwill credit"
    CASHBACK = "cashback", "Cashback"
    REFUND = "refund", "Refund of an order"
    PAYMENT = "payment", "Payment of an order"
    BNPL_REPAYMENT = "bnpl_repayment", "Repayment of a wallet BNPL debt"
    WITHDRAWAL = "withdrawal", "Withdrawal to a bank account"


class WalletTransaction(models.Model):
    """One line of a wallet's activity; the money itself moves in its journal entry."""

    wallet = models.ForeignKey(Wallet, on_delete=models.PROTECT, related_name="transactions")
    kind = models.CharField(max_length=20, choices=TransactionKind.choices)
    direction = models.CharField(max_length=6, choices=Direction.choices)
    # Minor units, always positive; ``direction`` says which way.
    amount = models.BigIntegerField()
    # Wallet balance right after this transaction, minor units.
    balance_after = models.BigIntegerField()
    journal_entry = models.OneToOneField(
        "ledger.JournalEntry", on_delete=models.PROTECT, related_name="wallet_transaction"
    )
    # What caused it, e.g. ("oms.order", "42").
    reference_type = models.CharField(max_length=100, blank=True)
    reference_id = models.CharField(max_length=64, blank=True)
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    note = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(amount__gt=0), name="wallet_transaction_amount_positive"
            ),
            models.CheckConstraint(
                condition=models.Q(balance_after__gte=0),
                name="wallet_transaction_balance_non_negative",
            ),
            models.UniqueConstraint(
                fields=["wallet", "idempotency_key"],
                condition=models.Q(idempotency_key__isnull=False),
                name="wallet_transaction_unique_idempotency_key",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.direction} {Money(self.amount, self.wallet.currency)}"

    @property
    def money(self) -> Money:
        return Money(self.amount, self.wallet.currency)

    @property
    def balance_after_money(self) -> Money:
        return Money(self.balance_after, self.wallet.currency)


# --- Wallet BNPL ----------------------------------------------------------------------


class EligibilityMode(models.TextChoices):
    WHITELIST = "whitelist", "Listed users only"
    ROLE = "role", "Any user in a listed role (group)"
    ALL_KYC_APPROVED = "all_kyc_approved", "Any KYC-approved customer"


class InterestType(models.TextChoices):
    NONE = "none", "No interest"
    FIXED = "fixed", "A flat amount"
    PERCENT = "percent", "A percentage of the principal per 30 days late"


class FixedRecurrence(models.TextChoices):
    ONCE = "once", "Once, when the debt passes its grace days"
    WEEKLY = "weekly", "For each started week past the grace days"


class BnplSettings(models.Model):
    """The one settings record of wallet BNPL (primary key 1). Every change is audited."""

    enabled = models.BooleanField(default=False)
    currency = models.CharField(
        max_length=3, default="EUR", help_text="Wallet BNPL is offered on orders in this currency"
    )
    eligibility_mode = models.CharField(
        max_length=20, choices=EligibilityMode.choices, default=EligibilityMode.WHITELIST
    )
    eligible_roles = models.ManyToManyField(
        "auth.Group", blank=True, related_name="+", help_text="Roles admitted in “role” mode"
    )
    # Minor units of ``currency``.
    max_debt_per_user = models.BigIntegerField(
        default=100_000, help_text="Minor units: existing debt + new shortfall may not exceed this"
    )
    min_order = models.BigIntegerField(
        default=10_000, help_text="Minor units: smaller carts skip BNPL"
    )
    repayment_days = models.PositiveIntegerField(default=30)
    interest_type = models.CharField(
        max_length=10, choices=InterestType.choices, default=InterestType.NONE
    )
    # The flat amount in major units (fixed), or the percentage (percent).
    interest_amount = models.DecimalField(max_digits=12, decimal_places=4, default=0)
    fixed_recurrence = models.CharField(
        max_length=10, choices=FixedRecurrence.choices, default=FixedRecurrence.WEEKLY
    )
    grace_days = models.PositiveIntegerField(default=7)
    block_withdrawal_while_in_debt = models.BooleanField(default=True)
    updated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "BNPL settings"
        verbose_name_plural = "BNPL settings"
        constraints = [
            models.CheckConstraint(condition=models.Q(pk=1), name="bnpl_settings_singleton"),
            models.CheckConstraint(
                condition=models.Q(max_debt_per_user__gte=0), name="bnpl_settings_cap_non_negative"
            ),
            models.CheckConstraint(
                condition=models.Q(min_order__gte=0), name="bnpl_settings_min_order_non_negative"
            ),
            models.CheckConstraint(
                condition=models.Q(interest_amount__gte=0),
                name="bnpl_settings_interest_non_negative",
            ),
        ]

    def __str__(self) -> str:
        return "Wallet BNPL settings"

    @property
    def max_debt_money(self) -> Money:
        return Money(self.max_debt_per_user, self.currency)

    @property
    def min_order_money(self) -> Money:
        return Money(self.min_order, self.currency)


class BnplWhitelistEntry(models.Model):
    """A user admitted to wallet BNPL in whitelist mode."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="bnpl_whitelist_entry"
    )
    added_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    added_at = models.DateTimeField()

    class Meta:
        verbose_name = "BNPL whitelisted user"
        ordering = ["-added_at"]

    def __str__(self) -> str:
        return str(self.user)


class BnplCustomerProfile(models.Model):
    """A customer's own wallet BNPL switches."""

    customer = models.OneToOneField(
        "customers.Customer", on_delete=models.CASCADE, related_name="bnpl_profile"
    )
    # Off: credits raise the balance and debts wait for manual repayment.
    auto_deduct = models.BooleanField(default=True)
    # Minor units; replaces the settings' cap for this customer when set.
    max_debt_override = models.BigIntegerField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(max_debt_override__gte=0)
                | models.Q(max_debt_override__isnull=True),
                name="bnpl_profile_override_non_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"BNPL profile of {self.customer}"


class DebtStatus(models.TextChoices):
    OUTSTANDING = "outstanding", "Owed, not yet due"
    OVERDUE = "overdue", "Past due date, not yet paid"
    REPAID = "repaid", "Nothing left to pay (repaid or written off)"


class DebtResolution(models.TextChoices):
    REPAID = "repaid", "Repaid"
    WRITTEN_OFF = "written_off", "Written off"
    CANCELLED = "cancelled", "Settled by the refund of a cancelled purchase"


class WalletDebt(models.Model):
    """The shortfall of one wallet BNPL checkout, owed by the customer.

    Amounts are minor units of the wallet's currency. Interest is not stored in advance:
    it is computed for the day it is looked at, and crystallized into ``interest_charged``
    (and the ledger) when a repayment or write-off happens.
    """

    wallet = models.ForeignKey(Wallet, on_delete=models.PROTECT, related_name="debts")
    principal = models.BigIntegerField()
    principal_repaid = models.BigIntegerField(default=0)
    interest_charged = models.BigIntegerField(default=0)
    interest_paid = models.BigIntegerField(default=0)
    written_off = models.BigIntegerField(default=0)
    # Of ``written_off``, what later refunds of the purchase gave back to the expense.
    recovered = models.BigIntegerField(default=0)
    # Of ``principal_repaid``, what the merchant's refunds of the purchase settled; the
    # rest of the principal is what interest runs on (``interest_base``).
    principal_refunded = models.BigIntegerField(default=0)
    # Interest that merchant refunds settled: it leaves the interest base with them (the
    # returned goods' whole value stops bearing interest).
    refund_paid_interest = models.BigIntegerField(default=0)
    # Percent interest: what accrued up to the last change of the base (booked then), and
    # the day from which the current base accrues; null while the base never changed.
    interest_before_base = models.BigIntegerField(default=0)
    interest_base_since = models.DateField(null=True, blank=True)
    status = models.CharField(
        max_length=12, choices=DebtStatus.choices, default=DebtStatus.OUTSTANDING
    )
    resolution = models.CharField(max_length=12, choices=DebtResolution.choices, blank=True)
    # What it financed, e.g. ("oms.order", "42").
    reference_type = models.CharField(max_length=100, blank=True)
    reference_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField()
    due_date = models.DateField(db_index=True)
    overdue_since = models.DateField(null=True, blank=True)
    repaid_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(fields=["wallet", "status", "created_at"]),
            models.Index(
                fields=["status", "due_date"],
                name="wallet_debt_open_due",
                condition=models.Q(status="outstanding"),
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(principal__gt=0), name="debt_principal_positive"
            ),
            models.CheckConstraint(
                condition=models.Q(
                    principal_repaid__gte=0,
                    interest_paid__gte=0,
                    written_off__gte=0,
                    interest_charged__gte=0,
                ),
                name="debt_parts_non_negative",
            ),
            models.CheckConstraint(
                condition=models.Q(interest_paid__lte=models.F("interest_charged")),
                name="debt_interest_paid_within_charged",
            ),
            models.CheckConstraint(
                condition=models.Q(principal_repaid__lte=models.F("principal")),
                name="debt_repaid_within_principal",
            ),
            models.CheckConstraint(
                condition=models.Q(
                    written_off__lte=models.F("principal")
                    + models.F("interest_charged")
                    - models.F("principal_repaid")
                    - models.F("interest_paid")
                ),
                name="debt_written_off_within_balance",
            ),
            models.CheckConstraint(
                condition=~models.Q(status="repaid") | ~models.Q(resolution=""),
                name="debt_closed_has_resolution",
            ),
            models.CheckConstraint(
                condition=models.Q(recovered__gte=0, recovered__lte=models.F("written_off")),
                name="debt_recovered_within_written_off",
            ),
            models.CheckConstraint(
                condition=models.Q(
                    principal_refunded__gte=0, principal_refunded__lte=models.F("principal_repaid")
                ),
                name="debt_refunded_within_repaid",
            ),
        ]

    def __str__(self) -> str:
        return f"Debt #{self.pk} {Money(self.principal, self.wallet.currency)}"

    @property
    def currency(self) -> str:
        return self.wallet.currency

    @property
    def taken_on(self) -> date:
        """The business date the debt was taken (``created_at`` in the business time zone)."""
        return self.created_at.astimezone(clock.business_tz()).date()

    @property
    def principal_outstanding(self) -> int:
        if self.status == DebtStatus.REPAID:
            return 0
        return self.principal - self.principal_repaid

    @property
    def interest_base(self) -> int:
        """The principal of the purchase less what merchant refunds settled, minor units."""
        return max(0, self.principal - self.principal_refunded - self.refund_paid_interest)

    @property
    def interest_unpaid_charged(self) -> int:
        """Crystallized interest not yet paid, minor units."""
        if self.status == DebtStatus.REPAID:
            return 0
        return self.interest_charged - self.interest_paid

    @property
    def is_open(self) -> bool:
        return self.status != DebtStatus.REPAID


class Withdrawal(models.Model):
    """Money leaving the wallet to the customer's bank account."""

    wallet = models.ForeignKey(Wallet, on_delete=models.PROTECT, related_name="withdrawals")
    amount = models.BigIntegerField()
    transaction = models.OneToOneField(
        WalletTransaction, on_delete=models.PROTECT, related_name="withdrawal"
    )
    iban = models.CharField(max_length=34)
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(amount__gt=0), name="withdrawal_amount_positive"
            )
        ]

    def __str__(self) -> str:
        return f"Withdrawal #{self.pk}"

    @property
    def money(self) -> Money:
        return Money(self.amount, self.wallet.currency)


class DebtDailySnapshot(models.Model):
    """Totals of wallet BNPL debt at the end of a business day, for the dashboard chart."""

    business_date = models.DateField(unique=True)
    currency = models.CharField(max_length=3)
    # Minor units.
    outstanding = models.BigIntegerField()
    overdue = models.BigIntegerField()
    customers_in_debt = models.PositiveIntegerField()

    class Meta:
        ordering = ["business_date"]

    def __str__(self) -> str:
        return f"{self.business_date}: {self.outstanding} outstanding"
