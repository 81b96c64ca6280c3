"""Double-entry book of record.

Sign convention: a posting's ``amount`` is in minor units, positive for a debit and
negative for a credit, so every journal entry sums to zero per currency. An account's
cached ``balance`` is kept on its normal side: sum(debits − credits) for a debit-normal
account (assets, expenses), sum(credits − debits) for a credit-normal one (what is owed to
customers and merchants, income). A funded wallet therefore has a positive balance.
"""

from django.db import models


class Side(models.TextChoices):
    DEBIT = "debit", "Debit-normal (assets, expenses)"
    CREDIT = "credit", "Credit-normal (liabilities, income)"


class Purpose(models.TextChoices):
    CUSTOMER_WALLET = "customer_wallet", "Customer wallet: stored value owed to the customer"
    CUSTOMER_BNPL_RECEIVABLE = "customer_bnpl_receivable", "Customer BNPL receivable"
    MERCHANT = "merchant", "Merchant / HQ: sales owed to the retailer"
    STORE = "store", "Store share of sales"
    PROVIDER_CLEARING = "provider_clearing", "BNPL provider clearing"
    GATEWAY_CLEARING = "gateway_clearing", "Card gateway clearing"
    CASH_CLEARING = "cash_clearing", "Money received outside gateways (bank transfer, cash desk)"
    INTEREST_INCOME = "interest_income", "Interest income"
    FEE_INCOME = "fee_income", "Fee income"
    WRITE_OFF_EXPENSE = "write_off_expense", "Write-off expense"
    GOODWILL_EXPENSE = "goodwill_expense", "Goodwill credits granted to customers"


NORMAL_SIDE: dict[str, str] = {
    Purpose.CUSTOMER_WALLET: Side.CREDIT,
    Purpose.CUSTOMER_BNPL_RECEIVABLE: Side.DEBIT,
    Purpose.MERCHANT: Side.CREDIT,
    Purpose.STORE: Side.CREDIT,
    Purpose.PROVIDER_CLEARING: Side.DEBIT,
    Purpose.GATEWAY_CLEARING: Side.DEBIT,
    Purpose.CASH_CLEARING: Side.DEBIT,
    Purpose.INTEREST_INCOME: Side.CREDIT,
    Purpose.FEE_INCOME: Side.CREDIT,
    Purpose.WRITE_OFF_EXPENSE: Side.DEBIT,
    Purpose.GOODWILL_EXPENSE: Side.DEBIT,
}


# The sign rule of every purpose: an account's balance, on its normal side, never goes
# below zero, except for the purposes listed here, with the reason they may.
EITHER_SIGN: dict[str, str] = {
    Purpose.CUSTOMER_BNPL_RECEIVABLE: (
        "a payment beyond what an installment owes is credited to the installments "
        "receivable, which then owes the customer (wallet BNPL's own receivable is checked "
        "against its debts by wallet)"
    ),
    Purpose.PROVIDER_CLEARING: "a refund after the provider settled is owed back to it",
    Purpose.GATEWAY_CLEARING: "a refund after the gateway settled is owed back to it",
    Purpose.CASH_CLEARING: "withdrawals pay out goodwill and refunds, not only top-ups",
}


def may_go_negative(purpose: str) -> bool:
    """Whether an account of ``purpose`` may hold a balance below zero (``EITHER_SIGN``)."""
    return purpose in EITHER_SIGN


class Account(models.Model):
    # "wallet:12:EUR" for a customer's, "merchant:EUR" for a system account.
    code = models.CharField(max_length=100, unique=True)
    purpose = models.CharField(max_length=40, choices=Purpose.choices)
    currency = models.CharField(max_length=3)
    customer = models.ForeignKey(
        "customers.Customer",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="ledger_accounts",
    )
    normal_side = models.CharField(max_length=6, choices=Side.choices)
    # Refuse, in the database, any posting that would take the balance below zero.
    non_negative = models.BooleanField(default=False)
    # Minor units, on the normal side; always equals the sum of postings (ledger_verify).
    balance = models.BigIntegerField(default=0)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(non_negative=False) | models.Q(balance__gte=0),
                name="ledger_account_non_negative_balance",
            ),
            models.CheckConstraint(
                condition=models.Q(normal_side__in=["debit", "credit"]),
                name="ledger_account_normal_side_valid",
            ),
        ]

    def __str__(self) -> str:
        return self.code

    @property
    def sign(self) -> int:
        """+1 if a debit raises the balance, −1 if a credit does."""
        return 1 if self.normal_side == Side.DEBIT else -1


class JournalEntry(models.Model):
    """One balanced money movement. Append-only: a correction is a reversing entry."""

    created_at = models.DateTimeField(db_index=True)
    # What happened, dotted: "wallet.top_up", "oms.order_payment", "oms.order_refund".
    kind = models.CharField(max_length=60)  # indexed in Meta (no LIKE index)
    memo = models.CharField(max_length=255, blank=True)
    # The domain row that caused it: ("oms.order", "42").
    reference_type = models.CharField(max_length=100, blank=True)
    reference_id = models.CharField(max_length=64, blank=True)
    reverses = models.OneToOneField(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="reversed_by"
    )

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "journal entries"
        indexes = [
            models.Index(fields=["reference_type", "reference_id"]),
            models.Index(fields=["kind"], name="journal_entry_kind"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.kind} {self.reference_type}:{self.reference_id}"


class Posting(models.Model):
    entry = models.ForeignKey(JournalEntry, on_delete=models.PROTECT, related_name="postings")
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="postings")
    # Minor units: positive = debit, negative = credit. Never updated, only reversed.
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=~models.Q(amount=0), name="ledger_posting_non_zero"),
        ]

    def __str__(self) -> str:
        side = "Dr" if self.amount > 0 else "Cr"
        return f"{side} {self.account.code} {abs(self.amount)} {self.currency}"
