from rest_framework import serializers

from core.api.fields import MoneyField
from wallet.models import Wallet


class WalletOutputSerializer(serializers.ModelSerializer):
    balance = MoneyField(allow_zero=True)

    class Meta:
        model = Wallet
        fields = ("id", "currency", "balance", "created_at")
        read_only_fields = fields


class WalletListOutputSerializer(serializers.Serializer):
    wallets = WalletOutputSerializer(many=True)
