from rest_framework import serializers

from core.api.fields import (
    POSITIVE_AMOUNT_PATTERN,
    CurrencyField,
    MoneyField,
    StrictBooleanField,
    StrictCharField,
    StrictRegexField,
)
from wallet.models import DebtStatus, Wallet, Withdrawal


class WalletOutputSerializer(serializers.ModelSerializer):
    balance = MoneyField(allow_zero=True)

    class Meta:
        model = Wallet
        fields = ("id", "currency", "balance", "created_at")
        read_only_fields = fields


class WalletListOutputSerializer(serializers.Serializer):
    wallets = WalletOutputSerializer(many=True)
    auto_deduct = serializers.BooleanField(help_text="Credits repay outstanding BNPL debts first")


class DebtOutputSerializer(serializers.Serializer):
    """A debt as of today: interest is computed for the day it is read, not stored."""

    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=DebtStatus.choices)
    resolution = StrictCharField(help_text="repaid or written_off once closed")
    principal = MoneyField()
    principal_outstanding = MoneyField(allow_zero=True)
    interest_due = MoneyField(allow_zero=True)
    total_due = MoneyField(allow_zero=True)
    created_at = serializers.DateTimeField()
    due_date = serializers.DateField()
    overdue_since = serializers.DateField(allow_null=True)
    repaid_at = serializers.DateTimeField(allow_null=True)
    reference_type = StrictCharField()
    reference_id = StrictCharField()


class RepayInputSerializer(serializers.Serializer):
    amount = MoneyField()


class EligibilityQuerySerializer(serializers.Serializer):
    amount = StrictRegexField(
        POSITIVE_AMOUNT_PATTERN,
        max_length=40,
        trim_whitespace=False,
        error_messages={"invalid": "A positive amount such as 120.00."},
        help_text="Cart total, more than zero, with at most the currency's decimals, e.g. 120.00",
    )
    currency = CurrencyField(required=False, help_text="Default EUR")


class ReasonSerializer(serializers.Serializer):
    code = StrictCharField()
    message = StrictCharField()


class EligibilityOutputSerializer(serializers.Serializer):
    eligible = serializers.BooleanField(
        help_text="Would a wallet checkout of this amount go through"
    )
    needs_bnpl = serializers.BooleanField(help_text="The balance alone does not cover it")
    balance = MoneyField(allow_zero=True)
    shortfall = MoneyField(allow_zero=True)
    existing_debt = MoneyField(allow_zero=True)
    max_debt = MoneyField(allow_zero=True)
    reasons = ReasonSerializer(
        many=True,
        help_text="Every gate checkout would refuse at: customers.kyc_required (the wallet "
        "needs an approved KYC), then each wallet BNPL reason when the balance falls short",
    )
    options = serializers.ListField(
        child=serializers.ChoiceField(choices=["top_up", "wallet_card"]),
        help_text="What a customer refused for the balance can do instead: top up the "
        "wallet, or split pay (payment_method wallet_card, the rest by card; offered while "
        "a card processor takes the amount; the query has no cart, so this is the answer "
        "for a cart of no merchant category: checkout also requires the card account to "
        "serve the cart's categories)",
    )


class WithdrawalInputSerializer(serializers.Serializer):
    amount = MoneyField()
    iban = StrictRegexField(r"^[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}$", help_text="IBAN without spaces")


class WithdrawalOutputSerializer(serializers.ModelSerializer):
    amount = MoneyField(source="money")

    class Meta:
        model = Withdrawal
        fields = ("id", "amount", "created_at")
        read_only_fields = fields


class AutoDeductInputSerializer(serializers.Serializer):
    enabled = StrictBooleanField()


class DebtListQuerySerializer(serializers.Serializer):
    open = serializers.ChoiceField(
        choices=["1", "0", "true", "false"], required=False, help_text="Only open debts"
    )

    def validate(self, attrs: dict) -> dict:
        # An empty ?open= would be dropped as "not given"; it is not one of the choices.
        if self.initial_data.get("open") == "":
            raise serializers.ValidationError({"open": ["Must be one of 1, 0, true, false."]})
        return attrs
