from django.conf import settings
from django.db import models

from core import clock


class Tier(models.TextChoices):
    STANDARD = "standard", "Standard"
    SILVER = "silver", "Silver"
    GOLD = "gold", "Gold"
    PLATINUM = "platinum", "Platinum"


class KycStatus(models.TextChoices):
    PENDING = "pending", "Submitted or not yet reviewed"
    APPROVED = "approved", "Identity verified"
    REJECTED = "rejected", "Verification refused"


class Feature(models.TextChoices):
    """Product features an admin can put behind an approved KYC."""

    WALLET_USAGE = "wallet_usage", "Paying with the wallet"
    WITHDRAWAL = "withdrawal", "Withdrawing wallet balance"
    WALLET_BNPL = "wallet_bnpl", "Wallet Buy Now Pay Later"
    INSTALLMENTS = "installments", "Installment plans"


class Customer(models.Model):
    """The buyer behind a Django user. Roles are the user's Django groups."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="customer"
    )
    tier = models.CharField(max_length=20, choices=Tier.choices, default=Tier.STANDARD)
    kyc_status = models.CharField(
        max_length=20, choices=KycStatus.choices, default=KycStatus.PENDING, db_index=True
    )
    kyc_updated_at = models.DateTimeField(null=True, blank=True)
    phone = models.CharField(max_length=32, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.user.email or self.user.username

    @property
    def is_kyc_approved(self) -> bool:
        return self.kyc_status == KycStatus.APPROVED


class KycEvent(models.Model):
    """One decision in a customer's KYC history. Never updated."""

    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="kyc_events")
    status = models.CharField(max_length=20, choices=KycStatus.choices)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    decided_at = models.DateTimeField()
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["-decided_at", "-id"]

    def __str__(self) -> str:
        decided = clock.business_time(self.decided_at)
        return f"{self.customer} → {self.status} at {decided:%Y-%m-%d %H:%M}"


class KycRequirement(models.Model):
    """A feature that only KYC-approved customers may use (one row per feature)."""

    feature = models.CharField(max_length=32, choices=Feature.choices, unique=True)
    created_at = models.DateTimeField()

    def __str__(self) -> str:
        return self.get_feature_display()
