from django.conf import settings
from django.db import models

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
